"""
Nothing lost, nothing stuck, nothing run twice, with real processes: worker
processes killed with SIGKILL, a cluster stopped with SIGTERM. (A whole
cluster killed and restarted: tests/test_reaper_processes.py; a task delivered
twice: tests/generation/test_task.py.)
"""

import os
import re
import signal

import pytest

from jobs.models import Status, VideoGenerationJob
from jobs.services.lifecycle import job_enqueue
from tests.support.cluster import running_qcluster, running_worker_pid, wait_for, wait_until_finished

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# Several seconds of denoising on the tiny model: long enough to kill it mid-way.
LONG_JOB = {"width": 128, "height": 128, "num_frames": 17, "num_inference_steps": 150}
# For a stop, which a worker acts on at its next step: steps slow enough
# (~0.1 s each here) that the signal always lands with steps still to come.
# LONG_JOB's 150 steps took under a second on an idle box, so a stop sent
# once it ran could land in the decode, and the job rightly completed.
STOPPABLE_JOB = {"width": 256, "height": 256, "num_frames": 9, "num_inference_steps": 150}


def submit(make_job, **fields) -> VideoGenerationJob:
    job = make_job(**{**LONG_JOB, **fields})
    job_enqueue(job)
    return job


def shorten_the_next_attempt(job: VideoGenerationJob) -> None:
    """
    Two steps for whichever attempt claims the job next. The attempt running
    now read its parameters when it claimed the job: it stays long enough to
    be interrupted. What the next one must show is that it runs and
    completes the job, not that it spends ten more seconds denoising.
    """
    VideoGenerationJob.objects.filter(pk=job.pk).update(num_inference_steps=2)


@pytest.fixture(scope="class")
def cluster(django_db_setup, tmp_path_factory):
    """
    One cluster for TestWorkersKilledMidJob (its start and first torch
    import are a good part of a test's time): a killed worker is replaced and
    the cluster goes on, so each test finds it running and idle, its rows
    gone with the test database's flush. Stopped after the class, before the
    tests below start clusters of their own on the same queue.
    """
    directory = tmp_path_factory.mktemp("killed-workers")
    with running_qcluster(directory / "q.log", directory / "media", VIDEOGEN_MAX_ATTEMPTS="2") as running:
        yield running


class TestWorkersKilledMidJob:
    def test_a_job_whose_worker_is_killed_completes_on_its_second_attempt(self, make_job, cluster):
        job = submit(make_job)
        pid = running_worker_pid(job, cluster)
        shorten_the_next_attempt(job)
        os.kill(pid, signal.SIGKILL)

        wait_until_finished([job], cluster)

        job.refresh_from_db()
        assert (job.status, job.attempts) == (Status.COMPLETED, 2), job.error_message
        assert f"job={job.pk} user_id=\"alice\" lost by worker" in cluster.log

    def test_a_job_that_kills_its_worker_every_time_fails_as_worker_lost(self, make_job, cluster):
        job = submit(make_job)
        first = running_worker_pid(job, cluster)
        os.kill(first, signal.SIGKILL)
        os.kill(running_worker_pid(job, cluster, not_pid=first), signal.SIGKILL)

        wait_until_finished([job], cluster)

        job.refresh_from_db()
        assert (job.status, job.error_code, job.attempts) == (Status.FAILED, "worker_lost", 2)
        assert "on each of its 2 attempts" in job.error_message


def test_sigterm_hands_the_running_job_back_and_another_cluster_finishes_it(make_job, tmp_path, media_root):
    with running_qcluster(tmp_path / "q.log", media_root) as cluster:
        job = submit(make_job, **STOPPABLE_JOB)
        running_worker_pid(job, cluster, after_step=3)
        cluster.process.send_signal(signal.SIGTERM)
        # A bound for a hung stop only: that it stopped at a step, not at the
        # end of the job nor killed, is what the log says below.
        cluster.process.wait(timeout=30)

    job.refresh_from_db()
    assert (job.status, job.attempts, job.worker) == (Status.PENDING, 1, "")
    assert re.search(r"handed back after step \d+ of 150", cluster.log)

    shorten_the_next_attempt(job)
    with running_qcluster(tmp_path / "q.log", media_root) as restarted:
        wait_until_finished([job], restarted)
    job.refresh_from_db()
    assert (job.status, job.attempts) == (Status.COMPLETED, 1)


def test_a_worker_that_cannot_stop_in_time_is_killed_and_its_job_handed_back(make_job, tmp_path, media_root):
    # One denoising step, then a long VAE decode with no step boundary to stop at.
    with running_qcluster(tmp_path / "q.log", media_root, VIDEOGEN_SHUTDOWN_TIMEOUT="1") as cluster:
        job = submit(make_job, width=512, height=512, num_frames=49, num_inference_steps=1)
        wait_for(
            lambda: VideoGenerationJob.objects.filter(pk=job.pk, current_step=1).exists(), "the decode", cluster
        )
        cluster.process.send_signal(signal.SIGTERM)
        cluster.process.wait(timeout=30)

    job.refresh_from_db()
    assert (job.status, job.attempts, job.worker) == (Status.PENDING, 1, "")
    assert "did not hand job" in cluster.log


def test_a_second_stop_signal_does_not_hang_the_cluster(make_job, tmp_path, media_root):
    # Ctrl-C in a terminal, then the process manager's SIGTERM: django-q2's
    # own handler would re-enter its stop and can deadlock.
    with running_qcluster(tmp_path / "q.log", media_root) as cluster:
        job = submit(make_job, **STOPPABLE_JOB)
        running_worker_pid(job, cluster)
        for _ in range(3):
            cluster.process.send_signal(signal.SIGINT)
            cluster.process.send_signal(signal.SIGTERM)
        cluster.process.wait(timeout=30)

    job.refresh_from_db()
    assert job.status == Status.PENDING
    assert re.search(r"handed back after step \d+ of 150", cluster.log)
