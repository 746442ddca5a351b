"""
One worker process per device slot, with real processes: a cluster serving
VIDEOGEN_DEVICES=cpu,cpu runs two jobs at once in distinct slots, records
each slot and device on the job, and the replacement of a SIGKILLed worker
takes the slot that worker left.
"""

import os
import signal

import pytest

from jobs.models import Status, VideoGenerationJob
from jobs.services.recovery import parse_worker_name
from jobs.services.lifecycle import job_cancel, job_enqueue
from tests.support.cluster import running_qcluster, running_worker_pid, wait_for, wait_until_finished

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

LONG_JOB = {"width": 128, "height": 128, "num_frames": 17, "num_inference_steps": 150}
TWO_CPU_SLOTS = {"VIDEOGEN_DEVICES": "cpu,cpu", "VIDEOGEN_TORCH_THREADS": "1"}


def slot_of(worker: str) -> int:
    return int(worker.split(" slot ")[1].split()[0])


@pytest.fixture(scope="module")
def cluster(django_db_setup, tmp_path_factory):
    """
    One cluster for both tests (its start and two torch imports are most of
    a test's time): VIDEOGEN_WORKERS is left to default to one worker per
    device. Each test waits for its jobs to finish, so the next finds the
    cluster idle, its rows gone with the test database's flush.
    """
    directory = tmp_path_factory.mktemp("worker-slots")
    with running_qcluster(directory / "q.log", directory / "media", VIDEOGEN_WORKERS="", **TWO_CPU_SLOTS) as running:
        yield running


def test_two_workers_run_jobs_at_once_in_distinct_slots(make_job, cluster):
    jobs = [make_job(**{**LONG_JOB, "num_inference_steps": 40}) for _ in range(2)]
    for job in jobs:
        job_enqueue(job)
    # Both running at the same time: VIDEOGEN_WORKERS defaults to the two devices.
    workers = wait_for(
        lambda: (rows := list(VideoGenerationJob.objects.filter(status=Status.RUNNING, current_step__gte=1)
                              .values_list("worker", flat=True))) and len(rows) == 2 and rows,
        "both jobs running", cluster,
    )
    wait_until_finished(jobs, cluster)

    assert sorted(slot_of(worker) for worker in workers) == [0, 1]
    assert all(worker.endswith(" cpu") for worker in workers)
    for job in jobs:
        job.refresh_from_db()
        assert job.status == Status.COMPLETED, job.error_message
    assert sorted(job.run_info["slot"] for job in jobs) == [0, 1]
    assert {job.run_info["device"] for job in jobs} == {"cpu"}
    assert "is worker slot 0 on cpu" in cluster.log and "is worker slot 1 on cpu" in cluster.log


def test_a_killed_workers_replacement_takes_its_slot(make_job, cluster):
    # Both slots busy for long enough that the lost job can only run in the replacement.
    victim_job, other = (make_job(**{**LONG_JOB, "width": 256, "height": 256, "num_inference_steps": 200})
                         for _ in range(2))
    job_enqueue(victim_job)
    job_enqueue(other)
    victim = running_worker_pid(victim_job, cluster)
    running_worker_pid(other, cluster)
    victim_slot = slot_of(VideoGenerationJob.objects.get(pk=victim_job.pk).worker)
    os.kill(victim, signal.SIGKILL)

    replacement = running_worker_pid(victim_job, cluster, not_pid=victim)
    worker = VideoGenerationJob.objects.get(pk=victim_job.pk).worker
    other_worker = VideoGenerationJob.objects.get(pk=other.pk).worker
    for job in (victim_job, other):
        job.refresh_from_db()
        job_cancel(job)
    wait_until_finished([victim_job, other], cluster)

    assert replacement != victim
    assert parse_worker_name(worker)[1] == replacement
    assert slot_of(worker) == victim_slot
    assert slot_of(other_worker) == 1 - victim_slot
    victim_job.refresh_from_db()
    assert victim_job.attempts == 2
