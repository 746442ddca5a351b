"""
Where a job stands: a pending job's queue position and estimated start, a
running job's estimated completion.

Durations come from recent history: the median, over the last
HISTORY_JOBS completed jobs of a model, of seconds per unit of work
(frames x pixels x steps). Live workers per queue come from the qcluster
parents' beats (ClusterBeat). Without history, or with no live worker, an
estimate is None: never a guess presented as fact.

Polls must stay cheap: each web process keeps one snapshot per queue (the
whole order, computed by playing the fair policy forward) for SNAPSHOT_TTL
seconds, so a poll is a dictionary look-up, and the queue is scanned at most
once per TTL (or once more for a job newer than the snapshot).
"""

import heapq
import statistics
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from uuid import UUID

from django.conf import settings
from django.utils import timezone

from jobs.deployment import queue_for_model
from jobs.models import ClusterBeat, Status, VideoGenerationJob
from jobs.queue import fair_key, pending_for, served_by, user_weights, worker_time_used

HISTORY_JOBS = 20
SNAPSHOT_TTL = 5.0
HISTORY_TTL = 10.0


def work_units(job) -> int:
    return job.num_frames * job.width * job.height * job.num_inference_steps


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


@dataclass(frozen=True)
class History:
    # Median seconds per unit of work, claim to completion (model load and encode included).
    seconds_per_unit: float | None
    # Median seconds from the last denoising step to completion (decode, encode, store).
    tail_seconds: float | None


_history: dict[str, tuple[float, History]] = {}
_lock = threading.Lock()


def model_history(model_name: str) -> History:
    with _lock:
        cached = _history.get(model_name)
        if cached is not None and time.monotonic() - cached[0] < HISTORY_TTL:
            return cached[1]
    recent = (
        VideoGenerationJob.objects.filter(status=Status.COMPLETED, model_name=model_name, started_at__isnull=False)
        .order_by("-completed_at")
        .only("num_frames", "width", "height", "num_inference_steps", "started_at", "completed_at", "stepped_at")
        [:HISTORY_JOBS]
    )
    rates, tails = [], []
    for job in recent:
        rates.append((job.completed_at - job.started_at).total_seconds() / max(work_units(job), 1))
        if job.stepped_at is not None:
            tails.append(max((job.completed_at - job.stepped_at).total_seconds(), 0.0))
    history = History(
        statistics.median(rates) if rates else None,
        statistics.median(tails) if tails else None,
    )
    with _lock:
        _history[model_name] = (time.monotonic(), history)
    return history


def estimated_duration(job: VideoGenerationJob) -> float | None:
    rate = model_history(job.model_name).seconds_per_unit
    return None if rate is None else rate * work_units(job)


def estimated_completion_at(job: VideoGenerationJob) -> datetime | None:
    """
    A running job's end: from its own step rate once two steps are done
    (plus the model's usual decode and encode), before that from history.
    """
    if job.status != Status.RUNNING or job.started_at is None:
        return None
    if job.current_step >= 2 and job.first_step_at and job.stepped_at and job.stepped_at > job.first_step_at:
        per_step = (job.stepped_at - job.first_step_at).total_seconds() / (job.current_step - 1)
        remaining = per_step * max(job.num_inference_steps - job.current_step, 0)
        tail = model_history(job.model_name).tail_seconds or 0.0
        return job.stepped_at + timedelta(seconds=remaining + tail)
    duration = estimated_duration(job)
    return None if duration is None else job.started_at + timedelta(seconds=duration)


# --- The queue snapshot ------------------------------------------------------------


@dataclass
class Snapshot:
    taken_at: datetime
    taken_monotonic: float
    # job id -> (queue position from 1, estimated start or None)
    standing: dict[UUID, tuple[int, datetime | None]] = field(default_factory=dict)


_snapshots: dict[str | None, Snapshot] = {}
_snapshot_lock = threading.Lock()

RUNNING_FIELDS = ("id", "user_id", "model_name", "num_frames", "width", "height", "num_inference_steps",
                  "status", "started_at", "current_step", "first_step_at", "stepped_at")


def take_snapshot(queue: str | None) -> Snapshot:
    """
    Play the fair policy forward over a queue's pending jobs: each user's
    weighted worker time grows by the estimated duration of each job they
    are given, as it will when the jobs run. Starts: the live workers (or
    the running jobs, if more) each take the next job when free. Plain
    tuples, not model instances: this is the one place that reads the
    whole queue.
    """
    now = timezone.now()
    pending = pending_for(queue).order_by("submitted_at", "id").values_list(
        "id", "user_id", "model_name", "submitted_at", "num_frames", "width", "height", "num_inference_steps"
    )
    rates: dict[str, float | None] = {}
    by_user: dict[str, deque] = {}
    durations: dict[UUID, float | None] = {}
    for job_id, user_id, model_name, submitted_at, frames, width, height, steps in pending:
        if model_name not in rates:
            rates[model_name] = model_history(model_name).seconds_per_unit
        rate = rates[model_name]
        durations[job_id] = None if rate is None else rate * frames * width * height * steps
        by_user.setdefault(user_id, deque()).append((job_id, submitted_at))
    used, weights = worker_time_used(now), user_weights()
    # Without history a job counts as the median of those known, so the order
    # is still the policy's; only the times are then withheld.
    known = [d for d in durations.values() if d is not None]
    fallback = statistics.median(known) if known else 1.0

    heap = []
    for user, jobs in by_user.items():
        heapq.heappush(heap, (*fair_key(used.get(user, 0.0), weights.get(user, 1.0), jobs[0][1]), user))
    order = []
    while heap:
        share, _, user = heapq.heappop(heap)
        jobs = by_user[user]
        job_id, _ = jobs.popleft()
        order.append(job_id)
        if jobs:
            spent = durations[job_id] if durations[job_id] is not None else fallback
            heapq.heappush(heap, (share + spent / weights.get(user, 1.0), jobs[0][1], user))

    running = list(VideoGenerationJob.objects.filter(status=Status.RUNNING).filter(served_by(queue))
                   .only(*RUNNING_FIELDS))
    workers = max(live_workers(queue), len(running))
    free: list[float] | None = None
    if workers:
        free = []
        for job in running:
            end = estimated_completion_at(job)
            if end is None:
                free = None
                break
            free.append(max((end - now).total_seconds(), 0.0))
        if free is not None:
            free += [0.0] * (workers - len(free))
            heapq.heapify(free)

    snapshot = Snapshot(now, time.monotonic())
    for position, job_id in enumerate(order, start=1):
        start = None
        if free is not None:
            wait = heapq.heappop(free)
            start = now + timedelta(seconds=wait)
            if durations[job_id] is None:
                # Unknown from here on: what follows would be a guess.
                free = None
            else:
                heapq.heappush(free, wait + durations[job_id])
        snapshot.standing[job_id] = (position, start)
    return snapshot


def queue_standing(job: VideoGenerationJob) -> tuple[int | None, datetime | None]:
    """(queue position, estimated start) of a pending job; (None, None) otherwise."""
    if job.status != Status.PENDING:
        return None, None
    queue = queue_for_model(job.model_name)
    with _snapshot_lock:
        snapshot = _snapshots.get(queue)
        entered = max(job.submitted_at, job.queued_at or job.submitted_at)
        if (
            snapshot is None
            or time.monotonic() - snapshot.taken_monotonic > SNAPSHOT_TTL
            # A job newer than the snapshot: once, not for every poll.
            or (job.id not in snapshot.standing and entered > snapshot.taken_at)
        ):
            snapshot = _snapshots[queue] = take_snapshot(queue)
    return snapshot.standing.get(job.id, (None, None))


def forget_snapshots() -> None:
    """For tests and benchmarks: the next look-up reads the database."""
    with _snapshot_lock:
        _snapshots.clear()
    with _lock:
        _history.clear()
