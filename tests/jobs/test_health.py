from django.db import connection


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
