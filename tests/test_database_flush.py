"""
Emptying the test database between transactional tests survives a deadlock
with a transaction of a process a module keeps running (a qcluster, a
gunicorn): tests/support/database.py, through the teardown its session
fixture installs. CI's Redis leg once failed a test at its
teardown this way.
"""

import re
import threading

import psycopg
import pytest
from django.core.management.color import no_style
from django.core.management.commands.flush import Command as FlushCommand
from django.core.management.sql import sql_flush
from django.db import connection
from django.test import TransactionTestCase

from jobs.models import VideoGenerationJob
from tests.support.processes import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def other_connection(**options) -> psycopg.Connection:
    params = connection.get_connection_params()
    keep = ("host", "port", "user", "password", "dbname")
    return psycopg.connect(**{k: v for k, v in params.items() if k in keep}, **options)


def test_emptying_the_database_is_tried_again_when_it_deadlocks_with_another_transaction(make_job, monkeypatch):
    if connection.vendor != "postgresql":
        pytest.skip("the PostgreSQL backend")
    make_job(user_id="alice")
    tables = re.findall(r'"[^"]+"', sql_flush(no_style(), connection)[0])  # in the order TRUNCATE locks them
    attempts, failures = [], []
    flush = FlushCommand.handle

    def counted(command, **options):
        attempts.append(1)
        return flush(command, **options)

    monkeypatch.setattr(FlushCommand, "handle", counted)

    def empty():
        try:
            # The teardown every transactional test ends with, as the session's fixture installed it.
            TransactionTestCase()._fixture_teardown()
        except Exception as error:  # noqa: BLE001 (reported to the test's thread)
            failures.append(error)
        finally:
            connection.close()

    with other_connection() as other, other_connection(autocommit=True) as observer:
        # This transaction detects no deadlock itself, so the server aborts the TRUNCATE, as it did in CI.
        other.execute("SET deadlock_timeout = '30s'")
        other.execute(f"SELECT 1 FROM {tables[-1]} LIMIT 1")  # the last table TRUNCATE locks
        emptying = threading.Thread(target=empty)
        emptying.start()

        def truncate_waiting():
            return observer.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND query LIKE 'TRUNCATE%%' AND wait_event_type = 'Lock'"
            ).fetchone()

        (pid,) = wait_until(truncate_waiting, "the TRUNCATE waiting for a lock", timeout=30)
        held = observer.execute(
            "SELECT relname FROM pg_locks JOIN pg_class ON pg_class.oid = relation AND relkind = 'r' "
            "WHERE pid = %s AND granted AND locktype = 'relation' AND mode = 'AccessExclusiveLock' LIMIT 1",
            [pid],
        ).fetchone()
        assert held, "TRUNCATE holds a table while it waits for the last one"
        other.execute(f'SELECT 1 FROM "{held[0]}" LIMIT 1')  # the deadlock; TRUNCATE is aborted
        other.commit()
        emptying.join(timeout=60)

    assert not failures, failures
    assert len(attempts) == 2, "the deadlocked flush, then the one that emptied the database"
    assert not VideoGenerationJob.objects.exists()
