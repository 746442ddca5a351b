"""
Priorities: `priority` low, normal or high on a submit; the
claim takes the highest first and fair share within one; queue positions
follow; and preemption: a high job that waited VIDEOGEN_PREEMPT_AFTER while
every worker runs lower work has the lowest, least advanced one yield,
checkpointed, back to pending, then resumed.
"""

import itertools
from datetime import timedelta

import numpy as np
import pytest
from django.utils import timezone

from generation.tasks import generate_video
from jobs.scheduling.estimates import cluster_beat, forget_snapshots
from jobs.models import Priority, Status, VideoGenerationJob
from jobs.scheduling.queue import job_claim_next, jobs_preempt_for_high_priority
from jobs.services.recovery import reap_lost_jobs
from tests.support.jobs import FAST_JOB, ago
from tests.support.decode import decode_mp4


@pytest.mark.parametrize("value", ["urgent", "HIGH", 2, None, ""])
def test_a_priority_not_low_normal_or_high_is_a_400_naming_it(submit, value):
    response = submit({"user_id": "alice", "prompt": "a cat", "priority": value, **FAST_JOB})

    assert response.status_code == 400
    assert list(response.json()["errors"]) == ["priority"]


def test_the_priority_is_normal_unless_given_and_shown_on_the_job(submit, api):
    plain = submit({"user_id": "alice", "prompt": "a cat", **FAST_JOB}).json()
    urgent = submit({"user_id": "alice", "prompt": "a dog", "priority": "high", **FAST_JOB}).json()

    assert plain["priority"] == "normal"
    assert urgent["priority"] == "high"
    assert VideoGenerationJob.objects.get(pk=urgent["job_id"]).priority == Priority.HIGH
    assert api.get(f"/api/v1/job/{urgent['job_id']}?user_id=alice").json()["priority"] == "high"


def test_a_keyed_retry_with_another_priority_is_another_request(submit):
    body = {"user_id": "alice", "prompt": "a cat", **FAST_JOB}
    assert submit(body, HTTP_IDEMPOTENCY_KEY="k1").status_code == 202

    assert submit({**body, "priority": "normal"}, HTTP_IDEMPOTENCY_KEY="k1").status_code == 200
    assert submit({**body, "priority": "high"}, HTTP_IDEMPOTENCY_KEY="k1").status_code == 422


def test_the_admin_lists_and_filters_jobs_by_priority(staff_client, make_job):
    make_job(priority=Priority.HIGH, prompt="the urgent one")
    make_job(priority=Priority.LOW, prompt="the idle one")

    page = staff_client.get("/admin/jobs/videogenerationjob/?priority__exact=2").content.decode()

    assert "the urgent one" in page and "the idle one" not in page


# --- The claim ---------------------------------------------------------------------------------


def test_the_claim_takes_higher_priority_first_whatever_the_age(make_job):
    low = make_job(priority=Priority.LOW, submitted_at=ago(300))
    normal = make_job(priority=Priority.NORMAL, submitted_at=ago(200))
    high = make_job(priority=Priority.HIGH, submitted_at=ago(100))

    claimed = [job_claim_next(queue=None, worker=f"w{n}").pk for n in range(3)]

    assert claimed == [high.pk, normal.pk, low.pk]


def test_within_a_priority_fair_share_orders_the_users(make_job):
    # alice used ten minutes of worker time lately, bob none.
    make_job(user_id="alice", status=Status.COMPLETED, started_at=ago(700), completed_at=ago(100))
    alices = make_job(user_id="alice", priority=Priority.HIGH, submitted_at=ago(60))
    bobs = make_job(user_id="bob", priority=Priority.HIGH, submitted_at=ago(10))
    bobs_normal = make_job(user_id="bob", submitted_at=ago(120))

    claimed = [job_claim_next(queue=None, worker=f"w{n}").pk for n in range(3)]

    assert claimed == [bobs.pk, alices.pk, bobs_normal.pk]


def test_queue_positions_put_higher_priority_first(api, make_job):
    forget_snapshots()
    low = make_job(priority=Priority.LOW, submitted_at=ago(30))
    high = make_job(user_id="bob", priority=Priority.HIGH, submitted_at=ago(10))
    normal = make_job(user_id="carol", submitted_at=ago(20))

    positions = {job.pk: api.get(f"/api/v1/job/{job.pk}").json()["queue_position"] for job in (low, high, normal)}

    assert positions == {high.pk: 1, normal.pk: 2, low.pk: 3}


# --- Preemption: who is asked to yield ---------------------------------------------------------


@pytest.fixture
def preemption(settings):
    settings.VIDEOGEN_PREEMPT_AFTER = 30.0
    settings.VIDEOGEN_CHECKPOINT_SECONDS = 60.0


def running(make_job, worker: str, priority=Priority.NORMAL, progress: int = 50, **fields) -> VideoGenerationJob:
    return make_job(status=Status.RUNNING, worker=worker, priority=priority, progress=progress,
                    started_at=ago(120), heartbeat_at=timezone.now(), **fields)


def waiting_high(make_job, waited: float, **fields) -> VideoGenerationJob:
    return make_job(user_id="urgent", priority=Priority.HIGH, submitted_at=ago(waited), **fields)


def asked(*jobs) -> list[bool]:
    return [VideoGenerationJob.objects.get(pk=job.pk).yield_requested_at is not None for job in jobs]


def test_a_high_job_waiting_past_the_setting_asks_the_lowest_priority_running_job(make_job, preemption):
    normal = running(make_job, "w1", Priority.NORMAL, progress=10)
    low = running(make_job, "w2", Priority.LOW, progress=90)
    waiting_high(make_job, 31)

    assert jobs_preempt_for_high_priority(None) == 1

    assert asked(normal, low) == [False, True]


def test_among_equal_priorities_the_job_with_the_least_progress_is_asked(make_job, preemption):
    ahead, behind = running(make_job, "w1", progress=80), running(make_job, "w2", progress=20)
    waiting_high(make_job, 31)

    jobs_preempt_for_high_priority(None)

    assert asked(ahead, behind) == [False, True]


def test_a_waiting_job_is_answered_once_and_two_are_answered_twice(make_job, preemption):
    first, second, third = (running(make_job, f"w{n}", progress=n) for n in range(3))
    waiting_high(make_job, 31)

    assert jobs_preempt_for_high_priority(None) == 1
    assert jobs_preempt_for_high_priority(None) == 0
    waiting_high(make_job, 40)
    assert jobs_preempt_for_high_priority(None) == 1

    assert asked(first, second, third) == [True, True, False]


@pytest.mark.parametrize(
    "situation",
    ["waited less than the setting", "preemption off", "checkpoints off", "a worker is free",
     "only high jobs run", "the high job is past its start deadline"],
)
def test_nothing_is_asked_to_yield(make_job, preemption, settings, situation):
    job = running(make_job, "w1", Priority.HIGH if situation == "only high jobs run" else Priority.LOW)
    waited = 29 if situation == "waited less than the setting" else 31
    deadline = ago(1) if situation == "the high job is past its start deadline" else None
    waiting_high(make_job, waited, start_deadline_at=deadline)
    if situation == "preemption off":
        settings.VIDEOGEN_PREEMPT_AFTER = None
    if situation == "checkpoints off":
        settings.VIDEOGEN_CHECKPOINT_SECONDS = None
    if situation == "a worker is free":
        cluster_beat("host:1", None, workers=2)

    assert jobs_preempt_for_high_priority(None) == 0
    assert asked(job) == [False]


def test_the_reaper_asks_too(make_job, preemption):
    low = running(make_job, "w1", Priority.LOW)
    waiting_high(make_job, 31)

    assert reap_lost_jobs()["asked to yield to high priority"] == 1
    assert asked(low) == [True]


# --- Preemption: the yield and the resume, through the real task and pipeline ------------------

STEPS = 6


def run(job) -> VideoGenerationJob:
    generate_video(str(job.id), job.user_id)
    job.refresh_from_db()
    return job


def asked_to_yield_at_step(monkeypatch, step: int) -> None:
    """Someone asks the running job to yield just before its worker writes `step`'s progress."""
    set_progress = VideoGenerationJob.set_progress
    once = itertools.count()

    def asking_first(job, progress, **fields):
        if fields.get("current_step") == step and next(once) == 0:
            assert job.ask_to_yield(timezone.now())
        return set_progress(job, progress, **fields)

    monkeypatch.setattr(VideoGenerationJob, "set_progress", asking_first)


def test_a_preempted_job_checkpoints_goes_back_to_pending_and_resumes_with_the_same_frames(
    make_job, media_root, monkeypatch, settings
):
    settings.VIDEOGEN_CHECKPOINT_SECONDS = 3600.0
    settings.VIDEOGEN_PROGRESS_INTERVAL = 0
    uninterrupted = run(make_job(num_inference_steps=STEPS, seed=5))
    job = make_job(num_inference_steps=STEPS, seed=5, priority=Priority.LOW, submitted_at=ago(60))
    with monkeypatch.context() as patch:
        asked_to_yield_at_step(patch, 3)
        run(job)

    # Back in the queue at its old place: not a failure, not an attempt, and the step it stopped at kept.
    assert (job.status, job.attempts, job.preemptions, job.run_info) == (Status.PENDING, 1, 1, {"preemptions": 1})
    assert (job.checkpoint_step, job.yield_requested_at, job.worker) == (3, None, "")
    assert job.submitted_at < timezone.now() - timedelta(seconds=50)

    run(job)

    assert job.status == Status.COMPLETED
    assert (job.run_info["preemptions"], job.run_info["resumed_from_step"]) == (1, 3)
    assert np.array_equal(decode_mp4(media_root / job.video.name)[1],
                          decode_mp4(media_root / uninterrupted.video.name)[1])


def test_after_a_preemption_the_high_job_is_claimed_before_the_preempted_one(make_job, media_root, monkeypatch,
                                                                            settings):
    settings.VIDEOGEN_CHECKPOINT_SECONDS = 3600.0
    settings.VIDEOGEN_PROGRESS_INTERVAL = 0
    low = make_job(num_inference_steps=STEPS, priority=Priority.LOW, submitted_at=ago(60))
    with monkeypatch.context() as patch:
        asked_to_yield_at_step(patch, 2)
        run(low)
    high = make_job(user_id="bob", priority=Priority.HIGH)

    assert low.status == Status.PENDING
    assert [job_claim_next(queue=None, worker=f"w{n}").pk for n in range(2)] == [high.pk, low.pk]
