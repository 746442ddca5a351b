"""
videogen.postgresql: the hot paths' statements (a status poll's read, a
submit's INSERT) are prepared once per connection, so PostgreSQL parses and
plans them once; VIDEOGEN_DB_PREPARED_STATEMENTS=false turns that off for
poolers that cannot carry them; and a migration that changes a returned
column's type under a running process does not break its polls.
"""

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from django.db import connection

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def postgresql():
    if connection.vendor != "postgresql":
        pytest.skip("the PostgreSQL backend")


def _prepared_on_this_connection() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements WHERE from_sql = false")
        return [statement for (statement,) in cursor.fetchall()]


def _other_connection() -> psycopg.Connection:
    params = connection.get_connection_params()
    keep = ("host", "port", "user", "password", "dbname")
    return psycopg.connect(**{k: v for k, v in params.items() if k in keep}, autocommit=True)


@pytest.fixture
def without_prepared_statements():
    options = connection.settings_dict["OPTIONS"]
    saved = options["prepare_threshold"]
    options["prepare_threshold"] = None
    connection.close()
    yield
    options["prepare_threshold"] = saved
    connection.close()


def test_a_status_poll_is_prepared_once_per_connection(postgresql, api, make_job):
    job = make_job()

    answers = [api.get(f"/api/v1/job/{job.id}?user_id=alice") for _ in range(3)]

    assert [answer.json()["job_id"] for answer in answers] == [str(job.id)] * 3
    polls = [sql for sql in _prepared_on_this_connection() if 'FROM "video_generation_jobs"' in sql]
    assert len(polls) == 1, polls
    assert '"video_generation_jobs"."user_id" = $' in polls[0] and '"video_generation_jobs"."id" = $' in polls[0]


def test_another_users_job_is_still_a_404_through_the_prepared_poll(postgresql, api, make_job):
    job = make_job(user_id="bob")
    api.get(f"/api/v1/job/{job.id}?user_id=bob")

    answer = api.get(f"/api/v1/job/{job.id}?user_id=alice")

    assert answer.status_code == 404


def test_a_submits_insert_is_prepared(postgresql, submit):
    for _ in range(2):
        assert submit({"prompt": "a cat", "user_id": "alice", "model": "tiny-random"}).status_code == 202

    inserts = [sql for sql in _prepared_on_this_connection() if sql.startswith('INSERT INTO "video_generation_jobs"')]
    assert len(inserts) == 1, inserts


def test_with_prepared_statements_off_nothing_is_prepared(postgresql, api, make_job, without_prepared_statements):
    job = make_job()

    answer = api.get(f"/api/v1/job/{job.id}?user_id=alice")

    assert answer.json()["job_id"] == str(job.id)
    assert _prepared_on_this_connection() == []


@pytest.mark.parametrize("value, threshold", [("", "5"), ("true", "5"), ("false", "None")])
def test_settings_read_the_switch_from_the_environment(value, threshold):
    env = {**os.environ, "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/videogen",
           "VIDEOGEN_DB_PREPARED_STATEMENTS": value}
    code = "from videogen import settings; print(settings.DATABASES['default']['OPTIONS']['prepare_threshold'])"
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True)

    assert result.stdout.strip() == threshold


def test_a_column_type_changed_by_another_process_does_not_break_polls(postgresql, api, make_job):
    job = make_job(error_code="")
    assert api.get(f"/api/v1/job/{job.id}?user_id=alice").status_code == 200
    # A migration elsewhere (another host's deploy) widens a column the poll
    # returns: PostgreSQL refuses to run the plan it kept for this connection.
    with _other_connection() as other:
        other.execute('ALTER TABLE "video_generation_jobs" ALTER COLUMN "error_code" TYPE varchar(40)')
        try:
            answers = [api.get(f"/api/v1/job/{job.id}?user_id=alice") for _ in range(2)]
        finally:
            other.execute('ALTER TABLE "video_generation_jobs" ALTER COLUMN "error_code" TYPE varchar(32)')

    assert [answer.status_code for answer in answers] == [200, 200]
    assert answers[1].json()["job_id"] == str(job.id)
