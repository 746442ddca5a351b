"""
Two deployments share one database, each with its own VIDEOGEN_QUEUE_NAME:
each one's real qcluster runs only its own deployment's jobs, and each one's
queue positions count only its own.
"""

import os
import subprocess
import sys
import time

import pytest
from django.conf import settings

from jobs.models import Status, VideoGenerationJob
from jobs.services.recovery import parse_worker_name
from tests.support.cluster import running_qcluster, test_database_url, wait_until_finished
from tests.support.jobs import FAST_JOB
from tests.support.processes import descendants

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SUBMIT = """
from generation.params import GenerationParams
from jobs.services.lifecycle import job_create
params = dict(prompt="a fox", negative_prompt="", guidance_scale=4.5, seed=1, model_name="tiny-random")
job, _ = job_create(user_id="b", params=GenerationParams(**params, **{fast}))
print(job.pk)
"""


def other_deployment() -> str:
    return settings.Q_CLUSTER["name"] + "-other"


@pytest.fixture
def other_queue_emptied():
    """On Redis the other deployment's queue outlives the test: empty before and after."""

    def empty():
        if settings.REDIS_URL:
            from django_q.brokers import get_broker

            get_broker(list_key=other_deployment()).delete_queue()

    empty()
    yield
    empty()


def submit_to_the_other_deployment(media_root) -> VideoGenerationJob:
    env = {**os.environ, "DATABASE_URL": test_database_url(), "REDIS_URL": settings.REDIS_URL,
           "VIDEOGEN_QUEUE_NAME": other_deployment(), "VIDEOGEN_MEDIA_ROOT": str(media_root)}
    done = subprocess.run([sys.executable, "manage.py", "shell", "-c", SUBMIT.format(fast=FAST_JOB)],
                          cwd=settings.BASE_DIR, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return VideoGenerationJob.objects.get(pk=done.stdout.split()[-1])


def ran_under(job: VideoGenerationJob, cluster_pid: int) -> bool:
    job.refresh_from_db()
    return parse_worker_name(job.worker)[1] in descendants(cluster_pid)


def test_each_deployment_runs_only_its_own_jobs_and_counts_only_them(api, tmp_path, media_root, other_queue_emptied):
    ours = []
    for _ in range(3):
        response = api.post("/api/v1/generate", {"user_id": "a", "prompt": "a cat", **FAST_JOB}, format="json")
        assert response.status_code == 202, response.content
        ours.append(VideoGenerationJob.objects.get(pk=response.json()["job_id"]))
    theirs = [submit_to_the_other_deployment(media_root) for _ in range(2)]

    # Positions among this deployment's jobs only: the other's do not go first.
    positions = [api.get(f"/api/v1/job/{job.pk}").json()["queue_position"] for job in ours]
    assert positions == [1, 2, 3]

    # The other deployment's cluster, woken for its jobs, runs those and nothing of ours,
    # not even once its reaper has looked for pending work without a wake-up.
    with running_qcluster(tmp_path / "other.log", media_root, VIDEOGEN_QUEUE_NAME=other_deployment(),
                          VIDEOGEN_REAPER_INTERVAL="1") as other:
        wait_until_finished(theirs, other)
        assert all(ran_under(job, other.process.pid) for job in theirs)
        time.sleep(7)  # past the reaper's WAKE_UP_SETTLE, with a reap every second
        waiting = VideoGenerationJob.objects.filter(pk__in=[job.pk for job in ours])
        assert list(waiting.values_list("status", "worker")) == [(Status.PENDING, "")] * 3, other.log[-3000:]
        assert not any(str(job.pk) in other.log for job in ours), other.log[-3000:]

        with running_qcluster(tmp_path / "ours.log", media_root) as cluster:
            wait_until_finished(ours, cluster)
            assert all(ran_under(job, cluster.process.pid) for job in ours)
    for job in [*ours, *theirs]:
        job.refresh_from_db()
        assert job.status == Status.COMPLETED, job.error_message
