"""Which job a free worker claims: the fair policy (jobs/scheduling/queue.py), on a real database."""

import pytest

from jobs.models import Status, UserWeight, VideoGenerationJob
from jobs.scheduling.queue import job_claim_next
from tests.support.jobs import ago


@pytest.fixture
def used(make_job):
    """A finished job that used `seconds` of worker time, ending `ended` seconds ago."""

    def make(user_id: str, seconds: float, ended: float = 0):
        return make_job(user_id=user_id, status=Status.COMPLETED, started_at=ago(ended + seconds),
                        completed_at=ago(ended), submitted_at=ago(ended + seconds + 1))

    return make


def claim() -> str | None:
    job = job_claim_next(queue=None, worker="test:1")
    return None if job is None else job.user_id


def test_the_user_who_used_the_least_worker_time_goes_first(make_job, used):
    used("alice", 100)
    used("bob", 30)
    make_job(user_id="alice", submitted_at=ago(50))
    make_job(user_id="bob", submitted_at=ago(40))
    make_job(user_id="carol", submitted_at=ago(10))

    assert [claim(), claim(), claim(), claim()] == ["carol", "bob", "alice", None]


def test_a_running_job_counts_its_time_so_far(make_job):
    make_job(user_id="alice", status=Status.RUNNING, started_at=ago(20), worker="w:1")
    make_job(user_id="alice", submitted_at=ago(60))
    make_job(user_id="bob", submitted_at=ago(5))

    assert claim() == "bob"


def test_ties_go_to_the_user_with_the_oldest_job_and_each_user_runs_oldest_first(make_job):
    bob_new = make_job(user_id="bob", submitted_at=ago(10))
    alice = make_job(user_id="alice", submitted_at=ago(20))
    bob_old = make_job(user_id="bob", submitted_at=ago(30))

    claimed = [job_claim_next(queue=None, worker="test:1").pk for _ in range(3)]

    # bob's oldest first; then alice (no time used yet, bob has some).
    assert claimed[:2] == [bob_old.pk, alice.pk]
    assert claimed[2] == bob_new.pk


def test_worker_time_before_the_window_is_forgotten(make_job, used, settings):
    settings.VIDEOGEN_FAIR_WINDOW = 600
    used("alice", 500, ended=3600)
    used("bob", 10)
    make_job(user_id="alice", submitted_at=ago(5))
    make_job(user_id="bob", submitted_at=ago(50))

    assert claim() == "alice"


def test_only_the_part_of_a_job_inside_the_window_counts(make_job, used, settings):
    settings.VIDEOGEN_FAIR_WINDOW = 100
    used("alice", 1000, ended=50)  # 50 s of it inside the window
    used("bob", 60)
    make_job(user_id="alice", submitted_at=ago(5))
    make_job(user_id="bob", submitted_at=ago(50))

    assert claim() == "alice"


def test_a_user_with_weight_two_gets_twice_the_share(make_job, used):
    UserWeight.objects.create(user_id="alice", weight=2)
    used("alice", 100)  # 50 weighted
    used("bob", 60)
    make_job(user_id="alice", submitted_at=ago(5))
    make_job(user_id="bob", submitted_at=ago(50))

    assert claim() == "alice"
    UserWeight.objects.filter(user_id="alice").update(weight=1)
    make_job(user_id="alice", submitted_at=ago(1))
    assert claim() == "bob"


def test_a_job_cancelled_before_it_started_is_never_claimed(make_job):
    cancelled = make_job(user_id="alice", status=Status.CANCELLED, submitted_at=ago(100), completed_at=ago(50))
    waiting = make_job(user_id="bob", submitted_at=ago(10))

    job = job_claim_next(queue=None, worker="test:1")

    assert job.pk == waiting.pk
    assert job_claim_next(queue=None, worker="test:1") is None
    cancelled.refresh_from_db()
    assert (cancelled.status, cancelled.started_at, cancelled.worker) == (Status.CANCELLED, None, "")


def test_a_claimed_job_is_running_as_the_claiming_worker(make_job):
    job = make_job()

    claimed = job_claim_next(queue=None, worker="host:42 slot 0 cpu")

    row = VideoGenerationJob.objects.get(pk=job.pk)
    assert claimed.pk == job.pk
    assert (row.status, row.worker, row.progress) == (Status.RUNNING, "host:42 slot 0 cpu", 0)
    assert row.started_at is not None and row.heartbeat_at is not None


def test_a_worker_claims_only_the_models_its_queue_serves(make_job, settings):
    settings.VIDEOGEN_MODEL_QUEUES = {"tiny-random-wan": "wan"}
    wan = make_job(model_name="tiny-random-wan", submitted_at=ago(60))
    tiny = make_job(model_name="tiny-random", submitted_at=ago(1))

    assert job_claim_next(queue=None, worker="default:1").pk == tiny.pk
    assert job_claim_next(queue=None, worker="default:1") is None
    assert job_claim_next(queue="wan", worker="wan:1").pk == wan.pk
    assert job_claim_next(queue="other", worker="other:1") is None
