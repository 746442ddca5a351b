"""
A worker is VIDEOGEN_WORKER_HOST plus its pid (plus its slot and device). Its
process is looked up only on its own host; a worker on another host is
judged alive only by its heartbeat.
"""

from datetime import timedelta

import pytest
from django.utils import timezone

from jobs.models import Status
from jobs.services.recovery import parse_worker_name, reap_lost_jobs, worker_is_gone, worker_name


@pytest.fixture
def dead_pid():
    import subprocess

    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


@pytest.fixture(autouse=True)
def host_a(settings):
    settings.VIDEOGEN_WORKER_HOST = "host-a"


def test_a_worker_is_named_by_its_host_pid_slot_and_device():
    assert worker_name(4242, slot=1, device="cuda:1") == "host-a:4242 slot 1 cuda:1"
    assert worker_name(4242) == "host-a:4242"
    assert parse_worker_name("host-a:4242 slot 1 cuda:1") == ("host-a", 4242)
    assert parse_worker_name("host-a:4242") == ("host-a", 4242)
    assert parse_worker_name("not a worker") is None


def test_a_worker_on_this_host_is_gone_when_its_process_is(dead_pid):
    assert worker_is_gone(worker_name(dead_pid, slot=0, device="cpu"))
    assert not worker_is_gone(worker_name(slot=0, device="cpu"))


def test_a_pid_on_another_host_is_never_looked_up_here(dead_pid):
    # The same pid is dead here, which says nothing about host-b.
    assert not worker_is_gone(f"host-b:{dead_pid} slot 0 cpu")


def test_a_job_on_another_host_with_a_fresh_heartbeat_is_left_alone(make_job, dead_pid):
    job = make_job(status=Status.RUNNING, worker=f"host-b:{dead_pid} slot 0 cpu", heartbeat_at=timezone.now())

    assert reap_lost_jobs()["requeued"] == 0

    job.refresh_from_db()
    assert job.status == Status.RUNNING


def test_a_job_on_another_host_whose_heartbeat_stopped_is_queued_again(make_job, dead_pid):
    stale = timezone.now() - timedelta(hours=1)
    job = make_job(status=Status.RUNNING, worker=f"host-b:{dead_pid} slot 0 cpu", heartbeat_at=stale)

    assert reap_lost_jobs()["requeued"] == 1

    job.refresh_from_db()
    assert (job.status, job.attempts) == (Status.PENDING, 2)


def test_a_job_whose_worker_died_on_this_host_is_queued_again_at_once(make_job, dead_pid):
    job = make_job(status=Status.RUNNING, worker=worker_name(dead_pid, slot=1, device="cpu"),
                   heartbeat_at=timezone.now())

    assert reap_lost_jobs()["requeued"] == 1

    job.refresh_from_db()
    assert (job.status, job.attempts) == (Status.PENDING, 2)
