"""
The queue of record: the pending rows of the jobs table. A broker message
only says "a worker should look for work"; which job it runs is decided
here, in the database, when the worker claims one. Higher priority first
(high, normal, low); within a priority, the fair policy:

- among the users with pending jobs for the models the worker's queue
  serves, the user who used the least worker time over the last
  VIDEOGEN_FAIR_WINDOW seconds, divided by their weight (UserWeight; an
  unlisted user weighs 1), goes first; ties go to the user whose oldest
  pending job is the oldest;
- within one user, oldest first.

Worker time is started_at to completed_at (to now for a running job),
clipped to the window; a job cancelled before it ran used none.
"""

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import DurationField, ExpressionWrapper, F, Min, Q, QuerySet, Sum, Value
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone

from jobs.scheduling.deployment import model_queues
from jobs.models import ClusterBeat, Priority, Status, UserWeight, VideoGenerationJob, this_deployment
from videogen.logformat import log_fields

logger = logging.getLogger(__name__)


def served_by(queue: str | None) -> Q:
    """
    The jobs a queue's workers take, among this deployment's (another
    deployment may share the database): a VIDEOGEN_MODEL_QUEUES queue its
    models; the default queue (None) every model not pinned elsewhere, so a
    job for a model nobody serves still runs and fails with a reason.
    """
    pinned = model_queues()
    ours = Q(deployment=this_deployment())
    if queue is None:
        return ours & ~Q(model_name__in=list(pinned)) if pinned else ours
    return ours & Q(model_name__in=[model for model, name in pinned.items() if name == queue])


def pending_for(queue: str | None) -> QuerySet:
    return VideoGenerationJob.objects.filter(status=Status.PENDING).filter(served_by(queue))


def worker_time_used(now: datetime) -> dict[str, float]:
    """Seconds of worker time each user used over the window (users with none are absent)."""
    return {user_id: total.total_seconds() for user_id, total in worker_time_query(now) if total and total.total_seconds() > 0}


def worker_time_query(now: datetime) -> QuerySet:
    """(user_id, worker time in the window) rows: one per user, summed in the database."""
    since = now - timedelta(seconds=settings.VIDEOGEN_FAIR_WINDOW)
    inside = ExpressionWrapper(
        Coalesce(F("completed_at"), Value(now)) - Greatest(F("started_at"), Value(since)),
        output_field=DurationField(),
    )
    return (
        VideoGenerationJob.objects.filter(started_at__isnull=False)
        .filter(Q(completed_at__gte=since) | Q(status=Status.RUNNING))
        .order_by()
        .values_list("user_id")
        .annotate(used=Sum(inside))
    )


def user_weights() -> dict[str, float]:
    # An operator's short list: read whole.
    return dict(UserWeight.objects.values_list("user_id", "weight"))


def fair_key(used: float, weight: float, oldest: datetime) -> tuple[float, datetime]:
    """Who goes first: least weighted worker time, then the oldest waiting job."""
    return used / weight, oldest


def users_in_claim_order(queue: str | None, now: datetime) -> list[tuple[int, str]]:
    """(priority, user_id) pairs with pending work, in the order their jobs are claimed."""
    oldest = {
        (priority, user_id): submitted_at
        for priority, user_id, submitted_at in pending_for(queue).order_by().values_list("priority", "user_id")
        .annotate(oldest=Min("submitted_at"))
    }
    used, weights = worker_time_used(now), user_weights()

    def claim_order(pair: tuple[int, str]) -> tuple:
        priority, user = pair
        return -priority, *fair_key(used.get(user, 0.0), weights.get(user, 1.0), oldest[pair])

    return sorted(oldest, key=claim_order)


def live_workers(queue: str | None) -> int:
    """The worker processes of this deployment's live qclusters that serve `queue` (their ClusterBeat)."""
    beats = ClusterBeat.objects.live().filter(deployment=this_deployment(), queue=queue or "")
    return sum(beats.values_list("workers", flat=True))


def jobs_preempt_for_high_priority(queue: str | None) -> int:
    """
    Preemption: for each high-priority job of this queue that has waited
    VIDEOGEN_PREEMPT_AFTER seconds since its submit while no worker of the queue is free, ask
    one running job of lower priority to yield (the lowest priority first,
    then the least progress): its worker checkpoints it at its next step and
    hands it back to pending (generation.runner.job_yield), and takes the
    high job next. Jobs asked already count, so a waiting job is answered
    once. Off with VIDEOGEN_PREEMPT_AFTER=off, and with checkpoints off
    (a yield would throw the run's work away). Returns how many were asked.
    """
    after = settings.VIDEOGEN_PREEMPT_AFTER
    if after is None or settings.VIDEOGEN_CHECKPOINT_SECONDS is None:
        return 0
    now = timezone.now()
    # Waited since its submit: a high job requeued after a lost or stopped run has waited all that time too.
    starving = pending_for(queue).filter(priority=Priority.HIGH, submitted_at__lte=now - timedelta(seconds=after))
    starving = starving.filter(Q(start_deadline_at__isnull=True) | Q(start_deadline_at__gt=now))
    # Cheap when nothing starves, which is nearly always: one indexed look.
    if not starving.exists():
        return 0
    with transaction.atomic():
        if connection.vendor == "postgresql":
            # One decision at a time per deployment (the reaper and every busy worker make it).
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"videogen-preempt:{this_deployment()}"])
        running = VideoGenerationJob.objects.filter(status=Status.RUNNING).filter(served_by(queue))
        # A free worker takes the high job at its next claim: nothing to preempt for.
        if live_workers(queue) > running.count():
            return 0
        wanted = starving.count() - running.filter(yield_requested_at__isnull=False).count()
        if wanted <= 0:
            return 0
        victims = (
            running.filter(priority__lt=Priority.HIGH, yield_requested_at__isnull=True)
            .order_by("priority", "progress", "-started_at")
            .only("id", "user_id", "worker", "model_name", "priority", "progress")[:wanted]
        )
        asked = 0
        for job in victims:
            if job.ask_to_yield(now):
                asked += 1
                logger.info("asked to yield its worker to a waiting high-priority job (preemption)",
                            extra=log_fields(job))
        return asked


def jobs_cancel_past_start_deadline(pending: QuerySet, *, limit: int = 1000) -> int:
    """
    Cancel the jobs among `pending` that have not started by their
    start_within (deadline_exceeded; webhooks as for any cancel). Each is a
    conditional transition, so a claim racing it either runs the job first
    or never.
    """
    now = timezone.now()
    expired = pending.filter(start_deadline_at__lte=now).order_by("start_deadline_at")[:limit]
    cancelled = 0
    for job in expired:
        if job.cancel_past_start_deadline(now):
            cancelled += 1
            logger.info("cancelled: not started by its start deadline", extra=log_fields(job))
    return cancelled


def job_claim_next(*, queue: str | None, worker: str) -> VideoGenerationJob | None:
    """
    Claim the next job for a worker of this queue under the fair policy,
    moving it to RUNNING as that worker's; None when nothing is pending.
    Two workers never get the same job: on PostgreSQL the candidate row is
    locked (FOR UPDATE SKIP LOCKED, so a worker passes over a row another is
    claiming instead of waiting for it); on SQLite our transactions are
    IMMEDIATE, so claims run one at a time. The claim itself is still the
    conditional transition, as everywhere else.
    """
    # A job past its start deadline never runs, not even for a step: cancelled here if the reaper has not yet.
    jobs_cancel_past_start_deadline(pending_for(queue))
    now = timezone.now()
    within_deadline = Q(start_deadline_at__isnull=True) | Q(start_deadline_at__gt=now)
    with transaction.atomic():
        for priority, user_id in users_in_claim_order(queue, now):
            candidates = (
                pending_for(queue)
                .filter(within_deadline, user_id=user_id, priority=priority)
                .order_by("submitted_at", "id")
            )
            if connection.vendor == "postgresql":
                candidates = candidates.select_for_update(skip_locked=True)
            job = candidates.first()
            if job is not None and job.start(worker=worker, now=now):
                return job
    return None
