"""A real worker process serves only the models of its queue.

A job cancelled while a real worker runs it: tests/test_s3_storage.py; at which
step it stops: tests/generation/test_task.py; the pipeline serving the next
run: tests/generation/test_engine.py.
"""

import pytest

from jobs.models import Status
from jobs.services.lifecycle import job_enqueue
from tests.support.cluster import running_qcluster, wait_until_finished

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_a_worker_pinned_to_a_models_queue_runs_that_models_jobs_only(make_job, settings, tmp_path, media_root):
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
