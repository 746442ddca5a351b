from datetime import timedelta

import pytest
from django.utils import timezone

from jobs.models import Status, VideoGenerationJob
from jobs.services.recovery import job_hand_back, reap_lost_jobs, worker_is_gone, worker_name
from tests.support.broker import queued_tasks

# CI's Redis leg runs this file again, its enqueues going through Redis.
pytestmark = pytest.mark.broker

FAR_AWAY = "some-other-host:4242"


@pytest.fixture
def dead_pid():
    import subprocess

    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def stale(seconds: float = 3600):
    return timezone.now() - timedelta(seconds=seconds)


def requeued_fields(job: VideoGenerationJob) -> dict:
    """The job's fields that requeue() resets, to compare with what it resets them to."""
    return {name: getattr(job, name) for name in VideoGenerationJob.REQUEUE_RESETS}


def test_a_job_whose_heartbeat_stopped_is_queued_again_with_one_more_attempt(make_job):
    job = make_job(
        status=Status.RUNNING, worker=FAR_AWAY, heartbeat_at=stale(), attempts=1, progress=50, current_step=1,
        started_at=stale(), first_step_at=stale(), stepped_at=stale(),
    )

    assert reap_lost_jobs() == {"requeued": 1, "failed": 0, "wake-ups resent": 0, "unfinished files removed": 0,
                              "cancelled past their start deadline": 0,
                              "asked to yield to high priority": 0}

    job.refresh_from_db()
    assert (job.status, job.attempts, job.progress, job.worker) == (Status.PENDING, 2, 0, "")
    assert requeued_fields(job) == VideoGenerationJob.REQUEUE_RESETS
    [queued] = queued_tasks()
    assert queued["args"] == (str(job.id), job.user_id)


def test_a_job_that_lost_its_worker_on_every_attempt_fails_as_worker_lost(make_job, settings):
    settings.VIDEOGEN_MAX_ATTEMPTS = 2
    job = make_job(status=Status.RUNNING, worker=FAR_AWAY, heartbeat_at=stale(), attempts=2)

    assert reap_lost_jobs() == {"requeued": 0, "failed": 1, "wake-ups resent": 0, "unfinished files removed": 0,
                              "cancelled past their start deadline": 0,
                              "asked to yield to high priority": 0}

    job.refresh_from_db()
    assert (job.status, job.error_code) == (Status.FAILED, "worker_lost")
    assert "on each of its 2 attempts" in job.error_message
    assert len(queued_tasks()) == 0


def test_a_job_with_a_fresh_heartbeat_is_left_alone(make_job):
    job = make_job(status=Status.RUNNING, worker=FAR_AWAY, heartbeat_at=timezone.now())

    assert reap_lost_jobs() == {"requeued": 0, "failed": 0, "wake-ups resent": 0, "unfinished files removed": 0,
                              "cancelled past their start deadline": 0,
                              "asked to yield to high priority": 0}

    job.refresh_from_db()
    assert job.status == Status.RUNNING


def test_a_job_whose_worker_on_this_host_is_dead_is_recovered_at_once(make_job, dead_pid):
    job = make_job(status=Status.RUNNING, worker=worker_name(dead_pid), heartbeat_at=timezone.now())

    assert reap_lost_jobs()["requeued"] == 1

    job.refresh_from_db()
    assert job.status == Status.PENDING


def test_a_job_whose_worker_on_this_host_is_alive_is_left_alone(make_job):
    job = make_job(status=Status.RUNNING, worker=worker_name(), heartbeat_at=timezone.now())

    assert reap_lost_jobs()["requeued"] == 0

    job.refresh_from_db()
    assert job.status == Status.RUNNING


def test_a_worker_that_beats_again_before_the_reaper_writes_keeps_its_job(make_job):
    from jobs.services.recovery import job_recover, lost_jobs

    job = make_job(status=Status.RUNNING, worker=FAR_AWAY, heartbeat_at=stale())
    [seen_as_lost] = list(lost_jobs())
    job.__class__.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now())

    assert job_recover(seen_as_lost) is None

    job.refresh_from_db()
    assert job.status == Status.RUNNING


def test_finished_and_pending_jobs_are_never_reaped(make_job):
    for status in (Status.PENDING, Status.COMPLETED, Status.FAILED, Status.CANCELLED):
        make_job(status=status, worker=FAR_AWAY, heartbeat_at=stale())

    assert reap_lost_jobs() == {"requeued": 0, "failed": 0, "wake-ups resent": 0, "unfinished files removed": 0,
                              "cancelled past their start deadline": 0,
                              "asked to yield to high priority": 0}


def test_worker_identity_is_host_and_pid(dead_pid):
    assert not worker_is_gone(worker_name())
    assert worker_is_gone(worker_name(dead_pid))
    assert not worker_is_gone(FAR_AWAY)


def test_a_job_handed_back_by_a_stopping_worker_keeps_its_attempt_count(make_job):
    job = make_job(status=Status.RUNNING, worker=worker_name(), attempts=1, current_step=1, stepped_at=stale())

    assert job_hand_back(job)

    job.refresh_from_db()
    assert (job.status, job.attempts) == (Status.PENDING, 1)
    assert requeued_fields(job) == VideoGenerationJob.REQUEUE_RESETS
    assert len(queued_tasks()) == 1


def test_a_pending_job_whose_task_is_in_no_queue_is_queued_again(make_job):
    from jobs.services.recovery import resend_lost_wake_ups

    job = make_job(status=Status.PENDING, queued_at=stale())

    assert resend_lost_wake_ups() == 1

    [queued] = queued_tasks()
    assert queued["args"] == (str(job.id), job.user_id)
    job.refresh_from_db()
    assert job.queued_at > stale(60)


def test_a_pending_job_whose_task_waits_in_the_queue_is_left_alone(make_job):
    from jobs.services.recovery import resend_lost_wake_ups
    from jobs.services.lifecycle import job_enqueue

    job = make_job(status=Status.PENDING)
    job_enqueue(job)
    job.__class__.objects.filter(pk=job.pk).update(queued_at=stale())

    assert resend_lost_wake_ups() == 0
    assert len(queued_tasks()) == 1


def test_a_job_queued_moments_ago_is_left_alone(make_job):
    from jobs.services.recovery import resend_lost_wake_ups

    make_job(status=Status.PENDING, queued_at=timezone.now())

    assert resend_lost_wake_ups() == 0


def test_on_redis_a_queue_with_a_wake_up_waiting_gets_no_other_and_an_empty_one_gets_one(
    make_job, monkeypatch, settings
):
    if not settings.REDIS_URL:
        pytest.skip("the Redis broker (CI's Redis leg)")
    import redis
    from django_q.brokers.redis_broker import Redis
    from django_q.signing import SignedPackage

    from jobs.services.recovery import resend_lost_wake_ups

    broker = Redis(list_key=f"videogen-test-{timezone.now().timestamp()}")
    # The server and database the run was given (CI's Redis leg has its own).
    broker.connection = redis.Redis.from_url(settings.REDIS_URL)
    monkeypatch.setattr("jobs.services.recovery.broker", lambda queue: broker)
    make_job(status=Status.PENDING, queued_at=stale())
    try:
        broker.enqueue(SignedPackage.dumps({"func": "generation.tasks.generate_video", "args": ()}))
        assert resend_lost_wake_ups() == 0

        broker.delete_queue()
        assert resend_lost_wake_ups() == 1
    finally:
        broker.delete_queue()
