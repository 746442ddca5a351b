"""
Recovery with real processes, on whichever broker the suite runs (the ORM
broker, or Redis in CI's Redis leg): the qcluster parent reaps while every
worker is busy, and a task taken from the broker by a cluster that then dies
still runs.
"""

import os
import signal

import pytest
from django.utils import timezone
from django_q.models import OrmQ

from jobs.models import Status, VideoGenerationJob
from jobs.services.lifecycle import job_cancel, job_enqueue
from tests.support.cluster import running_qcluster, running_worker_pid, wait_for, wait_until_finished

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

LONG_JOB = {"width": 256, "height": 256, "num_frames": 17, "num_inference_steps": 200}
FAST_RECOVERY = {
    "VIDEOGEN_REAPER_INTERVAL": "1",
    "VIDEOGEN_HEARTBEAT_INTERVAL": "0.5",
    "VIDEOGEN_HEARTBEAT_TIMEOUT": "3",
    "VIDEOGEN_QUEUE_RETRY": "5",
}


def test_a_lost_job_is_queued_again_while_every_worker_is_busy(make_job, tmp_path, media_root):
    busy = make_job(**LONG_JOB)
    with running_qcluster(tmp_path / "q.log", media_root, **FAST_RECOVERY) as cluster:
        job_enqueue(busy)
        running_worker_pid(busy, cluster)
        # Its worker, on another host, stops beating now.
        lost = make_job(status=Status.RUNNING, worker="host-b:4242 slot 0 cuda:0", heartbeat_at=timezone.now(),
                        started_at=timezone.now())

        wait_for(lambda: VideoGenerationJob.objects.filter(pk=lost.pk, status=Status.PENDING).exists(),
                 "the lost job to be queued again", cluster, timeout=60)
        busy_status = VideoGenerationJob.objects.get(pk=busy.pk).status
        for job in (busy, lost):
            job.refresh_from_db()
            job_cancel(job)
        wait_until_finished([busy, lost], cluster)

    # Recovered while the only worker was still generating: by the parent's reaper.
    assert busy_status == Status.RUNNING
    lost.refresh_from_db()
    assert lost.attempts == 2
    assert "reaper recovered lost jobs" in cluster.log


def test_a_task_taken_by_a_cluster_that_then_dies_still_runs(make_job, settings, tmp_path, media_root):
    from django_q.brokers import get_broker

    first = make_job(**{**LONG_JOB, "width": 128, "height": 128, "num_inference_steps": 100})
    waiting = make_job()
    # A long heartbeat timeout while the task is held: on Redis a task held in
    # a live cluster's memory is in no queue either, and would be queued again.
    with running_qcluster(tmp_path / "q.log", media_root, **{**FAST_RECOVERY, "VIDEOGEN_HEARTBEAT_TIMEOUT": "60"}) \
            as cluster:
        job_enqueue(first)
        running_worker_pid(first, cluster)
        job_enqueue(waiting)
        # The one worker is busy: the cluster's pusher takes the task and holds it.
        if settings.REDIS_URL:
            wait_for(lambda: get_broker().queue_size() == 0, "the task to be taken", cluster)
        else:
            wait_for(lambda: not OrmQ.objects.filter(lock__isnull=True).exists(), "the task to be taken", cluster)
        os.killpg(cluster.process.pid, signal.SIGKILL)
        cluster.process.wait()

    # The restarted cluster need not spend a hundred steps on the first job
    # again: two show that it runs (the row's parameters are read at each claim).
    VideoGenerationJob.objects.filter(pk=first.pk).update(num_inference_steps=2)
    with running_qcluster(tmp_path / "q.log", media_root, **FAST_RECOVERY) as restarted:
        wait_until_finished([first, waiting], restarted)

    for job in (first, waiting):
        job.refresh_from_db()
        assert job.status == Status.COMPLETED, job.error_message
    assert (first.attempts, waiting.attempts) == (2, 1)
