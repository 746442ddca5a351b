"""
jobs/models/compiled.py runs SQL the ORM compiled once, reading the compiler's
internals (its placeholders, select list and converters). These pin that it
is exactly what this Django version compiles for the same queries, so an
upgrade that changes the compiler fails here rather than in a status poll.
"""

import django
import pytest
from django.db import connection
from django.db.models.sql import InsertQuery

from jobs.models import job as job_models
from jobs.models import VideoGenerationJob

# Re-read jobs/models/compiled.py against the new compiler before adding a version here.
CHECKED_DJANGO_VERSIONS = {(5, 2)}


def test_the_django_version_is_one_the_compiled_sql_was_checked_against():
    assert django.VERSION[:2] in CHECKED_DJANGO_VERSIONS, (
        f"Django {django.get_version()}: check jobs/models/compiled.py's use of the SQL compiler, then add it here"
    )


def compiled_as_run(compiled, **values) -> tuple[str, list]:
    """The SQL and parameters CompiledQuery.first() sends for these values."""
    sql, slots, _, _ = compiled.compiled(connection.alias)
    fields = compiled._fields
    params = [
        fields[slot].get_db_prep_value(values[slot], connection) if isinstance(slot, str) else slot[1] for slot in slots
    ]
    return sql, params


def django_compiles(queryset) -> tuple[str, list]:
    sql, params = queryset.query.get_compiler(using=connection.alias).as_sql()
    return sql, list(params)


@pytest.mark.parametrize("user_id", ["alice", None], ids=["one user's", "unfiltered"])
def test_a_status_polls_read_is_the_sql_django_compiles_for_it(make_job, user_id):
    job = make_job()
    queryset = VideoGenerationJob.objects.for_user(user_id).filter(pk=job.pk).order_by()

    if user_id is None:
        sent = compiled_as_run(job_models._visible_to_all, job=job.pk)
    else:
        sent = compiled_as_run(job_models._visible_to_user, user=user_id, job=job.pk)

    assert sent == django_compiles(queryset)


def test_a_status_polls_read_loads_the_job_as_the_orm_does(make_job):
    job = make_job(run_info={"device": "cpu"}, webhook_events=["job.completed"])

    read = VideoGenerationJob.objects.visible("alice", job.pk)
    loaded = VideoGenerationJob.objects.get(pk=job.pk)

    fields = [field.attname for field in VideoGenerationJob._meta.concrete_fields]
    assert {name: getattr(read, name) for name in fields} == {name: getattr(loaded, name) for name in fields}


def test_the_active_job_count_is_the_sql_django_compiles_for_it(make_job):
    make_job()
    queryset = (
        VideoGenerationJob.objects.for_user("alice").active().order_by()
        .values("user_id").annotate(jobs=django.db.models.Count("pk")).values_list("jobs")
    )

    assert compiled_as_run(job_models._active_jobs, user="alice") == django_compiles(queryset)
    assert VideoGenerationJob.objects.active_count("alice") == 1


def test_a_submits_insert_is_the_sql_and_parameters_django_compiles_for_it(db):
    job = VideoGenerationJob(user_id="alice", prompt="a cat", model_name="tiny-random", seed=7)
    fields = list(VideoGenerationJob._meta.local_concrete_fields)
    query = InsertQuery(VideoGenerationJob)
    query.insert_values(fields, [job])
    [(django_sql, django_params)] = query.get_compiler(using=connection.alias).as_sql()

    sql, compiled_fields = job_models._job_insert.compiled(connection.alias)
    params = [field.get_db_prep_save(field.pre_save(job, True), connection) for field in compiled_fields]

    assert sql == django_sql
    assert comparable(params) == comparable(django_params)


def comparable(params) -> list:
    # psycopg wraps JSON in a Jsonb adapter, which compares by identity: compare what it holds.
    return [getattr(param, "obj", param) for param in params]
