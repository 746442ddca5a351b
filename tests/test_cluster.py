"""
The whole path with real processes: the API enqueues, a real `qcluster`
process (django-q2, ORM broker) runs the real pipeline against the test
database, and the MP4 it stores is decoded back.
"""

from pathlib import Path

import pytest

from jobs.models import VideoGenerationJob
from tests.support.cluster import wait_until_finished
from tests.support.decode import decode_mp4
from tests.support.processes import descendants

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_a_real_worker_turns_submitted_jobs_into_mp4s_and_only_it_loads_torch(api, qcluster, media_root):
    requests = [
        {"user_id": "alice", "prompt": "a cat at sunset", "fps": 12, "num_frames": 10, "width": 96, "height": 64,
         "num_inference_steps": 40, "seed": 1},
        {"user_id": "bob", "prompt": "a dog in the city", "fps": 8, "num_frames": 5, "width": 64, "height": 64,
         "num_inference_steps": 3},
    ]
    job_ids = []
    for request in requests:
        response = api.post("/api/v1/generate", request, format="json")
        assert response.status_code == 202, response.content
        job_ids.append(response.json()["job_id"])
    jobs = list(VideoGenerationJob.objects.filter(pk__in=job_ids))
    progress_seen: set[int] = set()

    wait_until_finished(jobs, qcluster, progress_seen)

    for job_id, request in zip(job_ids, requests):
        body = api.get(f"/api/v1/job/{job_id}?user_id={request['user_id']}").json()
        assert body["status"] == "completed", body
        assert body["progress"] == 100
        download = api.get(f"/api/v1/download/{job_id}?user_id={request['user_id']}")
        video_path = media_root / "check.mp4"
        video_path.write_bytes(b"".join(download.streaming_content))
        meta, frames = decode_mp4(video_path)
        assert frames.shape == (request["num_frames"], request["height"], request["width"], 3)
        assert meta["fps"] == request["fps"]
    # Progress was visible between queued and done.
    assert any(0 < progress < 100 for progress in progress_seen), progress_seen
    # Both jobs ran on one warm pipeline, and the worker logged who asked.
    log = qcluster.log
    assert log.count("building model tiny-random in code") == 1, log
    assert f"job={job_ids[0]} user_id=\"alice\" task received" in log
    assert f"job={job_ids[1]} user_id=\"bob\" task received" in log
    # A child forked after its parent ran torch can hang, and CUDA cannot be
    # re-initialised in a fork: only the worker processes may load it...
    parent = qcluster.process.pid
    assert "libtorch" not in Path(f"/proc/{parent}/maps").read_text()
    # ...as the worker that ran the jobs did (so the check can fail).
    assert any("libtorch" in Path(f"/proc/{pid}/maps").read_text() for pid in descendants(parent))
