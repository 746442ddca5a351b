"""GET /job's queue_position, estimated_start_at and estimated_completion_at (jobs/scheduling/estimates.py)."""

import random
import threading
import time
import uuid
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone

import pytest
from django.db import DatabaseError
from django.utils import timezone

from jobs.scheduling import estimates
from jobs.scheduling.estimates import cluster_beat, estimated_duration, forget_snapshots
from jobs.models import Priority, QueueSnapshot, Status, VideoGenerationJob
from tests.support.jobs import FAST_JOB

ESTIMATE_FIELDS = ("queue_position", "estimated_start_at", "estimated_completion_at")

# tests/conftest.py starts each test without a snapshot, rebuilt inline (tests/support/estimates.py).


def ago(seconds: float):
    return timezone.now() - timedelta(seconds=seconds)


def at(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@pytest.fixture
def history(make_job):
    """
    Completed tiny-random jobs of FAST_JOB's size (2 steps) that each took
    `seconds`: 1 s to the first step, 3 s after the last, the rest the second step.
    Submitted `submitted_ago` seconds ago (default: 100 s before they ran),
    so "history" submits new work at a rate unless that is past
    estimates.ARRIVAL_WINDOW.
    """

    def make(seconds: float, count: int = 3, submitted_ago: float | None = None):
        for _ in range(count):
            make_job(user_id="history", status=Status.COMPLETED, started_at=ago(seconds + 100),
                     first_step_at=ago(seconds + 99), stepped_at=ago(103), completed_at=ago(100), current_step=2,
                     submitted_at=ago(submitted_ago or seconds + 200))

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


def alices_second_job_waits(api, make_job) -> float:
    """Seconds between the estimated starts of two jobs alice submits now, one worker alive."""
    cluster_beat("host:1", None, 1)
    first = make_job(user_id="alice", submitted_at=ago(20))
    second = make_job(user_id="alice", submitted_at=ago(10))
    starts = [at(standing(api, job)["estimated_start_at"]) for job in (first, second)]
    return (starts[1] - starts[0]).total_seconds()


def test_work_arriving_from_a_user_who_used_less_stretches_a_wait(api, make_job, history):
    # "history" submitted three 10 s jobs over the last 210 s: 30 s of work
    # per 210 s, and has used 30 s. alice has used 100 s (on another model,
    # so that its run leaves tiny-random's history alone): history's next
    # jobs will go before hers, taking 1/7 of the one worker.
    history(10)
    make_job(user_id="alice", model_name="tiny-random-wan", status=Status.COMPLETED, submitted_at=ago(1000),
             started_at=ago(900), first_step_at=ago(899), stepped_at=ago(803), completed_at=ago(800), current_step=2)

    # The first waits for nothing; the second for the first (10 s) and what arrives meanwhile.
    assert abs(alices_second_job_waits(api, make_job) - 10 / (1 - 30 / 210)) < 0.5


def test_a_start_is_the_likeliest_to_be_within_a_quarter_of_the_wait_not_the_mean(api, make_job, history):
    # As above, but history's three 10 s jobs came over the last 90 s: a
    # third of the worker, so alice's second job waits 15 s on average. That
    # mean is no wait that happens: most likely (61%) none of history's next
    # 10 s jobs comes first and it waits 10 s; one comes in 30% of cases
    # (20 s). So the estimate is the one within estimates.WITHIN of the 10 s
    # nearest the mean: 12.5 s.
    history(10, submitted_ago=90)
    make_job(user_id="alice", model_name="tiny-random-wan", status=Status.COMPLETED, submitted_at=ago(1000),
             started_at=ago(900), first_step_at=ago(899), stepped_at=ago(803), completed_at=ago(800), current_step=2)

    assert abs(alices_second_job_waits(api, make_job) - 10 * (1 + estimates.WITHIN)) < 0.5


def test_work_arriving_from_a_user_who_used_more_does_not(api, make_job, history):
    # bob (98 s used) and history (30 s) have both used more than alice (none): they go after her.
    history(10)
    make_job(user_id="bob", model_name="tiny-random-wan", status=Status.COMPLETED, submitted_at=ago(100),
             started_at=ago(99), first_step_at=ago(98), stepped_at=ago(2), completed_at=ago(1), current_step=2)

    assert abs(alices_second_job_waits(api, make_job) - 10) < 0.5


def test_two_live_workers_start_the_first_two_jobs_at_once(api, make_job, history):
    history(10)
    cluster_beat("host:1", None, 2)
    jobs = [make_job(user_id="alice", submitted_at=ago(30 - n)) for n in range(3)]

    starts = [at(standing(api, job)["estimated_start_at"]) for job in jobs]

    assert abs((starts[1] - starts[0]).total_seconds()) < 0.5
    assert abs((starts[2] - starts[0]).total_seconds() - 10) < 0.5


def test_steps_scale_the_denoising_and_frame_pixels_all_but_the_head(api, make_job, history):
    # 1 s to the first step, 6 s the second, 3 s after it; submitted long ago, so no new work arrives.
    history(10, submitted_ago=estimates.ARRIVAL_WINDOW + 300)
    cluster_beat("host:1", None, 1)
    longer = make_job(user_id="alice", submitted_at=ago(30), num_inference_steps=4)
    wider = make_job(user_id="alice", submitted_at=ago(20), width=128)
    after = make_job(user_id="alice", submitted_at=ago(10))

    starts = [at(standing(api, job)["estimated_start_at"]) for job in (longer, wider, after)]

    assert abs((starts[1] - starts[0]).total_seconds() - (1 + 3 + 6 * 3)) < 0.5
    assert abs((starts[2] - starts[1]).total_seconds() - (1 + 3 * 2 + 6 * 2)) < 0.5


def test_a_dead_clusters_beat_does_not_count(api, make_job, history):
    from jobs.models import ClusterBeat

    history(10)
    ClusterBeat.objects.create(name="gone:1", queue="", workers=1, seen_at=ago(3600))

    assert standing(api, make_job())["estimated_start_at"] is None


def test_a_running_job_is_estimated_from_its_own_step_rate_once_two_steps_are_done(api, make_job, history):
    history(1000)  # history says much slower steps: the job's own rate wins
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


def test_a_running_job_is_charged_to_its_user_until_its_estimated_end(api, make_job, history):
    history(100)  # 4 s besides the second step, 96 s that step
    cluster_beat("host:1", None, 1)
    make_job(user_id="alice", status=Status.RUNNING, started_at=ago(1), worker="w:1")
    alice = make_job(user_id="alice", submitted_at=ago(30))
    bob = make_job(user_id="bob", submitted_at=ago(10), num_inference_steps=1)  # 4 s
    bob_again = make_job(user_id="bob", submitted_at=ago(5))

    # By the next claim alice will have used 100 s (1 so far, 99 to go), not 1:
    # bob's second job goes before her next one.

    assert [standing(api, job)["queue_position"] for job in (bob, bob_again, alice)] == [1, 2, 3]


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

    # The job's own row and whether the deployment stored a newer snapshot, never the queue.
    with django_assert_max_num_queries(2):
        assert standing(api, waiting[-1])["queue_position"] == 30


def test_a_job_submitted_after_the_snapshot_gets_its_position(api, make_job):
    first = make_job(user_id="alice", submitted_at=ago(5))
    standing(api, first)

    later = make_job(user_id="bob")

    assert standing(api, later)["queue_position"] == 2


# --- New work, played forward without the database (estimates.play_forward) -------------------

NOW = datetime(2026, 1, 1, tzinfo=dt_timezone.utc)


def starts_after_now(waiting, used, rates, weights=None, workers=1) -> dict[str, float]:
    """Each waiting job's estimated start, in seconds from now, on idle workers (jobs of normal priority)."""
    waiting = [(*job, Priority.NORMAL) for job in waiting]
    standing = estimates.play_forward(NOW, waiting, used, weights or {}, [], workers, rates)
    return {job: (start - NOW).total_seconds() for job, (_, start) in standing.items()}


def test_new_work_of_a_user_who_used_less_goes_first_only_until_they_catch_up():
    alices = [("a1", "alice", 10.0), ("a2", "alice", 10.0)]
    # alice will have used 110 s when a2's turn comes; bob has used 95 s, so
    # 15 s of his new work go first, however fast it comes (0.8 s per second).
    assert starts_after_now(alices, {"alice": 100.0, "bob": 95.0}, {"bob": 0.8}) == {
        "a1": 0.0, "a2": pytest.approx(10 + 15)}
    # bob has used nothing: his new work could go first for 110 s, more than
    # it brings while a2 waits, which takes 4/5 of the worker: 10 / (1 - 0.8).
    assert starts_after_now(alices, {"alice": 100.0, "bob": 0.0}, {"bob": 0.8})["a2"] == pytest.approx(50)


def test_new_work_queues_behind_its_users_waiting_jobs():
    # bob's waiting 50 s job runs first and takes him past alice's 110 s: his new work goes after hers.
    waiting = [("b1", "bob", 50.0), ("a1", "alice", 10.0), ("a2", "alice", 10.0)]

    starts = starts_after_now(waiting, {"alice": 100.0, "bob": 95.0}, {"bob": 0.8})

    assert starts == {"b1": 0.0, "a1": pytest.approx(50), "a2": pytest.approx(60)}


def test_a_weighted_users_new_work_catches_up_by_their_weight():
    # bob weighs 2: 190 s used is 95 weighted, and each second of his work
    # counts half, so 2 x (110 - 95) = 30 s of it go before alice's a2.
    starts = starts_after_now([("a1", "alice", 10.0), ("a2", "alice", 10.0)], {"alice": 100.0, "bob": 190.0},
                              {"bob": 0.8}, weights={"bob": 2.0})

    assert starts["a2"] == pytest.approx(10 + 30)


def test_new_work_faster_than_the_workers_still_ends_at_the_catch_up():
    # 2 s of work per second on one worker: the wait would have no end but
    # for the catch-up (bob's 110 s); between the two, at most
    # MAX_ARRIVING_SHARE of the worker goes to new work.
    starts = starts_after_now([("a1", "alice", 10.0), ("a2", "alice", 10.0)], {"alice": 100.0}, {"bob": 2.0})

    assert starts["a2"] == pytest.approx(10 + 110)


def test_new_work_is_spread_over_the_workers():
    # Two workers: a3 waits for a1 (10 s); bob's 5 s of catch-up takes half as long on two.
    waiting = [("a1", "alice", 10.0), ("a2", "alice", 10.0), ("a3", "alice", 10.0)]

    starts = starts_after_now(waiting, {"alice": 100.0, "bob": 115.0}, {"bob": 5.0}, workers=2)

    assert starts == {"a1": 0.0, "a2": 0.0, "a3": pytest.approx(10 + 5 / 2)}


def test_each_wait_is_the_fixed_point_of_its_new_work_solved_for_many_jobs_at_once():
    # 1,100 jobs (more than one block of estimates.WAITS_PER_BLOCK) and 40
    # users at random: each wait W = turn + sum(min(rate x W, cap)) over the
    # workers, as solved job by job, where new work never takes more than
    # MAX_ARRIVING_SHARE of them.
    rng = random.Random(4)
    users = {f"u{n}": rng.uniform(0, 0.02) for n in range(40)}
    finals = {user: rng.uniform(0, 500) for user in users}
    weights = {user: rng.choice([1.0, 2.0]) for user in users}
    arrivals = estimates.Arrivals.of(users, finals, weights, workers=2)
    turns = sorted(rng.uniform(0, 3000) for _ in range(1100))
    shares = sorted(rng.uniform(0, 600) for _ in range(1100))

    waits = arrivals.waits(turns, shares)

    assert waits == pytest.approx([arrivals.waits([turn], [share])[0] for turn, share in zip(turns, shares)])
    for wait, turn, share in zip(waits, turns, shares):
        new_work = sum(min(rate * wait, (share - finals[user]) * weights[user])
                       for user, rate in users.items() if finals[user] < share)
        assert wait == pytest.approx(turn + new_work / 2)


def test_with_many_new_jobs_expected_the_start_is_the_expected_one():
    # 20 of 10 s expected to go first, give or take 4.5: a wait of 800 s,
    # give or take 45 s, so the mean is itself within a quarter of most outcomes.
    assert estimates.likeliest_waits([600.0], [800.0], new_job=10.0, workers=1) == pytest.approx([800.0])


# --- The duration model ---------------------------------------------------------------


def unsaved(**fields):
    from jobs.models import VideoGenerationJob

    return VideoGenerationJob(model_name="tiny-random", **{**FAST_JOB, **fields})


def test_a_duration_is_a_fixed_head_plus_steps_and_tail_per_frame_pixel(make_job):
    # 2 s to the first step, 4 steps of 0.5 s after it, 3 s after the last: 7 s.
    for _ in range(3):
        make_job(status=Status.COMPLETED, num_inference_steps=5, current_step=5, started_at=ago(107),
                 first_step_at=ago(105), stepped_at=ago(103), completed_at=ago(100))

    assert estimated_duration(unsaved(num_inference_steps=5)) == pytest.approx(2 + 3 + 4 * 0.5, abs=0.01)
    assert estimated_duration(unsaved(num_inference_steps=11)) == pytest.approx(5 + 10 * 0.5, abs=0.01)
    # Four times the pixels, twice the frames: steps and the time after them 8 times as long, the head the same.
    bigger = unsaved(num_inference_steps=5, width=128, height=128, num_frames=18)
    assert estimated_duration(bigger) == pytest.approx(2 + 3 * 8 + 4 * 0.5 * 8, abs=0.01)


def test_one_slow_run_in_ten_does_not_move_the_estimate(make_job):
    # A cold start: 60 s of model load before the first step, once.
    for head in [1.0] * 9 + [60.0]:
        make_job(status=Status.COMPLETED, num_inference_steps=2, current_step=2, started_at=ago(104 + head),
                 first_step_at=ago(104), stepped_at=ago(103), completed_at=ago(100))

    assert estimated_duration(unsaved()) == pytest.approx(1 + 1 + 3, abs=0.01)


def test_the_fixed_and_step_parts_are_means_not_medians(make_job):
    # A wait is a sum of durations: runs of 3, 3 and 9 s take 15 s, not 3 x the median (9 s).
    for tail in (1.0, 1.0, 7.0):
        make_job(status=Status.COMPLETED, num_inference_steps=2, current_step=2, started_at=ago(102 + tail),
                 first_step_at=ago(101 + tail), stepped_at=ago(100 + tail), completed_at=ago(100))

    assert estimated_duration(unsaved()) == pytest.approx(1 + 1 + 3, abs=0.01)


def test_no_history_no_duration(make_job):
    make_job(status=Status.COMPLETED, started_at=ago(10), completed_at=ago(1))  # never stepped (old rows)

    assert estimated_duration(unsaved()) is None


# --- Stale-while-revalidate -------------------------------------------------------------


class FakeSnapshots:
    """
    Where a process gets a new snapshot from (estimates._fresh_snapshot:
    the deployment's stored one or a build), stood in for: counts builds;
    each build can be held until released. A background thread may not
    use the test's database.
    """

    def __init__(self, job_ids):
        self.job_ids = job_ids
        self.builds = 0
        self.hold = threading.Event()
        self.hold.set()
        self.started = threading.Event()

    def __call__(self, queue, newer_than=None, *, wait=False):
        self.builds += 1
        self.started.set()
        assert self.hold.wait(10)
        snapshot = estimates.Snapshot(timezone.now(), time.monotonic())
        for position, job_id in enumerate(self.job_ids(), start=1):
            snapshot.standing[job_id] = (position + 10 * (self.builds - 1), None)
        return snapshot


@pytest.fixture
def in_background(monkeypatch):
    monkeypatch.setattr(estimates, "rebuilds", estimates.Rebuilds())
    monkeypatch.setattr(estimates, "MIN_REBUILD_INTERVAL", 0.0)
    yield
    estimates.wait_for_rebuilds(10)


def test_a_poll_during_a_rebuild_is_answered_at_once_from_the_previous_snapshot(in_background, make_job,
                                                                               monkeypatch):
    job = make_job()
    fake = FakeSnapshots(lambda: [job.id])
    monkeypatch.setattr(estimates, "_fresh_snapshot", fake)
    assert estimates.queue_standing(job) == (1, None)  # no snapshot yet: built inline
    monkeypatch.setattr(estimates, "SNAPSHOT_TTL", 0.0)
    fake.hold.clear()

    started = time.monotonic()
    answers = [estimates.queue_standing(job) for _ in range(20)]

    assert time.monotonic() - started < 1
    assert answers == [(1, None)] * 20
    assert fake.started.wait(5)
    fake.hold.set()
    estimates.wait_for_rebuilds(5)
    assert fake.builds == 2  # one rebuild for twenty stale polls
    assert estimates.queue_standing(job) == (11, None)


def test_a_job_newer_than_the_snapshot_is_unknown_until_one_background_rebuild(in_background, make_job,
                                                                              monkeypatch):
    first = make_job(submitted_at=ago(10))
    known = [first.id]
    fake = FakeSnapshots(lambda: known)
    monkeypatch.setattr(estimates, "_fresh_snapshot", fake)
    estimates.queue_standing(first)
    fake.hold.clear()
    new = make_job()
    known.append(new.id)

    answers = [estimates.queue_standing(new) for _ in range(5)]

    assert answers == [(None, None)] * 5
    fake.hold.set()
    estimates.wait_for_rebuilds(5)
    assert fake.builds == 2
    assert estimates.queue_standing(new) == (12, None)


def test_without_a_snapshot_concurrent_polls_build_one_inline(in_background, make_job, monkeypatch):
    job = make_job()
    fake = FakeSnapshots(lambda: [job.id])
    monkeypatch.setattr(estimates, "_fresh_snapshot", fake)
    fake.hold.clear()
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(estimates.queue_standing(job))) for _ in range(4)]
    for thread in threads:
        thread.start()

    assert fake.started.wait(5)
    fake.hold.set()
    for thread in threads:
        thread.join(5)

    assert answers == [(1, None)] * 4
    assert fake.builds == 1


def test_a_stale_poll_whose_snapshot_was_forgotten_meanwhile_builds_one_inline(in_background, make_job,
                                                                              monkeypatch):
    job = make_job()
    fake = FakeSnapshots(lambda: [job.id])
    monkeypatch.setattr(estimates, "_fresh_snapshot", fake)
    queue = estimates.queue_for_model(job.model_name)

    assert estimates.rebuilds.stale(queue, job).standing[job.id] == (1, None)
    assert fake.builds == 1


def test_the_rebuild_thread_closes_its_database_connection(in_background, make_job, monkeypatch):
    job = make_job()
    monkeypatch.setattr(estimates, "_fresh_snapshot", FakeSnapshots(lambda: [job.id]))
    estimates.queue_standing(job)
    closed_in = []
    monkeypatch.setattr(estimates, "connection", type("Connection", (), {
        "close": staticmethod(lambda: closed_in.append(threading.current_thread().name)),
    }))
    monkeypatch.setattr(estimates, "SNAPSHOT_TTL", 0.0)

    estimates.queue_standing(job)
    estimates.wait_for_rebuilds(5)

    assert closed_in == ["queue snapshot None"]


def test_a_slow_build_stretches_the_time_to_the_next_one(in_background, make_job, monkeypatch):
    job = make_job()
    fake = FakeSnapshots(lambda: [job.id])
    monkeypatch.setattr(estimates, "_fresh_snapshot", fake)
    estimates.queue_standing(job)
    snapshot = estimates._snapshots[None]
    snapshot.build_seconds = 1.0  # a rebuild at most every 20 s (5% of the time)

    snapshot.taken_monotonic -= 6  # past SNAPSHOT_TTL (5 s)
    estimates.queue_standing(job)
    estimates.wait_for_rebuilds(5)
    assert fake.builds == 1

    snapshot.taken_monotonic -= 15
    estimates.queue_standing(job)
    estimates.wait_for_rebuilds(5)
    assert fake.builds == 2


# --- One snapshot for the deployment ---------------------------------------------------------


@pytest.fixture
def builds(monkeypatch):
    """Every take_snapshot() call, in order (the real one runs)."""
    calls = []
    real = estimates.take_snapshot

    def counted(queue):
        calls.append(queue)
        return real(queue)

    monkeypatch.setattr(estimates, "take_snapshot", counted)
    return calls


def another_process():
    """This process, as a second process of the deployment would start: no snapshot of its own."""
    estimates._snapshots.clear()


def test_a_process_loads_the_snapshot_another_process_stored_instead_of_building_one(api, make_job, history,
                                                                                     builds):
    history(10)
    cluster_beat("host:1", None, 1)
    jobs = [make_job(user_id=user, submitted_at=ago(30 - n)) for n, user in enumerate(["alice", "bob", "alice"])]
    first = [standing(api, job) for job in jobs]
    another_process()

    second = [standing(api, job) for job in jobs]

    assert second == first
    assert [position["queue_position"] for position in second] == [1, 2, 3]
    assert all(position["estimated_start_at"] for position in second)
    assert builds == [None]


def test_a_stored_snapshot_past_its_age_is_built_again(api, make_job, builds):
    job = make_job()
    standing(api, job)
    QueueSnapshot.objects.update(taken_at=ago(estimates.SNAPSHOT_TTL + 1))
    another_process()

    assert standing(api, job)["queue_position"] == 1
    assert builds == [None, None]


def test_a_job_newer_than_the_stored_snapshot_is_built_for(api, make_job, builds):
    standing(api, make_job(user_id="alice", submitted_at=ago(10)))
    newer = make_job(user_id="bob")
    another_process()

    assert standing(api, newer)["queue_position"] == 2
    assert builds == [None, None]


def test_each_queue_has_its_own_stored_snapshot(api, make_job, builds, settings):
    settings.VIDEOGEN_MODEL_QUEUES = {"tiny-random-wan": "wan"}
    tiny, wan = make_job(), make_job(model_name="tiny-random-wan")
    standing(api, tiny), standing(api, wan)
    another_process()

    assert standing(api, tiny)["queue_position"] == 1 and standing(api, wan)["queue_position"] == 1
    assert sorted(QueueSnapshot.objects.values_list("queue", flat=True)) == [estimates.snapshot_key(None), estimates.snapshot_key("wan")]
    assert sorted(builds, key=str) == [None, "wan"]


def test_a_stored_snapshot_keeps_every_position_and_start_to_the_microsecond():
    start = datetime(2026, 11, 26, 14, 30, 1, 123457, tzinfo=dt_timezone.utc)
    standing_ = {uuid.uuid4(): (1, start), uuid.uuid4(): (2, None), uuid.uuid4(): (30_000, start + timedelta(days=3))}

    decoded = estimates.decode_standing(memoryview(estimates.encode_standing(standing_)))

    assert decoded == standing_
    assert [decoded.get(job_id) for job_id in standing_] == list(standing_.values())
    assert uuid.uuid4() not in decoded and decoded.get(uuid.uuid4(), (None, None)) == (None, None)


def test_an_older_snapshot_does_not_replace_a_newer_stored_one(db):
    newer = estimates.Snapshot(timezone.now(), time.monotonic(), standing={uuid.uuid4(): (1, None)})
    older = estimates.Snapshot(newer.taken_at - timedelta(seconds=1), time.monotonic(), standing={})

    for snapshot in (newer, older):
        assert estimates._claim_build(estimates.snapshot_key(None), timezone.now())
        estimates._store(estimates.snapshot_key(None), snapshot)

    stored = QueueSnapshot.objects.get(queue=estimates.snapshot_key(None))
    assert stored.taken_at == newer.taken_at and stored.building_until is None
    assert estimates.decode_standing(stored.standing) == newer.standing


def another_process_is_building(standing=None, taken_at=None) -> None:
    """The queue's row as while another process builds: its claim for BUILD_LEASE, and what it stored before."""
    snapshot = estimates.Snapshot(taken_at or ago(600), 0.0, standing=standing or {})
    QueueSnapshot.objects.create(queue=estimates.snapshot_key(None), taken_at=snapshot.taken_at, build_seconds=0.1,
                                 standing=estimates.encode_standing(snapshot.standing),
                                 building_until=timezone.now() + timedelta(seconds=estimates.BUILD_LEASE))


def test_while_another_process_builds_a_rebuild_waits_for_its_snapshot(transactional_db, builds):
    another_process_is_building()
    got = []
    waiting = threading.Thread(target=lambda: got.append(estimates._fresh_snapshot(None, ago(1), wait=True)))
    waiting.start()
    time.sleep(3 * estimates.BUILD_POLL)
    assert got == [] and builds == []

    # The other process stores what it built.
    job_id, start = uuid.uuid4(), timezone.now() + timedelta(seconds=30)
    QueueSnapshot.objects.update(taken_at=timezone.now(), standing=estimates.encode_standing({job_id: (1, start)}),
                                 building_until=None)
    waiting.join(5)

    assert got[0].standing == {job_id: (1, start)}
    assert builds == []


def test_a_claim_past_its_lease_is_taken_over(db, builds):
    another_process_is_building()
    QueueSnapshot.objects.update(building_until=ago(1))  # it died building

    snapshot = estimates._fresh_snapshot(None, ago(1), wait=True)

    assert builds == [None]
    stored = QueueSnapshot.objects.get(queue=estimates.snapshot_key(None))
    assert (stored.taken_at, stored.building_until) == (snapshot.taken_at, None)


def test_a_rebuild_waits_no_longer_than_a_lease_and_keeps_its_snapshot(db, builds, monkeypatch):
    another_process_is_building()
    # A claim for longer than this process's lease (another host's clock ahead, say).
    monkeypatch.setattr(estimates, "BUILD_LEASE", 0.5)

    assert estimates._fresh_snapshot(None, ago(1), wait=True) is None
    assert builds == []


def test_a_first_snapshot_does_not_wait_for_another_process(db, make_job, builds, monkeypatch):
    monkeypatch.setattr(estimates, "_forgotten_at", ago(3600))  # what was stored before this test counts
    job = make_job(submitted_at=ago(700))
    # The stored snapshot is older than SNAPSHOT_TTL, but holds the job: loaded, not waited for.
    another_process_is_building({job.id: (1, None)}, taken_at=ago(60))
    assert estimates._fresh_snapshot(None, ago(700), wait=False).standing == {job.id: (1, None)}
    # A newer job than it: built here, and kept to this process (the other's claim stands).
    newer = make_job()
    assert estimates._fresh_snapshot(None, ago(1), wait=False).standing.keys() == {job.id, newer.id}
    assert builds == [None]
    assert QueueSnapshot.objects.get(queue=estimates.snapshot_key(None)).building_until > timezone.now()


def test_a_build_that_fails_ends_its_claim(db, monkeypatch):
    def failing(queue):
        raise DatabaseError("the queue could not be read")

    monkeypatch.setattr(estimates, "take_snapshot", failing)

    with pytest.raises(DatabaseError):
        estimates._fresh_snapshot(None, ago(1), wait=True)
    assert QueueSnapshot.objects.get(queue=estimates.snapshot_key(None)).building_until is None



def test_a_newcomer_who_goes_first_does_not_push_a_shown_job_back(api, make_job):
    alice = [make_job(user_id="alice", submitted_at=ago(20 - n)) for n in range(3)]
    assert standing(api, alice[-1])["queue_position"] == 3
    newcomer = make_job(user_id="bob")  # used less worker time: fair share lets it go first

    assert standing(api, newcomer)["queue_position"] in (1, 2, 3)
    assert standing(api, alice[-1])["queue_position"] == 3


def test_every_process_answers_from_the_newest_stored_snapshot(api, make_job):
    first, second = make_job(submitted_at=ago(10)), make_job(submitted_at=ago(5))
    assert standing(api, second)["queue_position"] == 2
    mine = estimates._snapshots[None]
    VideoGenerationJob.objects.filter(pk=first.pk).update(status=Status.RUNNING)
    QueueSnapshot.objects.update(taken_at=ago(estimates.SNAPSHOT_TTL + 1))
    another_process()
    assert standing(api, second)["queue_position"] == 1  # that process built and stored a newer one
    estimates._snapshots[None] = mine  # this process's, older but not past its age

    assert standing(api, second)["queue_position"] == 1
