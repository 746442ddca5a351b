"""The seed's history on a real database: legacy rows survive and get an owner."""

import uuid

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE_USERS = [("jobs", "0001_initial")]


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


def latest():
    executor = MigrationExecutor(connection)
    return executor.loader.graph.leaf_nodes("jobs")


@pytest.fixture
def legacy_table(transactional_db):
    """video_generation_jobs as it was before users existed, with rows in it."""
    old_apps = migrate(BEFORE_USERS)
    yield old_apps
    migrate(latest())


def test_legacy_rows_get_the_placeholder_owner_and_user_id_becomes_required(legacy_table):
    OldJob = legacy_table.get_model("jobs", "VideoGenerationJob")
    legacy_ids = [uuid.uuid4() for _ in range(3)]
    for index, legacy_id in enumerate(legacy_ids):
        OldJob.objects.create(id=legacy_id, prompt=f"legacy prompt {index}", fps=8, status="completed")

    new_apps = migrate(latest())

    Job = new_apps.get_model("jobs", "VideoGenerationJob")
    rows = {job.id: job for job in Job.objects.all()}
    assert set(rows) == set(legacy_ids)
    for index, legacy_id in enumerate(legacy_ids):
        row = rows[legacy_id]
        assert row.user_id == "anonymous"
        assert row.prompt == f"legacy prompt {index}"
        assert (row.fps, row.status) == (8, "completed")
        # What the original actually ran with; the seed was never recorded.
        assert (row.model_name, row.num_frames, row.num_inference_steps) == ("cogvideox-2b", 36, 50)
        assert row.seed is None
    user_id = Job._meta.get_field("user_id")
    assert (user_id.null, user_id.max_length) == (False, 100)


def test_the_placeholder_owner_is_configurable(legacy_table, settings):
    OldJob = legacy_table.get_model("jobs", "VideoGenerationJob")
    OldJob.objects.create(prompt="from before users", status="pending")
    settings.VIDEOGEN_LEGACY_USER_ID = "legacy-import"

    new_apps = migrate(latest())

    Job = new_apps.get_model("jobs", "VideoGenerationJob")
    assert list(Job.objects.values_list("user_id", flat=True)) == ["legacy-import"]


def test_rows_that_already_have_an_owner_keep_it(transactional_db):
    apps = migrate([("jobs", "0002_add_user_id")])
    Job = apps.get_model("jobs", "VideoGenerationJob")
    Job.objects.create(prompt="owned", status="completed", user_id="user123")
    Job.objects.create(prompt="orphan", status="completed", user_id=None)

    new_apps = migrate(latest())

    owners = dict(new_apps.get_model("jobs", "VideoGenerationJob").objects.values_list("prompt", "user_id"))
    assert owners == {"owned": "user123", "orphan": "anonymous"}


def test_the_column_is_not_null_in_the_database(transactional_db):
    with connection.cursor() as cursor:
        columns = connection.introspection.get_table_description(cursor, "video_generation_jobs")
    user_id = next(column for column in columns if column.name == "user_id")
    assert not user_id.null_ok


def test_prompt_search_can_use_a_trigram_index_on_postgresql(make_job):
    if connection.vendor != "postgresql":
        pytest.skip("a PostgreSQL index")
    from jobs.models import VideoGenerationJob

    make_job(prompt="a red fox in the snow")
    query = VideoGenerationJob.objects.filter(prompt__icontains="fox").order_by().query
    sql, params = query.sql_with_params()
    with connection.cursor() as cursor:
        # Few rows: the planner would rightly scan; forbid that to see the index is usable.
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"EXPLAIN {sql}", params)
        plan = "\n".join(row[0] for row in cursor.fetchall())

    assert "job_prompt_trgm_idx" in plan, plan
