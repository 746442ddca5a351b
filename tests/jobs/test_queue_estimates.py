"""GET /job's queue_position, estimated_start_at and estimated_completion_at (jobs/estimates.py)."""

from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from jobs.estimates import cluster_beat, forget_snapshots
from jobs.models import Status

ESTIMATE_FIELDS = ("queue_position", "estimated_start_at", "estimated_completion_at")


@pytest.fixture(autouse=True)
def fresh_snapshots():
    forget_snapshots()
    yield
    forget_snapshots()


def ago(seconds: float):
    return timezone.now() - timedelta(seconds=seconds)


def at(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@pytest.fixture
def history(make_job):
    """Completed tiny-random jobs of FAST_JOB's size that each took `seconds`, 3 s of it after the last step."""

    def make(seconds: float, count: int = 3):
        for _ in range(count):
            make_job(user_id="history", status=Status.COMPLETED, started_at=ago(seconds + 100),
                     completed_at=ago(100), stepped_at=ago(103), submitted_at=ago(seconds + 200))

    return make


def standing(api, job) -> dict:
    body = api.get(f"/api/v1/job/{job.id}?user_id={job.user_id}").json()
    return {name: body[name] for name in ESTIMATE_FIELDS}


def test_a_pending_job_has_a_position_but_no_start_without_history(api, make_job):
    first = make_job(user_id="alice", submitted_at=ago(20))
    second = make_job(user_id="alice", submitted_at=ago(10))

    assert standing(api, first) == {"queue_position": 1, "estimated_start_at": None, "estimated_completion_at": None}
    assert standing(api, second)["queue_position"] == 2


def test_positions_follow_the_fair_policy_not_submission_order(api, make_job):
    alice = [make_job(user_id="alice", submitted_at=ago(60 - n)) for n in range(3)]
    bob = make_job(user_id="bob", submitted_at=ago(30))

    positions = [standing(api, job)["queue_position"] for job in [*alice, bob]]

    # alice's first, then bob (alice now has a job's worth of time), then alice's others.
    assert positions == [1, 3, 4, 2]


def test_no_start_is_estimated_when_no_worker_is_alive(api, make_job, history):
    history(10)
    job = make_job()

    assert standing(api, job)["estimated_start_at"] is None


def test_with_history_and_live_workers_starts_are_estimated_from_the_median(api, make_job, history):
    history(10)
    cluster_beat("host:1", None, 1)
    first = make_job(user_id="alice", submitted_at=ago(20))
    second = make_job(user_id="alice", submitted_at=ago(10))
    before = timezone.now()

    first_start = at(standing(api, first)["estimated_start_at"])
    second_start = at(standing(api, second)["estimated_start_at"])

    # One idle worker: the first now, the second one median run (10 s) later.
    assert before - timedelta(seconds=1) <= first_start <= timezone.now() + timedelta(seconds=1)
    assert abs((second_start - first_start).total_seconds() - 10) < 0.5


def test_two_live_workers_start_the_first_two_jobs_at_once(api, make_job, history):
    history(10)
    cluster_beat("host:1", None, 2)
    jobs = [make_job(user_id="alice", submitted_at=ago(30 - n)) for n in range(3)]

    starts = [at(standing(api, job)["estimated_start_at"]) for job in jobs]

    assert abs((starts[1] - starts[0]).total_seconds()) < 0.5
    assert abs((starts[2] - starts[0]).total_seconds() - 10) < 0.5


def test_sizes_scale_the_estimate_by_frames_pixels_and_steps(api, make_job, history):
    history(10)
    cluster_beat("host:1", None, 1)
    double = make_job(user_id="alice", submitted_at=ago(20), num_inference_steps=4)  # twice FAST_JOB's steps
    after = make_job(user_id="alice", submitted_at=ago(10))

    gap = at(standing(api, after)["estimated_start_at"]) - at(standing(api, double)["estimated_start_at"])

    assert abs(gap.total_seconds() - 20) < 0.5


def test_a_dead_clusters_beat_does_not_count(api, make_job, history):
    from jobs.models import ClusterBeat

    history(10)
    ClusterBeat.objects.create(name="gone:1", queue="", workers=1, seen_at=ago(3600))

    assert standing(api, make_job())["estimated_start_at"] is None


def test_a_running_job_is_estimated_from_its_own_step_rate_once_two_steps_are_done(api, make_job, history):
    history(1000)  # history says much slower: the job's own rate wins
    job = make_job(status=Status.RUNNING, started_at=ago(60), num_inference_steps=12, current_step=4,
                   first_step_at=ago(40), stepped_at=ago(10), worker="w:1")

    end = at(standing(api, job)["estimated_completion_at"])

    # 10 s a step, 8 steps to go, plus the usual 3 s after the last step.
    expected = job.stepped_at + timedelta(seconds=83)
    assert abs((end - expected).total_seconds()) < 0.01
    assert standing(api, job)["queue_position"] is None


def test_a_running_job_before_its_second_step_is_estimated_from_history(api, make_job, history):
    job = make_job(status=Status.RUNNING, started_at=ago(5), current_step=1, first_step_at=ago(1),
                   stepped_at=ago(1), worker="w:1")
    assert standing(api, job)["estimated_completion_at"] is None

    history(30)
    forget_snapshots()
    end = at(standing(api, job)["estimated_completion_at"])
    assert abs((end - (job.started_at + timedelta(seconds=30))).total_seconds()) < 0.01


@pytest.mark.parametrize("status", [Status.COMPLETED, Status.FAILED, Status.CANCELLED])
def test_a_finished_job_has_no_estimates(api, make_job, history, status):
    history(10)
    cluster_beat("host:1", None, 1)
    job = make_job(status=status, started_at=ago(20), completed_at=ago(1), current_step=2,
                   first_step_at=ago(15), stepped_at=ago(10))

    assert standing(api, job) == dict.fromkeys(ESTIMATE_FIELDS)


def test_polling_a_pending_job_does_not_read_the_queue_again(api, make_job, django_assert_max_num_queries):
    waiting = [make_job(user_id=f"user{n}") for n in range(30)]
    standing(api, waiting[0])

    # The job's own row (and the broker-free view around it), never the queue.
    with django_assert_max_num_queries(1):
        assert standing(api, waiting[-1])["queue_position"] == 30


def test_a_job_submitted_after_the_snapshot_gets_its_position(api, make_job):
    first = make_job(user_id="alice", submitted_at=ago(5))
    standing(api, first)

    later = make_job(user_id="bob")

    assert standing(api, later)["queue_position"] == 2
