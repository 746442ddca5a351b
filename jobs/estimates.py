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
  size, not steps: 0.9 s at 64x64x9, 3.1 s at 16x the frame pixels, 19.9 s
  at 59x, while the head stayed 0.2-0.8 s (bench/RESULTS.md).
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
what they will submit next: a job waits for the work ahead of it in the
replayed order and for the arrivals of every user who has used less than
its own user (who would go first), spread over the workers, so its wait is
the replay's divided by (1 - that share of the workers). Measured with
bench/fairness.py's random arrivals on an idle box: median error 45% before
(68 of 80 estimates early), 35% with it; what is left is which arrivals
come, which no estimate can know (bench/RESULTS.md).

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
  duration, so rebuilds never take more than 5% of a process's time: a
  build of 10,000 pending jobs takes 0.07-0.3 s (PostgreSQL, loaded box),
  so such a queue is re-read every 5-6 s; one that takes a second to read,
  every 20 s;
- a process with no snapshot yet builds one inline, once (other threads
  wait for that one build).

REBUILD_INLINE (for tests) rebuilds in the polling thread instead, at
once: a background thread has its own database connection, and
under pytest's non-transactional django_db it cannot see the test's rows.
tests/conftest.py sets it for every test.
"""

import heapq
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from uuid import UUID

from django.conf import settings
from django.db import connection
from django.db.models import Count, F, FloatField, Min, Sum
from django.db.models.functions import Cast
from django.utils import timezone

from jobs.deployment import queue_for_model
from jobs.models import ClusterBeat, Status, VideoGenerationJob
from jobs.queue import fair_key, pending_for, served_by, user_weights, worker_time_used

logger = logging.getLogger(__name__)

HISTORY_JOBS = 20
HISTORY_TTL = 10.0
SNAPSHOT_TTL = 5.0
MIN_REBUILD_INTERVAL = 1.0
# At most this share of a process's time goes to rebuilding a queue's snapshot.
REBUILD_SHARE = 0.05
# Users' submissions over this many seconds give their rate of new work.
ARRIVAL_WINDOW = 600.0
# A rate is over at least this many seconds: one submit just now is not a flood.
ARRIVAL_MIN_SPAN = 10.0
# Expected arrivals may take at most this share of the workers: past it a
# wait would grow without bound, which no queue that drains has.
MAX_ARRIVING_SHARE = 0.9
# Tests: rebuild snapshots in the polling thread (see the module docstring).
REBUILD_INLINE = False


def frame_pixels(frames: int, width: int, height: int) -> int:
    return frames * width * height


# --- Live workers ----------------------------------------------------------------


def cluster_beat(name: str, queue: str | None, workers: int) -> None:
    """A qcluster parent says it is alive, with how many workers serve which queue."""
    ClusterBeat.objects.update_or_create(
        name=name, defaults={"queue": queue or "", "workers": workers, "seen_at": timezone.now()}
    )


def cluster_gone(name: str) -> None:
    ClusterBeat.objects.filter(name=name).delete()


def live_workers(queue: str | None) -> int:
    # A parent beats every VIDEOGEN_REAPER_INTERVAL; one silent for twice that
    # (and at least the heartbeat timeout) is gone.
    silent = max(2 * settings.VIDEOGEN_REAPER_INTERVAL, settings.VIDEOGEN_HEARTBEAT_TIMEOUT)
    since = timezone.now() - timedelta(seconds=silent)
    beats = ClusterBeat.objects.filter(queue=queue or "", seen_at__gte=since)
    return sum(beats.values_list("workers", flat=True))


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


def model_history(model_name: str) -> History:
    with _lock:
        cached = _history.get(model_name)
        if cached is not None and time.monotonic() - cached[0] < HISTORY_TTL:
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


def arrival_rates(queue: str | None, now: datetime, histories: dict[str, History]) -> dict[str, float]:
    """
    Seconds of work per second each user submitted over the last
    ARRIVAL_WINDOW, from their jobs' sizes and each model's history (a
    model without history adds nothing): summed in the database.
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
        return {}
    span = max(min(ARRIVAL_WINDOW, (now - min(row[5] for row in rows)).total_seconds()), ARRIVAL_MIN_SPAN)
    work: dict[str, float] = {}
    for user_id, model_name, jobs, frame_pixels_sum, step_units, _ in rows:
        if model_name not in histories:
            histories[model_name] = model_history(model_name)
        seconds = histories[model_name].work(jobs, frame_pixels_sum or 0.0, step_units or 0.0)
        if seconds is not None:
            work[user_id] = work.get(user_id, 0.0) + seconds
    return {user_id: seconds / span for user_id, seconds in work.items()}


def arriving_share(user: str, used: dict[str, float], weights: dict[str, float], rates: dict[str, float],
                   workers: int) -> float:
    """The share of the workers that new work of users who would go before `user`'s jobs is expected to take."""
    share = used.get(user, 0.0) / weights.get(user, 1.0)
    arriving = sum(rate for other, rate in rates.items()
                   if other != user and used.get(other, 0.0) / weights.get(other, 1.0) < share)
    return min(arriving / workers, MAX_ARRIVING_SHARE)


# --- The queue snapshot ------------------------------------------------------------


@dataclass
class Snapshot:
    taken_at: datetime
    taken_monotonic: float
    # How long the build took: the next waits for REBUILD_SHARE of that.
    build_seconds: float = 0.0
    # job id -> (queue position from 1, estimated start or None)
    standing: dict[UUID, tuple[int, datetime | None]] = field(default_factory=dict)


RUNNING_FIELDS = ("id", "user_id", "model_name", "num_frames", "width", "height", "num_inference_steps",
                  "status", "started_at", "current_step", "first_step_at", "stepped_at")


def take_snapshot(queue: str | None) -> Snapshot:
    """
    Play the fair policy forward over a queue's pending jobs: each user's
    weighted worker time grows by the estimated duration of each job they
    are given, as it will when the jobs run (a running job's user is
    charged its remaining time first: it is theirs by the next claim).
    Starts: the live workers (or the running jobs, if more) each take the
    next job when free, a running job's worker at its estimated end; then
    each wait is stretched by the work expected to arrive ahead of it (the
    module docstring). Plain tuples, not model instances: this is the one
    place that reads the whole queue.
    """
    now, started = timezone.now(), time.monotonic()
    pending = pending_for(queue).order_by("submitted_at", "id").values_list(
        "id", "user_id", "model_name", "num_frames", "width", "height", "num_inference_steps"
    )
    histories: dict[str, History] = {}
    by_user: dict[str, list] = {}
    durations: dict[UUID, float | None] = {}
    # A job's rank in submission order stands in for its submitted_at as the
    # policy's tie-break: the same order, and parsing 10,000 timestamps was
    # a third of the build.
    for rank, (job_id, user_id, model_name, frames, width, height, steps) in enumerate(pending):
        if model_name not in histories:
            histories[model_name] = model_history(model_name)
        durations[job_id] = histories[model_name].duration(frames, width, height, steps)
        by_user.setdefault(user_id, []).append((job_id, rank))
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
        used[job.user_id] = used.get(job.user_id, 0.0) + remaining[-1]

    # Without history a job counts as the mean of those known, so the order
    # is still the policy's; only the times are then withheld.
    known = [d for d in durations.values() if d is not None]
    fallback = sum(known) / len(known) if known else 1.0
    heap = []
    for user, jobs in by_user.items():
        jobs.reverse()  # oldest last, for pop()
        heapq.heappush(heap, (*fair_key(used.get(user, 0.0), weights.get(user, 1.0), jobs[-1][1]), user))
    order = []
    while heap:
        share, _, user = heapq.heappop(heap)
        jobs = by_user[user]
        job_id, _ = jobs.pop()
        order.append((job_id, user))
        if jobs:
            spent = durations[job_id] if durations[job_id] is not None else fallback
            heapq.heappush(heap, (share + spent / weights.get(user, 1.0), jobs[-1][1], user))

    workers = max(live_workers(queue), len(running))
    free: list[float] | None = None
    arriving: dict[str, float] = {}
    if workers and remaining is not None:
        free = remaining + [0.0] * (workers - len(remaining))
        heapq.heapify(free)
        rates = arrival_rates(queue, now, histories)
        arriving = {user: arriving_share(user, used, weights, rates, workers) for user in by_user}

    snapshot = Snapshot(now, time.monotonic(), build_seconds=time.monotonic() - started)
    for position, (job_id, user) in enumerate(order, start=1):
        start = None
        if free is not None:
            wait = heapq.heappop(free)
            start = now + timedelta(seconds=wait / (1.0 - arriving[user]))
            if durations[job_id] is None:
                # Unknown from here on: what follows would be a guess.
                free = None
            else:
                heapq.heappush(free, wait + durations[job_id])
        snapshot.standing[job_id] = (position, start)
    return snapshot


_snapshots: dict[str | None, Snapshot] = {}
# Queues whose snapshot a background thread is rebuilding now.
_rebuilding: dict[str | None, threading.Thread] = {}
_snapshot_lock = threading.Lock()  # guards the two dicts above; never held while reading the database
_inline_lock = threading.Lock()  # one inline build at a time


def _needs_rebuild(snapshot: Snapshot, job: VideoGenerationJob) -> bool:
    if time.monotonic() - snapshot.taken_monotonic > max(SNAPSHOT_TTL, snapshot.build_seconds / REBUILD_SHARE):
        return True
    entered = max(job.submitted_at, job.queued_at or job.submitted_at)
    return job.id not in snapshot.standing and entered > snapshot.taken_at


def _rebuild_in_background(queue: str | None, snapshot: Snapshot) -> None:
    """Start the queue's rebuild unless one is under way. Called holding _snapshot_lock."""
    if queue in _rebuilding:
        return
    earliest = max(MIN_REBUILD_INTERVAL, snapshot.build_seconds / REBUILD_SHARE)
    delay = max(earliest - (time.monotonic() - snapshot.taken_monotonic), 0.0)
    thread = threading.Thread(target=_rebuild, args=(queue, delay), name=f"queue snapshot {queue}", daemon=True)
    _rebuilding[queue] = thread
    thread.start()


def _rebuild(queue: str | None, delay: float) -> None:
    try:
        time.sleep(delay)
        snapshot = take_snapshot(queue)
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


def _snapshot_for(queue: str | None, job: VideoGenerationJob) -> Snapshot:
    with _snapshot_lock:
        snapshot = _snapshots.get(queue)
        if snapshot is not None and not _needs_rebuild(snapshot, job):
            return snapshot
        if snapshot is not None and not REBUILD_INLINE:
            _rebuild_in_background(queue, snapshot)
            return snapshot
    with _inline_lock:
        with _snapshot_lock:
            snapshot = _snapshots.get(queue)
        # Another thread may have built it while this one waited.
        if snapshot is None or (REBUILD_INLINE and _needs_rebuild(snapshot, job)):
            snapshot = take_snapshot(queue)
            with _snapshot_lock:
                _snapshots[queue] = snapshot
    return snapshot


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
    """For tests and benchmarks: the next look-up reads the database."""
    wait_for_rebuilds()
    with _snapshot_lock:
        _snapshots.clear()
    with _lock:
        _history.clear()


def _after_fork() -> None:
    # A rebuild thread does not survive a fork: its entry would block every later rebuild.
    # Nor does a lock another thread held.
    global _lock, _snapshot_lock, _inline_lock
    _rebuilding.clear()
    _lock, _snapshot_lock, _inline_lock = threading.Lock(), threading.Lock(), threading.Lock()


os.register_at_fork(after_in_child=_after_fork)
