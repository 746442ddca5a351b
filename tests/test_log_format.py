"""
VIDEOGEN_LOG_FORMAT: text lines where no client value can pass for another
job's, and json lines (one object each) from a real gunicorn.
"""

import json
import logging
import uuid
from datetime import timedelta

import pytest

from tests.support.cluster import test_database_url
from tests.support.jobs import FAST_JOB
from tests.support.server import gunicorn
from jobs.services.lifecycle import job_delete
from jobs.services.retention import expire_outputs
from videogen.logformat import JsonFormatter, TextFormatter, quoted


def test_a_user_id_cannot_make_a_text_line_match_another_jobs_grep(api, make_job, caplog, django_capture_on_commit_callbacks):
    other = make_job(user_id="bob")
    hostile = f'x job={other.id} "user_id=bob'

    with caplog.at_level(logging.INFO, logger="jobs"), django_capture_on_commit_callbacks(execute=True):
        response = api.post("/api/v1/generate", {"user_id": hostile, "prompt": "p", **FAST_JOB}, format="json")
    assert response.status_code == 202

    lines = [TextFormatter().format(record) for record in caplog.records if hasattr(record, "job_id")]
    assert lines
    for line in lines:
        assert f"job={other.id}" not in line
        assert f"job={response.json()['job_id']} user_id=" in line
        # The value is still all there, as a JSON string (with '=' escaped).
        literal = line.split(" user_id=", 1)[1].rsplit(' queued on', 1)[0]
        assert json.loads(literal) == hostile


@pytest.mark.parametrize("value", ["a\nb", "a\rb", "a\x1b[31mb", 'a"b', "a\\b", "a=b", "ünï"])
def test_quoted_values_keep_no_raw_control_character_quote_or_equals_sign(value):
    text = quoted(value)
    assert json.loads(text) == value
    inner = text[1:-1]
    assert not any(char in inner for char in "\n\r\x1b=")
    # Every quote inside is escaped: none is left once escaped backslashes and quotes are taken out.
    assert '"' not in inner.replace("\\\\", "").replace('\\"', "")


def json_lines(caplog, message: str) -> list[dict]:
    return [json.loads(JsonFormatter().format(record)) for record in caplog.records if message in record.getMessage()]


def test_a_deleted_jobs_json_line_carries_its_job_id_and_user_id(make_completed_job, caplog):
    job = make_completed_job(user_id="dora")

    with caplog.at_level(logging.INFO, logger="jobs"):
        assert job_delete(job)

    [line] = json_lines(caplog, "deleted with its files")
    assert (line["job_id"], line["user_id"], line["model"]) == (str(job.id), "dora", job.model_name)


def test_an_expired_jobs_json_line_carries_its_job_id_and_user_id(make_completed_job, caplog, settings):
    settings.VIDEOGEN_RETENTION_DAYS = 1
    job = make_completed_job(user_id="dora")
    later = job.completed_at + timedelta(days=2)

    with caplog.at_level(logging.INFO, logger="jobs"):
        assert expire_outputs(now=later) == [job]

    [line] = json_lines(caplog, "outputs expired")
    assert (line["job_id"], line["user_id"], line["model"]) == (str(job.id), "dora", job.model_name)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_json_format_writes_one_object_per_line_with_the_job_fields_from_a_real_server(tmp_path):
    log_path = tmp_path / "gunicorn.log"
    env = {"DATABASE_URL": test_database_url(), "VIDEOGEN_LOG_FORMAT": "json", "VIDEOGEN_MEDIA_ROOT": str(tmp_path)}
    with gunicorn(log_path, env, workers=2) as server:
        body = json.dumps({"user_id": "x job=1\nfake", "prompt": "p", **FAST_JOB})
        response, answer = server.request("POST", "/api/v1/generate", body=body,
                                          headers={"Content-Type": "application/json"})
        assert response.status == 400  # control characters in user_id are refused
        body = json.dumps({"user_id": "carol", "prompt": "p", **FAST_JOB})
        response, answer = server.request("POST", "/api/v1/generate", body=body,
                                          headers={"Content-Type": "application/json"})
        assert response.status == 202
        job_id = json.loads(answer)["job_id"]
        # Control bytes in the request line (raw: http.client refuses to send them).
        server.raw(f"GET /api/v1/job/{uuid.uuid4()}?x=\x1b[31m%0d%0a HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: a\x1b[2Jb\r\n"
                   "Connection: close\r\n\r\n".encode("latin-1"))
    lines = log_path.read_bytes().decode().splitlines()
    entries = [json.loads(line) for line in lines]
    assert all(set(entry) >= {"time", "level", "logger", "message", "job_id", "user_id", "model", "worker"}
               for entry in entries)
    queued = [entry for entry in entries if entry["job_id"] == job_id]
    assert queued and queued[0]["user_id"] == "carol" and queued[0]["model"] == "tiny-random"
    assert queued[0]["logger"] == "jobs.services.lifecycle" and queued[0]["message"] == "queued on model tiny-random"
    assert any(entry["logger"] == "gunicorn.access" and "/api/v1/generate" in entry["message"] for entry in entries)
    assert not any(char in line for line in lines for char in "\x1b\r")
