"""
The job event stream and `Prefer: wait` through real processes: a gunicorn
served as `make run` serves it (videogen/gunicorn.py, its handoff worker), a
qcluster that runs the jobs, and streams read by an HTTP client (httpx-sse).
The servers and the cluster are started once for the module.
"""

import json
import os
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from django.utils import timezone
from httpx_sse import connect_sse

from jobs.api.events import EPOCH
from jobs.models import ApiKey, VideoGenerationJob
from tests.support.cluster import running_qcluster, test_database_url
from tests.support.jobs import FAST_JOB
from tests.support.processes import descendants, wait_until
from tests.support.server import gunicorn

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

TIMEOUT = 240
TERMINAL = {"completed", "failed", "cancelled"}


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("events") / "media"


@pytest.fixture(scope="module")
def cluster(django_db_setup, media):
    with running_qcluster(media.parent / "qcluster.log", media, VIDEOGEN_PREVIEW_EVERY="1") as running:
        yield running


def server_env(media: Path, **extra: str) -> dict[str, str]:
    return {
        "DATABASE_URL": test_database_url(),
        "VIDEOGEN_MEDIA_ROOT": str(media),
        "VIDEOGEN_MAX_WAIT": "200",
        "VIDEOGEN_PREVIEW_EVERY": "1",
        **extra,
    }


@pytest.fixture(scope="module")
def server(django_db_setup, media):
    with gunicorn(media.parent / "gunicorn.log", server_env(media), workers=2) as running:
        yield running


@pytest.fixture(scope="module")
def keyed_server(django_db_setup, media):
    with gunicorn(media.parent / "keyed.log", server_env(media, VIDEOGEN_AUTH="api_key"), workers=1) as running:
        yield running


def url(server, path: str) -> str:
    return f"http://127.0.0.1:{server.port}{path}"


def submit(server, headers=None, **fields) -> httpx.Response:
    body = {"user_id": "alice", "prompt": "a red fox", **FAST_JOB, **fields}
    return httpx.post(url(server, "/api/v1/generate"), json=body, headers=headers or {}, timeout=TIMEOUT)


def read_stream(server, job_id: str, *, query: str = "?user_id=alice", headers=None) -> list:
    with httpx.Client(timeout=TIMEOUT) as client:
        with connect_sse(client, "GET", url(server, f"/api/v1/job/{job_id}/events{query}"), headers=dict(headers or {})) as source:
            assert source.response.status_code == 200, source.response.read()
            # httpx-sse also yields the keep-alive comment as an empty event (a browser dispatches none).
            return [(int(event.id), event.event, json.loads(event.data)) for event in source.iter_sse() if event.data]


def get_job(server, job_id: str, **headers) -> httpx.Response:
    return httpx.get(url(server, f"/api/v1/job/{job_id}?user_id=alice"), headers=headers, timeout=TIMEOUT)


def test_a_stream_follows_a_job_to_its_terminal_event_then_closes(server, cluster):
    # Enough steps to outlast SQLite's once-a-second read of watched jobs, even on a fast, idle box.
    job_id = submit(server, num_inference_steps=200, num_frames=17, width=128, height=128).json()["job_id"]
    events = read_stream(server, job_id)
    names = [name for _, name, _ in events]
    assert names[0] == "status" and events[0][2]["status"] in ("pending", "running")
    assert names[-1] == "completed" and names.count("completed") == 1
    assert "running" in [data["status"] for _, name, data in events if name == "status"]
    ids = [event_id for event_id, _, _ in events]
    assert ids == sorted(set(ids)), "ids increase, none repeated"
    # The terminal event is the GET /job body, from the same serializer.
    body = get_job(server, job_id).json()
    terminal = events[-1][2]
    assert terminal.keys() == body.keys()
    assert {k: v for k, v in terminal.items() if not k.startswith("estimated")} == {
        k: v for k, v in body.items() if not k.startswith("estimated")
    }
    progress = [data for _, name, data in events if name == "progress"]
    assert progress, "at least one progress event"
    assert all(data["total_steps"] == 200 and 1 <= data["current_step"] <= 200 for data in progress)
    assert set(progress[-1]) >= {"progress", "current_step", "total_steps", "estimated_completion_at"}


def test_a_running_job_has_a_live_preview_in_its_progress_events_and_none_once_it_ends(server, cluster, media):
    # Several seconds of steps even on an idle box: progress events with a preview come while it runs.
    job_id = submit(server, num_inference_steps=200, num_frames=33, width=128, height=128).json()["job_id"]
    served = None
    with httpx.Client(timeout=TIMEOUT) as client:
        with connect_sse(client, "GET", url(server, f"/api/v1/job/{job_id}/events?user_id=alice")) as source:
            for event in source.iter_sse():
                if not event.data:
                    continue
                data = json.loads(event.data)
                if event.event == "progress" and "live_preview_url" in data and served is None:
                    live_url = data["live_preview_url"]
                    served = client.get(live_url)
                    status = get_job(server, job_id).json()
                    foreign = client.get(live_url + "?user_id=bob")
    assert event.event == "completed" and event.data and json.loads(event.data)["live_preview_url"] is None
    assert served is not None, "a progress event carried live_preview_url"
    assert served.status_code == 200 and served.headers["content-type"] == "image/jpeg"
    assert served.content.startswith(b"\xff\xd8") and served.headers["cache-control"] == "no-store"
    assert status["live_preview_url"] == live_url or status["status"] != "running"
    assert foreign.status_code == 404
    # One file per job while it ran, overwritten; removed as the run ends (just after its terminal event).
    wait_until(lambda: not list((media / "live").glob("*")), "the live preview to be removed", timeout=30,
               details=lambda: str(list((media / "live").glob("*"))))
    after = httpx.get(url(server, f"/api/v1/live-preview/{job_id}?user_id=alice"))
    assert after.status_code == 409 and after.headers["content-type"] == "application/json"


def test_a_finished_jobs_stream_is_its_terminal_event_and_nothing_after_it(server, cluster):
    job_id = submit(server, headers={"Prefer": "wait=200"}).json()["job_id"]
    events = read_stream(server, job_id)
    assert [name for _, name, _ in events] == ["completed"]
    # Resuming after the terminal event: 204, which tells an EventSource not to reconnect.
    answer = httpx.get(
        url(server, f"/api/v1/job/{job_id}/events?user_id=alice"), headers={"Last-Event-ID": str(events[0][0])}
    )
    assert answer.status_code == 204


def test_last_event_id_resumes_after_that_event_without_repeating_any(server, cluster):
    job_id = submit(server, num_inference_steps=4).json()["job_id"]
    everything = read_stream(server, job_id)
    first_id = everything[0][0]
    resumed = read_stream(server, job_id, headers={"Last-Event-ID": str(first_id)})
    assert all(event_id > first_id for event_id, _, _ in resumed)
    assert resumed[-1][1] == "completed"
    # Every status after the first event's comes, none skipped, each with its own epoch's id (docs/events.md):
    # from pending (epoch 1), running then completed; from running (epoch 2), completed. Their bodies are the
    # job as it is when resumed.
    statuses = [(event_id, name) for event_id, name, _ in resumed if name != "progress"]
    if everything[0][2]["status"] == "pending":
        assert statuses == [(2 * EPOCH, "status"), (3 * EPOCH, "completed")]
    else:
        assert statuses == [(3 * EPOCH, "completed")]


def test_a_foreign_job_is_a_json_404_before_any_streaming(server):
    job = VideoGenerationJob.objects.create(
        user_id="bob", prompt="p", model_name="tiny-random", guidance_scale=4.5, seed=1, **FAST_JOB
    )
    answer = httpx.get(url(server, f"/api/v1/job/{job.id}/events?user_id=alice"), headers={"Accept": "text/event-stream"})
    assert answer.status_code == 404
    assert answer.headers["content-type"] == "application/json"
    assert answer.json() == {"detail": "No such job."}


def test_many_subscribers_all_get_every_status_and_the_terminal_event(server, cluster):
    job_id = submit(server, num_inference_steps=4).json()["job_id"]
    results: list = []

    def watch():
        results.append(read_stream(server, job_id))

    threads = [threading.Thread(target=watch) for _ in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert len(results) == 40
    for events in results:
        assert events[-1][1] == "completed"


def test_a_stream_under_an_api_key_sees_only_its_users_jobs(keyed_server, cluster):
    alice, alice_key = ApiKey.issue(user_id="alice")
    _, bob_key = ApiKey.issue(user_id="bob")
    job_id = submit(keyed_server, headers={"Authorization": f"Bearer {alice_key}"}).json()["job_id"]
    events = read_stream(keyed_server, job_id, query="", headers={"Authorization": f"Bearer {alice_key}"})
    assert events[-1][1] == "completed"
    foreign = httpx.get(url(keyed_server, f"/api/v1/job/{job_id}/events"), headers={"Authorization": f"Bearer {bob_key}"})
    assert foreign.status_code == 404 and foreign.json() == {"detail": "No such job."}
    anonymous = httpx.get(url(keyed_server, f"/api/v1/job/{job_id}/events"))
    assert anonymous.status_code == 401


def test_prefer_wait_on_get_job_answers_once_the_job_is_finished(server, cluster):
    job_id = submit(server, num_inference_steps=4).json()["job_id"]
    answer = get_job(server, job_id, Prefer="wait=1000")
    assert answer.status_code == 200
    assert answer.headers["Preference-Applied"] == "wait=200"  # capped by VIDEOGEN_MAX_WAIT
    assert answer.json()["status"] == "completed"


def running_elsewhere() -> VideoGenerationJob:
    """A job that stays running for the test: a worker no cluster here knows, with a fresh heartbeat."""
    now = timezone.now()
    return VideoGenerationJob.objects.create(
        user_id="alice", prompt="p", model_name="tiny-random", guidance_scale=4.5, seed=1, status="running",
        status_log="pending,running", worker="elsewhere:1", started_at=now, heartbeat_at=now, **FAST_JOB
    )


def test_prefer_wait_on_get_job_answers_after_n_seconds_when_not_finished(server):
    job = running_elsewhere()
    started = time.monotonic()
    answer = get_job(server, str(job.id), Prefer="wait=2")
    took = time.monotonic() - started
    assert answer.status_code == 200 and answer.headers["Preference-Applied"] == "wait=2"
    assert answer.json()["status"] == "running"
    assert 1.8 <= took < 10


def test_prefer_wait_on_post_generate_answers_200_with_the_finished_job(server, cluster):
    answer = submit(server, headers={"Prefer": "wait=200"})
    assert answer.status_code == 200
    assert answer.headers["Preference-Applied"] == "wait=200"
    assert answer.json()["status"] == "completed" and answer.json()["success"] is True
    assert answer.headers["Location"].endswith(f"/api/v1/job/{answer.json()['job_id']}")


def test_prefer_wait_on_post_generate_answers_202_when_the_job_is_not_finished_in_time(server, cluster):
    answer = submit(server, headers={"Prefer": "wait=0"}, num_inference_steps=40)
    assert answer.status_code == 202 and answer.headers["Preference-Applied"] == "wait=0"
    httpx.post(url(server, f"/api/v1/job/{answer.json()['job_id']}/cancel?user_id=alice"))


def test_without_prefer_nothing_changes(server):
    answer = submit(server)
    assert answer.status_code == 202 and "Preference-Applied" not in answer.headers
    assert "Preference-Applied" not in get_job(server, answer.json()["job_id"]).headers
    httpx.post(url(server, f"/api/v1/job/{answer.json()['job_id']}/cancel?user_id=alice"))


def worker_usage(server) -> dict[int, tuple[int, int]]:
    """(open descriptors, threads) of each gunicorn worker process."""
    usage = {}
    for pid in descendants(server.process.pid):
        try:
            fds = len(os.listdir(f"/proc/{pid}/fd"))
            threads = int(next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                               if line.startswith("Threads:")).split()[1])
        except (OSError, StopIteration):
            continue
        usage[pid] = (fds, threads)
    return usage


def open_and_drop(server, path: str, count: int, batch: int = 500) -> None:
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n".encode()
    for start in range(0, count, batch):
        sockets = []
        for _ in range(min(batch, count - start)):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=60)
            sock.sendall(request)
            sockets.append(sock)
        for sock in sockets:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = sock.recv(4096)
                assert chunk, "the server closed a stream it should hold"
                head += chunk
            assert head.startswith(b"HTTP/1.1 200"), head[:200]
        for sock in sockets:
            sock.close()


def dropped_streams_are_freed(server, count: int) -> None:
    job = running_elsewhere()
    path = f"/api/v1/job/{job.id}/events?user_id=alice"
    # Warm: each worker's loop and listener threads exist from here on.
    open_and_drop(server, path, 20)
    time.sleep(2)
    before = worker_usage(server)
    open_and_drop(server, path, count)

    def back_to_before() -> bool:
        after = worker_usage(server)
        return all(after[pid][0] <= fds + 2 and after[pid][1] <= threads for pid, (fds, threads) in before.items())

    # Within one keep-alive interval (15 s) of the last drop, with room for a busy box.
    wait_until(back_to_before, f"{count} dropped streams to be freed", timeout=20,
               details=lambda: f"before {before}, after {worker_usage(server)}")


def test_dropped_streams_free_their_descriptors_and_threads(server):
    dropped_streams_are_freed(server, 500)


@pytest.mark.skipif(os.environ.get("VIDEOGEN_TEST_TEN_THOUSAND") != "1", reason="VIDEOGEN_TEST_TEN_THOUSAND=1: minutes")
def test_ten_thousand_dropped_streams_are_freed(server):
    dropped_streams_are_freed(server, 10_000)


# Run in the page: an EventSource on the job's stream, every event kept until the terminal one.
WATCH_IN_BROWSER = """
async (url) => await new Promise((resolve) => {
  const seen = [];
  const source = new EventSource(url);
  const keep = (e) => seen.push({name: e.type, id: e.lastEventId, status: JSON.parse(e.data).status || null});
  for (const name of ["status", "progress", "queue"]) source.addEventListener(name, keep);
  for (const name of ["completed", "failed", "cancelled"]) {
    source.addEventListener(name, (e) => { keep(e); source.close(); resolve(seen); });
  }
  setTimeout(() => { source.close(); resolve(seen); }, 200000);
})
"""


@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="no Chromium at /usr/bin/chromium")
def test_a_browsers_event_source_follows_a_job_to_its_end(server, cluster, tmp_path):
    from tests.support.browser import browser_page

    # Long enough to be still running when the browser has started and connected.
    job_id = submit(server, num_inference_steps=200, num_frames=17, width=128, height=128).json()["job_id"]
    with browser_page(tmp_path) as page:
        page.goto(url(server, "/api/v1/models"))  # the API's origin, as the playground's page would be
        seen = page.evaluate(WATCH_IN_BROWSER, f"/api/v1/job/{job_id}/events?user_id=alice")
    assert seen[-1]["name"] == "completed"
    assert seen[0]["name"] == "status"
    ids = [int(event["id"]) for event in seen]
    assert ids == sorted(set(ids))
