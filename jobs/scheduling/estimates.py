"""
Where a job stands: a pending job's queue position and estimated start, a
running job's estimated completion.

Durations. A job's run is three parts, learned per model from its last
HISTORY_JOBS completed jobs, which all carry started_at, first_step_at
(the first step done), stepped_at (the last step done) and current_step:

    duration = head + frames x width x height x (tail_unit + step_unit x (steps - 1))

- head, fixed: started_at -> first_step_at (model load, prompt encoding,
  the first step).
- tail_unit: stepped_at -> completed_at (VAE decode, encode, store) per
  frame x pixel. On tiny-random this part is most of a job and grows with
  size, not steps, while the head stays about the same (bench/RESULTS.md,
  estimates).
- step_unit: (stepped_at - first_step_at) / (current_step - 1), per
  frame x pixel.

Each is a trimmed mean (the top and bottom 10% dropped), not a median: a
wait is the sum of the durations ahead, and the sum of n durations is n x
their mean; run times are right-skewed, so n x the median under-estimates
every wait (measured in bench/RESULTS.md). Trimming keeps one cold start
(a model load, several times a normal job) from moving it.

Jobs not submitted yet. Fair share lets a later job of a user who has used
less worker time go first, so a wait is also made of work that arrives
while it lasts. Each user's recent rate of work (what they submitted over
the last ARRIVAL_WINDOW, in estimated seconds per second) stands in for
what they will submit next, and it goes before a job only until its user
catches up: a user's new work queues behind their waiting jobs, and goes
first while their weighted worker time (with those jobs) is below the
job's user's when the job's turn comes (Arrivals). The estimate before
this one let every user who had used less stretch the whole wait, however
little they had to catch up; the catch-up came closer in both a simulated
queue (bench/eta_model.py) and the service (bench/RESULTS.md, estimates). What
is left is which arrivals come, which no estimate can know; so the start
answered is not the expected one when few new jobs are expected to go
first, but the one likeliest to be within WITHIN of the actual start
(likeliest_waits): with none or one coming, the mean is often a wait that
does not happen.

Live workers per queue come from the qcluster parents' beats
(ClusterBeat). Without history, or with no live worker, an estimate is
None: never a guess presented as fact.

Polls must stay cheap: each web process keeps one snapshot per queue (the
whole order, computed by playing the fair policy forward), so a poll is a
dictionary look-up. The snapshot is stale-while-revalidate:

- older than SNAPSHOT_TTL seconds, it is rebuilt in a background thread,
  one per queue per process at a time, while polls go on being answered
  from it;
- a pending job newer than the snapshot is not in it: the poll answers
  null position and start (unknown, not guessed) and asks for a
  background rebuild, which starts no sooner than MIN_REBUILD_INTERVAL
  after the snapshot was taken. So a burst of submits costs one rebuild a
  second per process, not one per submit, and a new job's estimate appears
  within about a second;
- both intervals stretch to 1/REBUILD_SHARE times the last build's
  CPU time, so rebuilds never take more than 5% of a process's CPU: a
  build of 10,000 pending jobs takes 0.07-0.3 s (PostgreSQL, loaded box),
  so such a queue is re-read every 5-6 s; one that takes a second to read,
  every 20 s;
- a process with no snapshot yet gets one inline, once (other threads
  wait for it).

One build serves the deployment. Whenever a process needs a newer
snapshot (for either reason above, or its first), it first reads the one
the deployment stored (QueueSnapshot, one row per queue): if that was
taken after the process's own, after the polled job entered the queue if
its own lacks it, and less than SNAPSHOT_TTL ago, it loads that instead of
reading the whole queue (a 10,000-job snapshot is 280 KB). Otherwise it
claims the build (building_until, for BUILD_LEASE at most: a conditional
UPDATE, so one process wins), builds, and stores the snapshot for the
others. A process that finds the build claimed waits for it in its
background thread; its first snapshot does not wait: it loads the stored
one if that holds the polled job, whatever its age, else builds its own
and keeps it. So one process per deployment reads the queue per
SNAPSHOT_TTL, and all answer from the same order: each poll of a pending
job first asks whether a newer one was stored (_newest_stored), so polls
that reach different processes never go back to an older order. A build
places no job behind where the stored order before it did
(no_worse_than), and a submit starts the rebuild at once
(job_entered_queue).

How a stale snapshot is rebuilt is one object, `rebuilds` (Rebuilds: in
the background). The tests swap in one that builds in the polling thread
(tests/support/estimates.py): a background thread has its own database
connection, and cannot see a test's uncommitted rows.
"""

import heapq
import logging
import os
import struct
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone as dt_timezone
from uuid import UUID

from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import Count, F, FloatField, Min, Q, Sum
from django.db.models.functions import Cast
from django.utils import timezone

from jobs.scheduling.deployment import queue_for_model
from jobs.models import ClusterBeat, QueueSnapshot, Status, VideoGenerationJob, this_deployment
from jobs.scheduling.queue import fair_key, live_workers, pending_for, served_by, user_weights, worker_time_used

logger = logging.getLogger(__name__)

HISTORY_JOBS = 20
HISTORY_TTL = 10.0
SNAPSHOT_TTL = 5.0
MIN_REBUILD_INTERVAL = 0.5
# At most this share of a process's time goes to rebuilding a queue's snapshot.
REBUILD_SHARE = 0.05
# Users' submissions over this many seconds give their rate of new work.
ARRIVAL_WINDOW = 600.0
# A rate is over at least this many seconds: one submit just now is not a flood.
ARRIVAL_MIN_SPAN = 10.0
# Expected arrivals may take at most this share of the workers: past it a
# wait would grow without bound, which no queue that drains has.
MAX_ARRIVING_SHARE = 0.9
# A process building a queue's snapshot for the deployment holds its claim this
# long at most (one that died mid-build is taken over after it; hosts' clocks
# need only agree within seconds); the others look for the stored snapshot
# every BUILD_POLL seconds meanwhile.
BUILD_LEASE = 30.0
BUILD_POLL = 0.2
# An estimated start aims to be within this share of the actual wait (likeliest_waits): the goal in bench/RESULTS.md.
WITHIN = 0.25
# ... and moves the expected start no further than to be at most this much less likely within it than the likeliest.
LIKELIER = 0.05
# likeliest_waits: Poisson terms for up to this many new jobs expected to go first; the mean beyond.
POISSON_MAX_MEAN = 30.0
POISSON_TERMS = 72
# Arrivals.waits solves this many jobs' waits at a time (jobs x users arrays).
WAITS_PER_BLOCK = 512


def frame_pixels(frames: int, width: int, height: int) -> int:
    return frames * width * height


# --- Live workers ----------------------------------------------------------------


def cluster_beat(name: str, queue: str | None, workers: int, processes: list[dict] | None = None) -> None:
    """A qcluster parent says it is alive: how many worker processes (and which) serve which queue."""
    ClusterBeat.objects.update_or_create(
        name=name,
        defaults={"host": name.rsplit(":", 1)[0], "deployment": this_deployment(), "queue": queue or "",
                  "workers": workers, "processes": processes or [], "seen_at": timezone.now()},
    )


def cluster_gone(name: str) -> None:
    ClusterBeat.objects.filter(name=name).delete()


# --- History ---------------------------------------------------------------------


def trimmed_mean(values: list[float], trim: float = 0.1) -> float | None:
    """The mean without the top and bottom `trim` of the values (none dropped below 10 values)."""
    if not values:
        return None
    values = sorted(values)
    cut = int(len(values) * trim)
    kept = values[cut:len(values) - cut]
    return sum(kept) / len(kept)


@dataclass(frozen=True)
class History:
    # Seconds from the claim to the first step done.
    head: float | None
    # Seconds of one denoising step, per frame x pixel.
    step_unit: float | None
    # Seconds from the last step to completion, per frame x pixel.
    tail_unit: float | None

    def duration(self, frames: int, width: int, height: int, steps: int) -> float | None:
        units = frame_pixels(frames, width, height)
        return self.work(1, units, units * max(steps - 1, 0))

    def work(self, jobs: float, frame_pixels_sum: float, step_frame_pixels_sum: float) -> float | None:
        """
        Seconds for `jobs` runs of these frame x pixel totals (and, for the
        steps after each first, step_frame_pixels_sum); None when unknown.
        """
        if self.head is None or self.tail_unit is None or (self.step_unit is None and step_frame_pixels_sum > 0):
            return None
        return jobs * self.head + self.tail_unit * frame_pixels_sum + (self.step_unit or 0.0) * step_frame_pixels_sum

    def tail(self, frames: int, width: int, height: int) -> float | None:
        return None if self.tail_unit is None else self.tail_unit * frame_pixels(frames, width, height)


_history: dict[str, tuple[float, History]] = {}
_lock = threading.Lock()


def model_history(model_name: str, *, fresh: bool = False) -> History:
    """The model's History, from this process's cache (HISTORY_TTL) unless `fresh`."""
    with _lock:
        cached = _history.get(model_name)
        if not fresh and cached is not None and time.monotonic() - cached[0] < HISTORY_TTL:
            return cached[1]
    recent = (
        VideoGenerationJob.objects.filter(
            status=Status.COMPLETED, model_name=model_name, started_at__isnull=False,
            first_step_at__isnull=False, stepped_at__isnull=False,
        )
        .order_by("-completed_at")
        .values_list("num_frames", "width", "height", "current_step", "started_at", "first_step_at", "stepped_at",
                     "completed_at")
        [:HISTORY_JOBS]
    )
    heads, steps, tails = [], [], []
    for frames, width, height, steps_done, started, first_step, stepped, completed in recent:
        units = max(frame_pixels(frames, width, height), 1)
        heads.append(max((first_step - started).total_seconds(), 0.0))
        tails.append(max((completed - stepped).total_seconds(), 0.0) / units)
        if steps_done >= 2:
            steps.append(max((stepped - first_step).total_seconds(), 0.0) / (steps_done - 1) / units)
    history = History(trimmed_mean(heads), trimmed_mean(steps), trimmed_mean(tails))
    with _lock:
        _history[model_name] = (time.monotonic(), history)
    return history


def estimated_duration(job: VideoGenerationJob) -> float | None:
    return model_history(job.model_name).duration(job.num_frames, job.width, job.height, job.num_inference_steps)


def estimated_completion_at(job: VideoGenerationJob) -> datetime | None:
    """
    A running job's end: from its own step rate once two steps are done
    (plus the model's usual time after the last step), before that from
    history.
    """
    if job.status != Status.RUNNING or job.started_at is None:
        return None
    if job.current_step >= 2 and job.first_step_at and job.stepped_at and job.stepped_at > job.first_step_at:
        tail = model_history(job.model_name).tail(job.num_frames, job.width, job.height)
        if tail is None:
            return None
        per_step = (job.stepped_at - job.first_step_at).total_seconds() / (job.current_step - 1)
        remaining = per_step * max(job.num_inference_steps - job.current_step, 0)
        return job.stepped_at + timedelta(seconds=remaining + tail)
    duration = estimated_duration(job)
    return None if duration is None else job.started_at + timedelta(seconds=duration)


def arrival_rates(queue: str | None, now: datetime,
                  histories: dict[str, History]) -> tuple[dict[str, float], float | None]:
    """
    Seconds of work per second each user submitted over the last
    ARRIVAL_WINDOW, from their jobs' sizes and each model's history (a
    model without history adds nothing), and the mean seconds of one of
    those jobs (None without any): summed in the database.
    """
    since = now - timedelta(seconds=ARRIVAL_WINDOW)
    units = Cast("num_frames", FloatField()) * Cast("width", FloatField()) * Cast("height", FloatField())
    rows = list(
        VideoGenerationJob.objects.filter(submitted_at__gte=since, submitted_at__lte=now).filter(served_by(queue))
        # A job cancelled before it ran was never work.
        .exclude(status=Status.CANCELLED, started_at__isnull=True)
        .order_by().values_list("user_id", "model_name")
        .annotate(jobs=Count("id"), units=Sum(units), step_units=Sum(units * (F("num_inference_steps") - 1)),
                  first=Min("submitted_at"))
    )
    if not rows:
        return {}, None
    span = max(min(ARRIVAL_WINDOW, (now - min(row[5] for row in rows)).total_seconds()), ARRIVAL_MIN_SPAN)
    work: dict[str, float] = {}
    counted = 0
    for user_id, model_name, jobs, frame_pixels_sum, step_units, _ in rows:
        if model_name not in histories:
            histories[model_name] = model_history(model_name)
        seconds = histories[model_name].work(jobs, frame_pixels_sum or 0.0, step_units or 0.0)
        if seconds is not None:
            work[user_id] = work.get(user_id, 0.0) + seconds
            counted += jobs
    rates = {user_id: seconds / span for user_id, seconds in work.items()}
    return rates, (sum(work.values()) / counted if counted else None)


@dataclass(frozen=True)
class Arrivals:
    """
    Work not submitted yet, as fair share will place it: each user's rate
    of new work (seconds per second), and how much worker time, divided by
    their weight, each will have used once their waiting jobs have run (new
    work queues behind them). A job whose turn comes when its user's
    weighted time is `share` is overtaken by another user's new work only
    until that user's own weighted time reaches `share`: no more than
    (share - theirs) x their weight seconds of it.
    """

    # (weighted time once their waiting jobs have run, weight, rate), by the first.
    users: list[tuple[float, float, float]]
    workers: int

    @classmethod
    def of(cls, rates: dict[str, float], final_shares: dict[str, float], weights: dict[str, float],
           workers: int) -> "Arrivals":
        users = sorted((final_shares.get(user, 0.0), weights.get(user, 1.0), rate)
                       for user, rate in rates.items() if rate > 0)
        return cls(users, workers)

    def waits(self, turns: list[float], shares: list[float]) -> list[float]:
        """
        Seconds until each job starts that the replay starts in `turns`
        seconds, with its user's weighted time then at `shares`:
        W = turn + the new work that goes first, sum(min(rate x W, cap)) over
        the workers. Each user's term stops growing at W = cap / rate;
        between those points, users whose new work would go first take at
        most MAX_ARRIVING_SHARE of the workers.

        Solved for many jobs at once, with arrays: a queue of 10,000 jobs and
        hundreds of users submitting is millions of terms (a Python loop
        over them took a second). It starts from the wait with no user
        capped, the longest; each step caps the users whose cap that wait
        passes and solves again, until no user's status changes.
        """
        if not self.users or not turns:
            return list(turns)
        import numpy  # here only: nothing else of a web process needs it

        finals, weights, rates = (numpy.array(column) for column in zip(*self.users))
        waits: list[float] = []
        for begin in range(0, len(turns), WAITS_PER_BLOCK):
            turn = numpy.array(turns[begin:begin + WAITS_PER_BLOCK])
            share = numpy.array(shares[begin:begin + WAITS_PER_BLOCK])
            # Only the users whose new work goes before some job of the block.
            considered = int(numpy.searchsorted(finals, share.max(), side="left"))
            if considered == 0:
                waits.extend(turn.tolist())
                continue
            gap = share[:, None] - finals[:considered]
            ahead = gap > 0
            rate = numpy.where(ahead, rates[:considered], 0.0)
            # Where a user's new work stops going first: cap / rate, the cap being gap x weight.
            until = numpy.divide(gap * weights[:considered], rate, out=numpy.full(gap.shape, numpy.inf), where=ahead)
            uncapped_slope = rate.sum(axis=1) / self.workers
            capped = numpy.zeros(gap.shape, dtype=bool)
            slope, fixed = uncapped_slope, 0.0
            for _ in range(considered + 1):
                wait = (turn + fixed) / (1.0 - numpy.minimum(slope, MAX_ARRIVING_SHARE))
                now_capped = until <= wait[:, None]
                if numpy.array_equal(now_capped, capped):
                    break
                capped = now_capped
                slope = uncapped_slope - (capped @ rates[:considered]) / self.workers
                fixed = ((gap * capped) @ weights[:considered]) / self.workers
            waits.extend(numpy.maximum(wait, 0.0).tolist())
        return waits


def likeliest_waits(turns: list[float], expected: list[float], new_job: float, workers: int) -> list[float]:
    """
    The wait to answer for each job, from its turn (the wait with no new
    work) and its expected wait (Arrivals.waits): the expected one unless
    another is likelier, by more than LIKELIER, to be within WITHIN of the
    actual wait; then the nearest to it that is nearly as likely. Which new
    jobs come first is chance: taken to be a Poisson number of them, each
    of `new_job` seconds spread over the workers, as many on average as the
    expected wait holds. The waits that happen are then the turn, the turn
    and one job, ... With few expected these are far apart beside the wait
    (a job two turns back waits two, three or four as none, one or two
    come), and the mean can be within WITHIN of none of them; with many the
    mean is within it of most, and stays.
    """
    import numpy  # as in Arrivals.waits

    likeliest: list[float] = []
    for begin in range(0, len(turns), WAITS_PER_BLOCK):
        turn = numpy.array(turns[begin:begin + WAITS_PER_BLOCK], dtype=float)
        mean = numpy.array(expected[begin:begin + WAITS_PER_BLOCK], dtype=float)
        step = new_job / workers
        count = numpy.maximum(mean - turn, 0.0) / step  # new jobs expected to go first
        # With many expected the spread is small beside the wait: the mean is within WITHIN of most outcomes.
        few = (count > 0) & (count <= POISSON_MAX_MEAN)
        if few.any():
            mean[few] = _likeliest(turn[few], mean[few], count[few], step)
        likeliest.extend(mean.tolist())
    return likeliest


def _likeliest(turn, mean, count, step):
    """likeliest_waits for jobs with few new jobs expected, as numpy arrays."""
    import numpy

    n = numpy.arange(POISSON_TERMS, dtype=float)
    log_factorial = numpy.cumsum(numpy.log(numpy.maximum(n, 1.0)))
    first, centre = turn[:, None], mean[:, None]
    probability = numpy.exp(-count[:, None] + n * numpy.log(count[:, None]) - log_factorial)
    below = numpy.concatenate([numpy.zeros((len(turn), 1)), numpy.cumsum(probability, axis=1)], axis=1)
    outcomes = first + n * step
    # How likely each estimate is to be within WITHIN: the mean's, and those at the outcomes' bounds, where it changes.
    candidates = numpy.concatenate([centre, outcomes * (1 - WITHIN), outcomes * (1 + WITHIN)], axis=1)
    lowest = numpy.ceil((candidates / (1 + WITHIN) - first) / step - 1e-9).clip(0, POISSON_TERMS).astype(int)
    highest = numpy.floor((candidates / (1 - WITHIN) - first) / step + 1e-9).clip(-1, POISSON_TERMS - 1).astype(int)
    rows = numpy.arange(len(turn))[:, None]
    chance = numpy.maximum(below[rows, highest + 1] - below[rows, lowest], 0.0)
    # The nearest to the mean of those nearly as likely as the likeliest.
    near = chance >= chance.max(axis=1, keepdims=True) - LIKELIER
    distance = numpy.where(near, numpy.abs(candidates - centre), numpy.inf)
    return candidates[numpy.arange(len(turn)), distance.argmin(axis=1)]


# --- The queue snapshot ------------------------------------------------------------


@dataclass
class Snapshot:
    taken_at: datetime
    taken_monotonic: float
    # The build's CPU seconds in its thread: the next waits for REBUILD_SHARE of that. CPU, not wall
    # time: on a busy machine a small queue's build waits for a core, and its wall time then held a
    # new job's first position back for many seconds (a CI run saw 9 s) while it cost nothing more.
    build_seconds: float = 0.0
    # job id -> (queue position from 1, estimated start or None); a StoredStanding when loaded
    standing: Mapping[UUID, tuple[int, datetime | None]] = field(default_factory=dict)


RUNNING_FIELDS = ("id", "user_id", "model_name", "num_frames", "width", "height", "num_inference_steps",
                  "status", "started_at", "current_step", "first_step_at", "stepped_at")


def take_snapshot(queue: str | None) -> Snapshot:
    """
    Read what the estimates need of a queue (its waiting jobs' sizes, the
    running jobs, each user's worker time, weights, live workers, rates of
    new work) and play it forward (play_forward). Plain tuples, not model
    instances: this is the one place that reads the whole queue.
    """
    now, started = timezone.now(), time.thread_time()
    pending = pending_for(queue).order_by("submitted_at", "id").values_list(
        "id", "user_id", "model_name", "num_frames", "width", "height", "num_inference_steps", "priority"
    )
    histories: dict[str, History] = {}
    waiting = []
    for job_id, user_id, model_name, frames, width, height, steps, priority in pending:
        if model_name not in histories:
            # Fresh: a build serves the deployment, and a cache that predates the model's first job would
            # withhold every start until it expired.
            histories[model_name] = model_history(model_name, fresh=True)
        waiting.append((job_id, user_id, histories[model_name].duration(frames, width, height, steps), priority))
    used, weights = worker_time_used(now), user_weights()

    running = list(VideoGenerationJob.objects.filter(status=Status.RUNNING).filter(served_by(queue))
                   .only(*RUNNING_FIELDS))
    # Seconds until each running job's worker is free; None: unknown, so no starts.
    remaining: list[float] | None = []
    for job in running:
        end = estimated_completion_at(job)
        if end is None:
            remaining = None
            break
        remaining.append(max((end - now).total_seconds(), 0.0))
        # Its user is charged the rest of it first: it is theirs by the next claim.
        used[job.user_id] = used.get(job.user_id, 0.0) + remaining[-1]

    workers = max(live_workers(queue), len(running))
    rates, new_job = arrival_rates(queue, now, histories) if workers and remaining is not None else ({}, None)
    snapshot = Snapshot(now, time.monotonic())
    snapshot.standing = play_forward(now, waiting, used, weights, remaining, workers, rates, new_job)
    snapshot.build_seconds = time.thread_time() - started
    return snapshot


def play_forward(
    now: datetime,
    waiting: list[tuple[UUID, str, float | None, int]],
    used: dict[str, float],
    weights: dict[str, float],
    remaining: list[float] | None,
    workers: int,
    rates: dict[str, float],
    new_job: float | None = None,
) -> dict[UUID, tuple[int, datetime | None]]:
    """
    Each waiting job's (queue position from 1, estimated start or None),
    from the queue as plain values: `waiting` (job id, user, estimated
    seconds or None, priority) in submission order; each user's worker time
    `used` (with what is left of their running jobs); `remaining`, seconds
    until each running job's worker is free (None: unknown, so no starts);
    the live `workers`; each user's `rates` of new work (Arrivals);
    `new_job`, the mean seconds of one new job (likeliest_waits; without
    it, each start is the expected one).

    The order is the claim's played forward: higher priority first, and
    within a priority the fair policy, each user's weighted worker time
    growing by the estimated duration of each job they are given, as it will
    when the jobs run. Starts: the workers each take the next job when free;
    then each wait grows by the new work that will go before it (Arrivals;
    new work is taken to be of normal priority), and is answered as the
    likeliest to be right (likeliest_waits). No database:
    bench/eta_model.py plays it against a simulated queue.
    """
    # Without history a job counts as the mean of those known, so the order
    # is still the policy's; only the times are then withheld.
    known = [duration for _, _, duration, _ in waiting if duration is not None]
    fallback = sum(known) / len(known) if known else 1.0
    # Each priority's users' jobs: (rank in submission order, id, duration or
    # None). The rank stands in for submitted_at as the policy's tie-break:
    # the same order, and parsing 10,000 timestamps was a third of the build.
    # Plain tuples, no dictionary keyed by job: hashing 10,000 UUIDs several
    # times was most of what is left.
    by_priority: dict[int, dict[str, list]] = {}
    for rank, (job_id, user_id, duration, priority) in enumerate(waiting):
        by_priority.setdefault(priority, {}).setdefault(user_id, []).append((rank, job_id, duration))

    # Each user's worker time as the claims so far leave it.
    spent_by = dict(used)
    final_shares = {user: spent / weights.get(user, 1.0) for user, spent in used.items()}
    order = []  # (id, duration or None, the user's weighted time when its turn comes)
    for priority in sorted(by_priority, reverse=True):
        by_user = by_priority[priority]
        heap = []
        for user, jobs in by_user.items():
            weight = weights.get(user, 1.0)
            jobs.reverse()  # oldest last, for pop()
            heapq.heappush(heap, (*fair_key(spent_by.get(user, 0.0), weight, jobs[-1][0]), user))
            queued = sum(fallback if duration is None else duration for _, _, duration in jobs)
            final_shares[user] = final_shares.get(user, 0.0) + queued / weight
        while heap:
            share, _, user = heapq.heappop(heap)
            jobs = by_user[user]
            _, job_id, duration = jobs.pop()
            order.append((job_id, duration, share))
            spent_by[user] = spent_by.get(user, 0.0) + (fallback if duration is None else duration)
            if jobs:
                heapq.heappush(heap, (*fair_key(spent_by[user], weights.get(user, 1.0), jobs[-1][0]), user))

    # When a worker is free for each job, in order, until a duration is unknown (what follows would be a guess).
    turns: list[float] = []
    if workers and remaining is not None:
        free = remaining + [0.0] * (workers - len(remaining))
        heapq.heapify(free)
        for _, duration, _ in order:
            turns.append(heapq.heappop(free))
            if duration is None:
                break
            heapq.heappush(free, turns[-1] + duration)
    waits = Arrivals.of(rates, final_shares, weights, workers).waits(turns, [share for *_, share in order[:len(turns)]])
    if new_job and rates and turns:
        waits = likeliest_waits(turns, waits, new_job, workers)
    waits += [None] * (len(order) - len(waits))
    return {
        job_id: (position, None if wait is None else now + timedelta(seconds=wait))
        for position, ((job_id, _, _), wait) in enumerate(zip(order, waits), start=1)
    }


_snapshots: dict[str | None, Snapshot] = {}
# Queues whose snapshot a background thread is rebuilding now.
_rebuilding: dict[str | None, threading.Thread] = {}
_snapshot_lock = threading.Lock()  # guards the two dicts above; never held while reading the database
_inline_lock = threading.Lock()  # one inline build at a time
# forget_snapshots(): snapshots the deployment stored before this are not loaded.
_forgotten_at = datetime.min.replace(tzinfo=dt_timezone.utc)


# --- One snapshot per queue for the whole deployment ---------------------------------

# Each waiting job: its id, queue position and estimated start (microseconds since the epoch, or NO_START).
_ENTRY = struct.Struct("<16siq")
NO_START = -(2**63)
_EPOCH = datetime(1970, 1, 1, tzinfo=dt_timezone.utc)
_MICROSECOND = timedelta(microseconds=1)


def encode_standing(standing: Mapping[UUID, tuple[int, datetime | None]]) -> bytes:
    return b"".join(
        _ENTRY.pack(job_id.bytes, position, NO_START if start is None else (start - _EPOCH) // _MICROSECOND)
        for job_id, (position, start) in standing.items()
    )


class StoredStanding(Mapping):
    """
    A stored snapshot's standing, as decode_standing() read it: job id ->
    (position, estimated start or None), made into a UUID and a datetime
    only for the jobs looked up: building one of each for every job of a
    long queue on every load cost far more than a poll, which looks up one.
    """

    def __init__(self, entries: dict[bytes, tuple[int, int]]):
        self._entries = entries  # job id's bytes -> (position, microseconds since the epoch or NO_START)

    def __getitem__(self, job_id: UUID) -> tuple[int, datetime | None]:
        if not isinstance(job_id, UUID):
            raise KeyError(job_id)
        position, micros = self._entries[job_id.bytes]
        return position, None if micros == NO_START else _EPOCH + timedelta(microseconds=micros)

    def __contains__(self, job_id) -> bool:
        return isinstance(job_id, UUID) and job_id.bytes in self._entries

    def __iter__(self):
        return (UUID(bytes=raw) for raw in self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def positions(self) -> dict[bytes, int]:
        """Each job's position, by the id's bytes: no UUID or datetime made."""
        return {job_id: position for job_id, (position, _) in self._entries.items()}


def decode_standing(encoded: bytes | memoryview) -> StoredStanding:
    return StoredStanding({job_id: (position, micros) for job_id, position, micros in _ENTRY.iter_unpack(encoded)})


def _fresh_snapshot(queue: str | None, newer_than: datetime, *, wait: bool) -> Snapshot | None:
    """
    A snapshot of the queue taken after `newer_than` (see the module
    docstring): the one the deployment stored, when it is that new and
    younger than SNAPSHOT_TTL; else one this process builds and stores,
    if no other process is building one. If another is, and `wait` (a
    background rebuild), wait for it to be stored, up to BUILD_LEASE, and
    None past that; not waiting (a process's first snapshot, or tests),
    the newest stored one that is new enough whatever its age, or one
    built here and kept to this process.
    """
    key = snapshot_key(queue)
    deadline = time.monotonic() + BUILD_LEASE
    while True:
        now = timezone.now()
        stored = _stored(key, max(newer_than, now - timedelta(seconds=SNAPSHOT_TTL)), now)
        if stored is not None:
            return stored
        if _claim_build(key, now):
            try:
                snapshot = take_snapshot(queue)
                snapshot.standing = no_worse_than(snapshot.standing, _stored(key, _EPOCH, now))
            except Exception:
                # Let the others build rather than wait out the claim.
                QueueSnapshot.objects.filter(queue=key).update(building_until=None)
                raise
            _store(key, snapshot)
            return snapshot
        if not wait:
            return _stored(key, newer_than, now) or take_snapshot(queue)
        if time.monotonic() > deadline:
            return None
        time.sleep(BUILD_POLL)


def no_worse_than(standing: dict[UUID, tuple[int, datetime | None]],
                  previous: "Snapshot | None") -> dict[UUID, tuple[int, datetime | None]]:
    """
    The standing with no job placed behind where the deployment's previous
    snapshot placed it: a client polling a job sees its position only
    improve, even when fair share lets a newcomer go first.
    """
    if previous is None:
        return standing
    before = previous.standing
    positions = before.positions() if isinstance(before, StoredStanding) else {
        job_id.bytes: position for job_id, (position, _) in before.items()}
    clamped = {}
    for job_id, (position, start) in standing.items():
        earlier = positions.get(job_id.bytes)
        clamped[job_id] = (position if earlier is None else min(position, earlier), start)
    return clamped


def snapshot_key(queue: str | None) -> str:
    """A queue's QueueSnapshot row: its deployment's, as two deployments may share the database."""
    return f"{this_deployment()}:{queue or ''}"


def _stored(key: str, after: datetime, now: datetime) -> Snapshot | None:
    """The deployment's snapshot of the queue if it was taken after `after` (and after forget_snapshots())."""
    stored = (QueueSnapshot.objects.filter(queue=key, taken_at__gt=max(after, _forgotten_at))
              .values_list("taken_at", "build_seconds", "standing").first())
    if stored is None:
        return None
    taken_at, build_seconds, standing = stored
    age = max((now - taken_at).total_seconds(), 0.0)
    return Snapshot(taken_at, time.monotonic() - age, build_seconds, decode_standing(standing))


def _claim_build(key: str, now: datetime) -> bool:
    """Whether this process may build the queue's next snapshot: no other process is building one."""
    until = now + timedelta(seconds=BUILD_LEASE)
    free = Q(building_until__isnull=True) | Q(building_until__lt=now)
    if QueueSnapshot.objects.filter(free, queue=key).update(building_until=until):
        return True
    try:
        with transaction.atomic():
            # The queue's first: a row that nothing loads (taken at the epoch) holds the claim.
            QueueSnapshot.objects.create(queue=key, taken_at=_EPOCH, build_seconds=0.0, standing=b"",
                                         building_until=until)
        return True
    except IntegrityError:
        return False  # the row is there, and another process's claim on it


def _store(key: str, snapshot: Snapshot) -> None:
    """Store the snapshot this process built under its claim (over an older one only), and end the claim."""
    fields = {"taken_at": snapshot.taken_at, "build_seconds": snapshot.build_seconds,
              "standing": encode_standing(snapshot.standing), "building_until": None}
    try:
        with transaction.atomic():
            if not QueueSnapshot.objects.filter(queue=key, taken_at__lt=snapshot.taken_at).update(**fields):
                QueueSnapshot.objects.filter(queue=key).update(building_until=None)
    except DatabaseError:
        # This process answers from its own snapshot; the claim lapses after BUILD_LEASE.
        logger.exception("could not store the queue snapshot", extra={"queue": key})


# --- This process's snapshots ----------------------------------------------------------


def _entered(job: VideoGenerationJob) -> datetime:
    return max(job.submitted_at, job.queued_at or job.submitted_at)


def _needs_rebuild(snapshot: Snapshot, job: VideoGenerationJob) -> bool:
    if time.monotonic() - snapshot.taken_monotonic > max(SNAPSHOT_TTL, snapshot.build_seconds / REBUILD_SHARE):
        return True
    return job.id not in snapshot.standing and _entered(job) > snapshot.taken_at


def _wanted_after(snapshot: Snapshot | None, job: VideoGenerationJob) -> datetime:
    """How new the next snapshot must be: newer than this process's, and holding `job` if that one does not."""
    if snapshot is None:
        return _entered(job)
    return snapshot.taken_at if job.id in snapshot.standing else max(snapshot.taken_at, _entered(job))


def _rebuild_in_background(queue: str | None, snapshot: Snapshot, job: VideoGenerationJob) -> None:
    """Start the queue's rebuild unless one is under way. Called holding _snapshot_lock."""
    if queue in _rebuilding:
        return
    earliest = max(MIN_REBUILD_INTERVAL, snapshot.build_seconds / REBUILD_SHARE)
    delay = max(earliest - (time.monotonic() - snapshot.taken_monotonic), 0.0)
    thread = threading.Thread(target=_rebuild, args=(queue, delay, _wanted_after(snapshot, job)),
                              name=f"queue snapshot {queue}", daemon=True)
    _rebuilding[queue] = thread
    thread.start()


def _rebuild(queue: str | None, delay: float, newer_than: datetime) -> None:
    try:
        time.sleep(delay)
        snapshot = _fresh_snapshot(queue, newer_than, wait=True)
        if snapshot is not None:
            with _snapshot_lock:
                _snapshots[queue] = snapshot
    except Exception:
        # The polls keep the previous snapshot; the next one past its age asks again.
        logger.exception("could not rebuild the queue snapshot", extra={"queue": queue})
    finally:
        with _snapshot_lock:
            _rebuilding.pop(queue, None)
        # This thread's own connection.
        connection.close()


def _newest_stored(queue: str | None) -> None:
    """
    Take the deployment's stored snapshot of the queue when it is newer than
    this process's: every process answers from the newest, so a client
    whose polls reach different processes never sees a job move back.
    One small read per poll of a pending job; the snapshot itself is read
    once per process per build.
    """
    key = snapshot_key(queue)
    with _snapshot_lock:
        mine = _snapshots.get(queue)
    after = max(mine.taken_at if mine is not None else _EPOCH, _forgotten_at)
    if not QueueSnapshot.objects.filter(queue=key, taken_at__gt=after).exists():
        return
    stored = _stored(key, after, timezone.now())
    if stored is not None:
        with _snapshot_lock:
            current = _snapshots.get(queue)
            if current is None or current.taken_at < stored.taken_at:
                _snapshots[queue] = stored


class Rebuilds:
    """
    How this process rebuilds a queue's snapshot once it is stale: in a
    background thread, while polls answer at once from the one it has; and a
    submit starts one at once.
    """

    def stale(self, queue: str | None, job: VideoGenerationJob) -> Snapshot:
        """The snapshot a poll of `job` answers from, this process's for the queue being stale."""
        with _snapshot_lock:
            snapshot = _snapshots.get(queue)
            if snapshot is not None:
                if _needs_rebuild(snapshot, job):
                    _rebuild_in_background(queue, snapshot, job)
                return snapshot
        # Forgotten meanwhile (forget_snapshots): as at the process's first poll.
        return build_now(queue, job, if_stale=False)

    def entered(self, queue: str | None, job: VideoGenerationJob) -> None:
        """`job` was submitted to the queue."""
        with _snapshot_lock:
            snapshot = _snapshots.get(queue)
            # A process without a snapshot builds one at its first poll.
            if snapshot is not None:
                _rebuild_in_background(queue, snapshot, job)


rebuilds = Rebuilds()


def build_now(queue: str | None, job: VideoGenerationJob, *, if_stale: bool = True) -> Snapshot:
    """
    Build the queue's snapshot in this thread when this process has none,
    or (if_stale) when its own is stale for a poll of `job`. One build at a
    time: a thread that waited for another's takes that one.
    """
    with _inline_lock:
        with _snapshot_lock:
            snapshot = _snapshots.get(queue)
        if snapshot is None or (if_stale and _needs_rebuild(snapshot, job)):
            snapshot = _fresh_snapshot(queue, _wanted_after(snapshot, job), wait=False)
            with _snapshot_lock:
                _snapshots[queue] = snapshot
    return snapshot


def _snapshot_for(queue: str | None, job: VideoGenerationJob) -> Snapshot:
    _newest_stored(queue)
    with _snapshot_lock:
        snapshot = _snapshots.get(queue)
    if snapshot is None:
        # The process's first is built here, not waited for in the background.
        return build_now(queue, job, if_stale=False)
    if not _needs_rebuild(snapshot, job):
        return snapshot
    return rebuilds.stale(queue, job)


def job_entered_queue(job: VideoGenerationJob) -> None:
    """
    A job was submitted: start the queue's rebuild now rather than at the
    client's first poll, so its position is there within about a second.
    """
    rebuilds.entered(queue_for_model(job.model_name), job)


def queue_standing(job: VideoGenerationJob) -> tuple[int | None, datetime | None]:
    """
    (queue position, estimated start) of a pending job; (None, None)
    otherwise, and for a pending job newer than this process's snapshot
    until the snapshot is rebuilt (see the module docstring).
    """
    if job.status != Status.PENDING:
        return None, None
    snapshot = _snapshot_for(queue_for_model(job.model_name), job)
    return snapshot.standing.get(job.id, (None, None))


def wait_for_rebuilds(timeout: float | None = None) -> None:
    """For tests and benchmarks: return once no background rebuild is under way."""
    with _snapshot_lock:
        threads = list(_rebuilding.values())
    for thread in threads:
        thread.join(timeout)


def forget_snapshots() -> None:
    """For tests and benchmarks: the next look-up builds a snapshot, ignoring those the deployment stored."""
    global _forgotten_at
    wait_for_rebuilds()
    with _snapshot_lock:
        _snapshots.clear()
        _forgotten_at = timezone.now()
    with _lock:
        _history.clear()


def _after_fork() -> None:
    # A rebuild thread does not survive a fork: its entry would block every later rebuild.
    # Nor does a lock another thread held.
    global _lock, _snapshot_lock, _inline_lock
    _rebuilding.clear()
    _lock, _snapshot_lock, _inline_lock = threading.Lock(), threading.Lock(), threading.Lock()


os.register_at_fork(after_in_child=_after_fork)
