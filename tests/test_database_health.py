"""
videogen.postgresql: Django's health check before a persistent connection's
first query in a request, skipped only for a connection used within the
last second. An idle connection the server dropped is still replaced before
the request's query runs.
"""

import time

import psycopg
import pytest
from django.db import connection, connections

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def postgresql():
    if connection.vendor != "postgresql":
        pytest.skip("the PostgreSQL backend")
    assert connection.health_check_enabled


def _terminate(pid: int) -> None:
    params = connection.get_connection_params()
    with psycopg.connect(**{k: v for k, v in params.items() if k in ("host", "port", "user", "password", "dbname")},
                         autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [pid])


def _new_request() -> None:
    # What Django does when a request starts (the request_started signal).
    connection.close_if_unusable_or_obsolete()


def test_an_idle_connection_the_server_dropped_is_replaced_before_the_query(postgresql):
    connection.ensure_connection()
    dropped = connection.connection.info.backend_pid
    _terminate(dropped)
    connection.used_at = time.monotonic() - 60

    _new_request()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]

    assert pid != dropped


def test_a_connection_used_a_moment_ago_is_not_checked_again(postgresql, monkeypatch):
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    checks = []
    backend = type(connections["default"])
    original = backend.is_usable
    monkeypatch.setattr(backend, "is_usable", lambda self: checks.append(1) or original(self))

    _new_request()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    connection.used_at = time.monotonic() - 60
    _new_request()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")

    assert checks == [1], "checked once: after the idle minute, not after the busy moment"
