"""
`make run` serves through gunicorn and WhiteNoise, with its worker: the
whole server as a user starts it, spoken to over real sockets.
"""

import json
import re
import signal
import os

import pytest

from tests.processes import wait_until
from tests.server import make_run

pytestmark = pytest.mark.slow

LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # Killed at the end, not stopped: how Ctrl-C stops it is
    # test_ctrl_c_stops_the_api_and_the_worker_together's, on a server of its
    # own. After a job has run, a gunicorn worker sometimes outlives the
    # group's SIGINT, and gunicorn waits its graceful_timeout (10 s) before
    # killing it: time this cleanup need not spend.
    with make_run(tmp_path_factory.mktemp("make-run"), stop_signal=signal.SIGKILL) as running:
        yield running


def test_it_serves_through_gunicorn_and_health_answers_at_the_root_as_under_the_api(server):
    root, root_body = server.request("GET", "/health")
    api, api_body = server.request("GET", "/api/v1/health")

    assert root.getheader("Server").startswith("gunicorn")
    assert (root.status, root_body) == (api.status, api_body)
    assert json.loads(root_body) == {"status": "healthy", "checks": {"database": "ok", "broker": "ok"}}


def test_the_originals_client_flow_runs_end_to_end_with_a_chunked_submit(server):
    assert json.loads(server.request("GET", "/health")[1])["status"] == "healthy"
    body = json.dumps(
        {"user_id": "user123", "prompt": "A beautiful sunset over mountains", "fps": 8,
         "num_frames": 9, "width": 64, "height": 64, "num_inference_steps": 2}
    ).encode()
    chunks = iter([body[:10], body[10:]])

    submitted, answer = server.request(
        "POST", "/api/v1/generate", body=chunks, encode_chunked=True,
        headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
    )

    assert submitted.status == 202, answer
    job_id = json.loads(answer)["job_id"]

    def finished() -> dict | None:
        job = json.loads(server.request("GET", f"/api/v1/job/{job_id}?user_id=user123")[1])
        return job if job["status"] not in ("pending", "running") else None

    job = wait_until(finished, "the job to finish", timeout=120, details=lambda: server.log[-3000:].decode(errors="replace"))
    assert job["status"] == "completed", job
    videos = json.loads(server.request("GET", "/api/v1/videos?user_id=user123")[1])["videos"]
    assert [video["job_id"] for video in videos] == [job_id]
    assert job_id in [video["job_id"] for video in json.loads(server.request("GET", "/api/v1/videos")[1])["videos"]]
    download, mp4 = server.request("GET", f"/api/v1/download/{job_id}?user_id=user123")
    assert (download.status, mp4[4:8]) == (200, b"ftyp")


def test_a_chunked_body_over_the_limit_is_a_413(server):
    body = json.dumps({"user_id": "u", "prompt": "x" * LIMIT}).encode()

    response, answer = server.request(
        "POST", "/api/v1/generate", body=iter([body[:1000], body[1000:]]), encode_chunked=True,
        headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
    )

    assert response.status == 413
    assert "limit" in json.loads(answer)["detail"]


CONTROL_BYTES = [byte for byte in range(256) if byte < 0x20 or 0x7F <= byte < 0xA0]


@pytest.mark.parametrize("where", ["user-agent", "referer", "path", "query"])
def test_control_bytes_from_a_request_never_reach_the_access_log_raw(server, where):
    before = len(server.log)
    for byte in CONTROL_BYTES:
        value = b"a" + bytes([byte]) + b"b"
        target = b"/api/v1/health"
        headers = b""
        if where == "path":
            target = b"/api/v1/health" + value
        elif where == "query":
            target = b"/api/v1/health?x=" + value
        else:
            headers = where.encode() + b": " + value + b"\r\n"
        answer = server.raw(b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n" + headers + b"Connection: close\r\n\r\n")
        assert answer.split(b" ", 2)[1] in (b"200", b"400", b"404"), answer[:200]

    # gunicorn writes the access lines after answering: wait for one per request.
    wait_until(lambda: server.log[before:].count(b"\n") >= len(CONTROL_BYTES), "the access log", timeout=30)
    logged = server.log[before:]
    assert not re.search(rb"[\x00-\x09\x0b-\x1f\x7f]", logged), logged[-2000:]


@pytest.mark.parametrize(
    "path",
    ["/static/../manage.py", "/static/%2e%2e/manage.py", "/static/..%2fmanage.py", "/static/admin/../../manage.py",
     "/static/%2e%2e%2f%2e%2e%2fetc/passwd", "/static/....//manage.py", "/static/", "/static/..", "/static/%00"],
)
def test_static_paths_that_climb_out_or_name_nothing_are_a_404(server, path):
    response, body = server.request("GET", path)

    assert response.status in (400, 404)
    assert b"import" not in body


def test_the_docs_load_swagger_ui_from_this_server(server):
    response, page = server.request("GET", "/api/v1/docs")

    assert response.status == 200
    assets = re.findall(rb'(?:src|href)="([^"]+)"', page)
    assert assets and all(asset.startswith(b"/static/") for asset in assets), assets
    assert not re.search(rb"https?://", page.replace(b"http://www.w3.org", b""))
    for asset in assets:
        asset_response, content = server.request("GET", asset.decode())
        assert asset_response.status == 200, asset
        assert len(content) > 100
    assert server.request("GET", "/static/admin/css/base.css")[0].status == 200


def test_ctrl_c_stops_the_api_and_the_worker_together(tmp_path):
    with make_run(tmp_path) as server:
        os.killpg(server.process.pid, signal.SIGINT)
        wait_until(lambda: not server.group_alive(), "make run's processes to stop", timeout=45,
                   details=lambda: server.log[-3000:].decode(errors="replace"))
        with pytest.raises(OSError):
            server.request("GET", "/health")
