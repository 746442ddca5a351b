"""
Jobs whose worker died or is stopping: found, and requeued (or failed, after
too many lost runs); and wake-ups that were lost, sent again.

django-q2 re-delivers a task whose worker was killed only when its lock
expires (hours, with our timeouts), and never counts the killed attempt; so
the job table, not the broker, is the source of truth, and recovery is ours.
"""

import logging
import os
import re
from datetime import timedelta

from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from jobs.services.checkpoints import job_drop_checkpoint
from jobs.scheduling.deployment import queue_for_model
from jobs.models import ErrorCode, PendingFile, Priority, Status, VideoGenerationJob, this_deployment
from jobs.services.lifecycle import broker, job_enqueue
from jobs.scheduling.queue import jobs_cancel_past_start_deadline, jobs_preempt_for_high_priority
from videogen.logformat import log_fields

logger = logging.getLogger(__name__)


# host:pid, then " slot N device" for a worker of a qcluster (see worker_name).
_WORKER_NAME = re.compile(r"^(?P<host>[^\s:]+):(?P<pid>\d+)(?: slot (?P<slot>\d+) (?P<device>\S+))?$")


def worker_name(pid: int | None = None, *, slot: int | None = None, device: str | None = None) -> str:
    """
    How a worker process names itself on the job it runs: VIDEOGEN_WORKER_HOST
    and its pid identify it; its slot and device tell operators which GPU
    made the video.
    """
    name = f"{settings.VIDEOGEN_WORKER_HOST}:{pid or os.getpid()}"
    if slot is not None:
        name += f" slot {slot} {device}"
    return name


def parse_worker_name(name: str) -> tuple[str, int] | None:
    """(host, pid) of a worker name, or None for a name that is not one."""
    match = _WORKER_NAME.match(name)
    if match is None:
        return None
    return match["host"], int(match["pid"])


def worker_is_gone(name: str) -> bool:
    """
    True when the named worker ran on this host and its process no longer
    exists. A worker on another host is never looked up here (its pid means
    nothing on this one): only its heartbeat says whether it lives.
    """
    parsed = parse_worker_name(name)
    if parsed is None or parsed[0] != settings.VIDEOGEN_WORKER_HOST:
        return False
    import psutil

    try:
        process = psutil.Process(parsed[1])
    except psutil.NoSuchProcess:
        return True
    # A zombie has died; its parent just has not collected it yet.
    return process.status() == psutil.STATUS_ZOMBIE


def lost_jobs():
    """This deployment's running jobs whose worker stopped beating, or died on this host."""
    stale = timezone.now() - timedelta(seconds=settings.VIDEOGEN_HEARTBEAT_TIMEOUT)
    # Another deployment's job would be woken up on this one's queues.
    running = VideoGenerationJob.objects.filter(status=Status.RUNNING, deployment=this_deployment())
    candidates = running.filter(Q(heartbeat_at__lt=stale) | Q(heartbeat_at__isnull=True)) | running.filter(
        worker__startswith=f"{settings.VIDEOGEN_WORKER_HOST}:"
    )
    for job in candidates.distinct().only("id", "user_id", "worker", "heartbeat_at", "attempts", "model_name"):
        if job.heartbeat_at is None or job.heartbeat_at < stale or worker_is_gone(job.worker):
            yield job


def job_recover(job: VideoGenerationJob) -> str | None:
    """
    A lost job: requeue() it, counting the lost run as an attempt, or fail()
    it as worker_lost once it has had VIDEOGEN_MAX_ATTEMPTS runs: a job that
    kills its worker (the kernel's out-of-memory killer, say) must not be
    retried forever. Both are conditional on the job still being held by the
    same worker, so a worker that was only slow, and a second reaper, change
    nothing. Returns "requeued", "failed" or None.
    """
    still_lost = Q(worker=job.worker, heartbeat_at=job.heartbeat_at)
    if job.attempts >= settings.VIDEOGEN_MAX_ATTEMPTS:
        failed = job.fail(
            ErrorCode.WORKER_LOST,
            f"The worker running this job stopped ({job.worker or 'unknown worker'}) on each of its "
            f"{job.attempts} attempts; it was not retried again. If the parameters are large, the process "
            "may have run out of memory.",
            from_={Status.RUNNING},
            where=still_lost,
        )
        if failed:
            job_drop_checkpoint(job)
        return "failed" if failed else None
    if not job.requeue(from_={Status.RUNNING}, where=still_lost):
        return None
    job_enqueue(job)  # at once: outside any transaction, the requeue is committed
    return "requeued"


def job_hand_back(job: VideoGenerationJob, *, preempted: bool = False) -> bool:
    """
    A running job whose worker is stopping, or that was preempted (not
    failing): requeue() it without counting the attempt, if it is still that
    worker's. A preemption is counted (run_info.preemptions from then on).
    """
    counted = {}
    if preempted:
        counted = {"preemptions": F("preemptions") + 1, "run_info": {"preemptions": job.preemptions + 1}}
    handed_back = job.requeue(from_={Status.RUNNING}, where=Q(worker=job.worker), count_attempt=False, **counted)
    if handed_back:
        job_enqueue(job)  # at once: outside any transaction, the requeue is committed
    return handed_back


# Pending work this old with no wake-up waiting in its queue gets one: a
# worker claims what it can within moments of a wake-up.
WAKE_UP_SETTLE = 5.0


def resend_lost_wake_ups() -> int:
    """
    Top up lost wake-ups: for each queue with pending work that has waited
    WAKE_UP_SETTLE seconds and no wake-up waiting in the broker (one popped
    from Redis by a cluster that then died, lost with a broker restarted
    empty), send one. Any wake-up drains the queue, so one is enough; a
    spare one finds nothing and returns. Returns how many were sent.
    """
    settle = timezone.now() - timedelta(seconds=WAKE_UP_SETTLE)
    # NULL: rows from before queued_at existed (or whose enqueue never ran).
    waiting = (
        VideoGenerationJob.objects.filter(status=Status.PENDING, deployment=this_deployment())
        .filter(Q(queued_at__lt=settle) | Q(queued_at__isnull=True, submitted_at__lt=settle))
        .order_by("submitted_at")
    )
    oldest_by_queue: dict[str | None, VideoGenerationJob] = {}
    for model_name in waiting.order_by().values_list("model_name", flat=True).distinct():
        queue = queue_for_model(model_name)
        job = waiting.filter(model_name=model_name).only("id", "user_id", "model_name", "submitted_at").first()
        if job is not None and (queue not in oldest_by_queue or job.submitted_at < oldest_by_queue[queue].submitted_at):
            oldest_by_queue[queue] = job
    sent = 0
    for queue, job in oldest_by_queue.items():
        if broker(queue).queue_size() == 0:
            logger.warning("queue %s has pending work and no wake-up waiting: sent one", queue or "default")
            job_enqueue(job)
            sent += 1
    return sent


# Records swept per reap at most: a backlog drains over several reaps.
SWEEP_BATCH = 500


def sweep_unfinished_files() -> int:
    """
    Remove the files of attempts that ended without their job pointing at
    them (PendingFile): the attempt's job is gone, or is no longer running
    as that attempt's worker. A file the job points at is never removed
    (its worker died after the completing write, before forgetting the
    records); only its record is. Returns how many files were removed.
    """
    from django.core.files.storage import default_storage

    records = list(PendingFile.objects.filter(deployment=this_deployment()).order_by("id")[:SWEEP_BATCH])
    jobs = VideoGenerationJob.objects.filter(pk__in={record.job_id for record in records})
    jobs = {job.pk: job for job in jobs.only("id", "status", "worker", "video", "poster", "preview")}
    removed = 0
    for record in records:
        job = jobs.get(record.job_id)
        # Still being written; if that worker dies, lost_jobs() requeues the job first.
        if job is not None and job.status == Status.RUNNING and job.worker == record.worker:
            continue
        orphan = job is None or record.name not in {job.video.name, job.poster.name, job.preview.name}
        if orphan:
            try:
                # Deleting an object that is gone is a no-op: another reaper may sweep the same record.
                default_storage.delete(record.name)
            except Exception:
                logger.warning("could not remove %s, left by an unfinished attempt", record.name, exc_info=True)
                continue
        if PendingFile.objects.filter(pk=record.pk).delete()[0] and orphan:
            removed += 1
            logger.info("removed %s, left by an unfinished attempt", record.name, extra=log_fields(job_id=record.job_id))
    return removed


def reap_lost_jobs() -> dict[str, int]:
    counts = {"requeued": 0, "failed": 0, "wake-ups resent": resend_lost_wake_ups()}
    for job in lost_jobs():
        worker = job.worker
        outcome = job_recover(job)
        if outcome:
            counts[outcome] += 1
            logger.warning(
                "lost by worker %s: %s (attempt %d)", worker or "unknown", outcome, job.attempts, extra=log_fields(job)
            )
    # After the recoveries: a lost attempt's files are swept in the same reap.
    counts["unfinished files removed"] = sweep_unfinished_files()
    # Even while every worker is busy, a job past its start deadline is cancelled within a reap interval.
    counts["cancelled past their start deadline"] = jobs_cancel_past_start_deadline(
        VideoGenerationJob.objects.filter(status=Status.PENDING, deployment=this_deployment())
    )
    # Busy workers look at each heartbeat; the reaper too, in case none is beating.
    counts["asked to yield to high priority"] = sum(
        jobs_preempt_for_high_priority(queue) for queue in queues_with_high_priority_waiting()
    )
    return counts


def queues_with_high_priority_waiting() -> set[str | None]:
    waiting = VideoGenerationJob.objects.filter(
        status=Status.PENDING, deployment=this_deployment(), priority=Priority.HIGH
    )
    return {queue_for_model(model) for model in waiting.order_by().values_list("model_name", flat=True).distinct()}
