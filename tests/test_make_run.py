"""
`make run` serves through gunicorn and WhiteNoise, with its worker: the
whole server as a user starts it, spoken to over real sockets.
"""

import io
import json
import re
import signal
import socket

import pytest
from PIL import Image

from jobs.api.middleware import body_limit

from tests.support.processes import wait_until
from tests.support.server import START_TIMEOUT, make_run, start_make_run, stop_group

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # Killed at the end, not stopped: how Ctrl-C stops it is the
    # test_ctrl_c_* tests' business, each on a server of its own.
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
    # A submit's limit is the body limit and two images' worth (make run's defaults, as this process's).
    body = json.dumps({"user_id": "u", "prompt": "x" * body_limit("/api/v1/generate")}).encode()

    response, answer = server.request(
        "POST", "/api/v1/generate", body=iter([body[:1000], body[1000:]]), encode_chunked=True,
        headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
    )

    assert response.status == 413
    assert "limit" in json.loads(answer)["detail"]


def test_an_image_job_from_curl_style_multipart_runs_on_the_default_models(server):
    image = io.BytesIO()
    Image.new("RGB", (96, 64), "orange").save(image, format="PNG")
    boundary = "b0undary"
    fields = {"user_id": "user123", "prompt": "The cat walks away", "num_frames": "9", "num_inference_steps": "2",
              "fps": "8", "width": "64", "height": "64"}
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ) + (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="photo.png"\r\n'
        "Content-Type: image/png\r\n\r\n".encode() + image.getvalue() + f"\r\n--{boundary}--\r\n".encode()
    )

    submitted, answer = server.request(
        "POST", "/api/v1/generate", body=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )

    assert submitted.status == 202, answer
    job = json.loads(answer)
    assert (job["mode"], job["model"]) == ("image-to-video", "tiny-random-i2v")

    def finished() -> dict | None:
        polled = json.loads(server.request("GET", f"/api/v1/job/{job['job_id']}?user_id=user123")[1])
        return polled if polled["status"] not in ("pending", "running") else None

    done = wait_until(finished, "the image job to finish", timeout=120,
                      details=lambda: server.log[-3000:].decode(errors="replace"))
    assert done["status"] == "completed", done
    sent, stored = server.request("GET", f"/api/v1/image/{job['job_id']}?user_id=user123")
    assert (sent.status, sent.getheader("Content-Type"), stored) == (200, "image/png", image.getvalue())


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


# Ctrl-C on `make run`: every process gone within this many seconds
# (bench/make_run_stops.py does it 20 times at each moment).
STOP_SECONDS = 3


def stopped_in_time(server) -> float:
    took = server.stop_seconds(signal.SIGINT)
    assert took <= STOP_SECONDS, f"{took:.1f} s:\n" + server.log[-3000:].decode(errors="replace")
    with pytest.raises(OSError):
        server.request("GET", "/health")
    return took


@pytest.mark.parametrize("moment", ["a qcluster is starting", "health answers"])
def test_ctrl_c_right_after_start_stops_every_process_within_3_s(tmp_path, moment):
    server = start_make_run(tmp_path)
    try:
        if moment == "health answers":
            server.wait_until_up("make run", healthy_only=True)
        else:
            # The other cluster and gunicorn are usually still starting then.
            wait_until(lambda: b"starting." in server.log, "a qcluster to start", timeout=START_TIMEOUT,
                       gone=lambda: server.process.poll() is not None, interval=0.01)

        stopped_in_time(server)
    finally:
        stop_group(server.process, signal.SIGKILL, timeout=5)


def test_ctrl_c_after_a_job_stops_every_process_within_3_s(tmp_path):
    with make_run(tmp_path, stop_signal=signal.SIGKILL) as server:
        assert server.run_tiny_job()["status"] == "completed"

        stopped_in_time(server)


def test_the_event_stream_is_served_on_the_same_port(server):
    body = json.dumps({"user_id": "user123", "prompt": "a red fox", "fps": 8, "num_frames": 9, "width": 64,
                       "height": 64, "num_inference_steps": 2})
    submitted, answer = server.request("POST", "/api/v1/generate", body=body, headers={"Content-Type": "application/json"})
    job_id = json.loads(answer)["job_id"]
    # Read to the end: the stream closes after its terminal event.
    stream = server.raw(f"GET /api/v1/job/{job_id}/events?user_id=user123 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    assert stream.startswith(b"HTTP/1.1 200 OK")
    assert b"content-type: text/event-stream" in stream.lower()
    assert stream.rstrip().split(b"\n\n")[-1].split(b"\n")[1] == b"event: completed"


def test_ctrl_c_with_an_event_stream_open_stops_every_process_within_3_s(tmp_path):
    with make_run(tmp_path, stop_signal=signal.SIGKILL) as server:
        # An open event stream (held by gunicorn's worker's event loop) must not keep it up.
        # Seconds of steps even on a fast box: on SQLite the stream reads the job once a second.
        body = json.dumps({"user_id": "u", "prompt": "a red fox", "num_frames": 49, "width": 128, "height": 128,
                           "num_inference_steps": 200})
        job_id = json.loads(server.request("POST", "/api/v1/generate", body=body,
                                           headers={"Content-Type": "application/json"})[1])["job_id"]
        stream = socket.create_connection(("127.0.0.1", server.port), timeout=180)
        stream.sendall(f"GET /api/v1/job/{job_id}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        # SIGINT once the job runs: a job still loading its model hands back only after its first step.
        received = b""
        while b"event: progress" not in received:
            chunk = stream.recv(65536)
            assert chunk, received[-500:]
            received += chunk
        assert received.startswith(b"HTTP/1.1 200")
        stopped_in_time(server)
