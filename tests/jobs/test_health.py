import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext


def test_it_is_healthy_when_the_database_and_broker_answer(api, db):
    response = api.get("/api/v1/health")

    assert response.status_code == 200
    assert response.json() == {"status": "healthy", "checks": {"database": "ok", "broker": "ok"}}


def test_the_originals_path_at_the_root_answers_the_same(api, db):
    assert api.get("/health").json() == api.get("/api/v1/health").json() == {
        "status": "healthy", "checks": {"database": "ok", "broker": "ok"}
    }


def test_it_is_a_503_naming_what_is_down_but_not_its_address_or_error(api, transactional_db):
    saved = dict(connection.settings_dict)
    connection.close()
    if connection.vendor == "sqlite":
        connection.settings_dict["NAME"] = "/nonexistent-dir/db.sqlite3"
    else:
        connection.settings_dict["PORT"] = "1"
    try:
        response = api.get("/api/v1/health")
        root = api.get("/health")
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(saved)

    assert response.status_code == root.status_code == 503
    body = response.json()
    assert body == root.json() == {"status": "unhealthy", "checks": {"database": "unavailable", "broker": body["checks"]["broker"]}}
    # Hosts, ports and paths in the driver's error are for the log only.
    assert b"nonexistent" not in response.content and b"port" not in response.content.lower()


@pytest.fixture
def orm_broker(settings):
    if settings.REDIS_URL:
        pytest.skip("the ORM broker's check (CI's Redis leg pings Redis)")


def test_with_the_orm_broker_it_names_the_broker_when_its_table_does_not_answer(api, db, orm_broker):
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE django_q_ormq RENAME TO django_q_ormq_away")

    response = api.get("/api/v1/health")

    assert response.status_code == 503
    assert response.json() == {"status": "unhealthy", "checks": {"database": "ok", "broker": "unavailable"}}


def test_with_the_orm_broker_it_reads_one_row_of_the_queue_not_the_whole_backlog(api, db, orm_broker):
    with CaptureQueriesContext(connection) as queries:
        response = api.get("/api/v1/health")

    assert response.status_code == 200
    broker_reads = [q["sql"] for q in queries.captured_queries if "django_q_ormq" in q["sql"]]
    assert len(broker_reads) == 1 and "LIMIT 1" in broker_reads[0] and "COUNT(" not in broker_reads[0].upper(), broker_reads
