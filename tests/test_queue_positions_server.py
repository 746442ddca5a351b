"""
Queue positions as a client polling `make run` sees them: gunicorn's several
processes answer alike, so a job's position never gets worse from one poll
to the next, never drops back to null, and comes with a start once the model
has history.
"""

import json
import time

import pytest

from tests.support.processes import wait_until
from tests.support.server import make_run

pytestmark = pytest.mark.slow

# Long enough (a few seconds each on an idle box) that the queue moves while it is polled.
JOB = {"prompt": "a fox in the snow", "fps": 8, "num_frames": 9, "width": 64, "height": 64, "num_inference_steps": 150}


def submit(server, user_id: str) -> str:
    response, body = server.request("POST", "/api/v1/generate", body=json.dumps({"user_id": user_id, **JOB}),
                                    headers={"Content-Type": "application/json"})
    assert response.status == 202, body
    return json.loads(body)["job_id"]


def poll(server, job_id: str) -> dict:
    response, body = server.request("GET", f"/api/v1/job/{job_id}?user_id=a")
    assert response.status == 200, body
    return json.loads(body)


def test_a_polled_jobs_position_only_improves_and_always_has_a_start(tmp_path):
    with make_run(tmp_path) as server:
        warm_up = submit(server, "a")
        wait_until(lambda: poll(server, warm_up)["status"] == "completed", "the warm-up job", timeout=180,
                   details=lambda: server.log[-3000:].decode(errors="replace"))

        jobs = [submit(server, "a") for _ in range(10)]
        submitted = time.monotonic()
        submit(server, "b")
        last = jobs[-1]
        seen = []  # (seconds since its submit, status, position, start)
        while True:
            asked = round(time.monotonic() - submitted, 2)
            job = poll(server, last)
            seen.append((asked, job["status"], job["queue_position"], job["estimated_start_at"]))
            if job["status"] != "pending":
                break
            # Quick at first (how soon a position comes), then about as a client polls.
            time.sleep(0.1 if len(seen) < 20 else 0.5)
            assert time.monotonic() - submitted < 240, seen

    pending = [entry for entry in seen if entry[1] == "pending"]
    first = next(index for index, entry in enumerate(pending) if entry[2] is not None)
    positions = [position for _, _, position, _ in pending[first:]]
    assert None not in positions, seen
    assert positions == sorted(positions, reverse=True), seen
    assert all(start is not None for _, _, position, start in pending if position is not None), seen
    # The goal is 1 s. On the shared 2-core box (jobs 20-80x slower than idle) the first came after
    # 1.5-4.3 s: the bound here only catches a position that waits for a whole snapshot age or more.
    assert pending[first][0] <= 5.0, seen
