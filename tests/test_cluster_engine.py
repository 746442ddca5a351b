"""The engine's promises kept by a real worker process: cancel at a step boundary, a warm pipeline after it."""

import re

import pytest

from jobs.models import Status, VideoGenerationJob
from tests.cluster import wait_for, wait_until_finished

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

STOPPED = re.compile(r"cancelled: stopped after step (\d+) of (\d+)")


def test_cancelling_a_running_job_stops_it_within_a_step_and_the_worker_goes_on(api, qcluster, media_root):
    # Steps of a tenth of a second or more: longer than the progress interval,
    # so the worker checks for cancellation after every step.
    long_job = api.post(
        "/api/v1/generate",
        {"user_id": "alice", "prompt": "a long one", "width": 256, "height": 256, "num_frames": 25,
         "num_inference_steps": 200},
        format="json",
    ).json()
    job = VideoGenerationJob.objects.get(pk=long_job["job_id"])
    wait_for(lambda: VideoGenerationJob.objects.get(pk=job.pk).current_step >= 2, "the job to start", qcluster)

    step_at_cancel = VideoGenerationJob.objects.get(pk=job.pk).current_step
    response = api.post(f"/api/v1/job/{job.id}/cancel?user_id=alice")

    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    stopped = wait_for(lambda: STOPPED.search(qcluster.log), "the worker to stop", qcluster, timeout=60)
    stopped_at, total = int(stopped.group(1)), int(stopped.group(2))
    # The step running when the cancel landed, and at most the one after it.
    assert step_at_cancel <= stopped_at <= step_at_cancel + 2 < total
    job.refresh_from_db()
    assert (job.status, job.video.name) == (Status.CANCELLED, "")
    assert not (media_root / "videos").exists() or not any((media_root / "videos").iterdir())

    next_job = api.post(
        "/api/v1/generate",
        {"user_id": "alice", "prompt": "next", "width": 64, "height": 64, "num_frames": 5, "num_inference_steps": 2},
        format="json",
    ).json()
    following = VideoGenerationJob.objects.get(pk=next_job["job_id"])
    wait_until_finished([following], qcluster)
    following.refresh_from_db()
    assert following.status == Status.COMPLETED
    assert qcluster.log.count("building model tiny-random in code") == 1


def test_a_worker_pinned_to_a_models_queue_runs_that_models_jobs_only(make_job, settings, tmp_path, media_root):
    from jobs.services import job_enqueue
    from tests.cluster import running_qcluster

    settings.VIDEOGEN_MODELS = ["tiny-random", "tiny-random-wan"]
    settings.VIDEOGEN_MODEL_QUEUES = {"tiny-random-wan": "wan-workers"}
    small = {"width": 64, "height": 64, "num_frames": 5, "num_inference_steps": 2}
    wan_job = make_job(model_name="tiny-random-wan", **small)
    other_job = make_job(model_name="tiny-random", **small)
    job_enqueue(wan_job)
    job_enqueue(other_job)

    with running_qcluster(
        tmp_path / "q.log", media_root, Q_CLUSTER_NAME="wan-workers",
        VIDEOGEN_MODELS="tiny-random,tiny-random-wan", VIDEOGEN_MODEL_QUEUES="tiny-random-wan=wan-workers",
    ) as cluster:
        wait_until_finished([wan_job], cluster)

    wan_job.refresh_from_db()
    other_job.refresh_from_db()
    assert wan_job.status == Status.COMPLETED, wan_job.error_message
    assert other_job.status == Status.PENDING
