"""
The queue of record: the pending rows of the jobs table. A broker message
only says "a worker should look for work"; which job it runs is decided
here, in the database, when the worker claims one. The fair policy:

- among the users with pending jobs for the models the worker's queue
  serves, the user who used the least worker time over the last
  VIDEOGEN_FAIR_WINDOW seconds, divided by their weight (UserWeight; an
  unlisted user weighs 1), goes first; ties go to the user whose oldest
  pending job is the oldest;
- within one user, oldest first.

Worker time is started_at to completed_at (to now for a running job),
clipped to the window; a job cancelled before it ran used none.
"""

from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import DurationField, ExpressionWrapper, F, Min, Q, QuerySet, Sum, Value
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone

from jobs.deployment import model_queues
from jobs.models import Status, UserWeight, VideoGenerationJob


def served_by(queue: str | None) -> Q:
    """
    The jobs a queue's workers take: a VIDEOGEN_MODEL_QUEUES queue its
    models; the default queue (None) every model not pinned elsewhere, so a
    job for a model nobody serves still runs and fails with a reason.
    """
    pinned = model_queues()
    if queue is None:
        return ~Q(model_name__in=list(pinned)) if pinned else Q()
    return Q(model_name__in=[model for model, name in pinned.items() if name == queue])


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


def users_in_claim_order(queue: str | None, now: datetime) -> list[str]:
    oldest = dict(pending_for(queue).order_by().values_list("user_id").annotate(oldest=Min("submitted_at")))
    used, weights = worker_time_used(now), user_weights()
    return sorted(oldest, key=lambda user: fair_key(used.get(user, 0.0), weights.get(user, 1.0), oldest[user]))


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
    now = timezone.now()
    with transaction.atomic():
        for user_id in users_in_claim_order(queue, now):
            candidates = pending_for(queue).filter(user_id=user_id).order_by("submitted_at", "id")
            if connection.vendor == "postgresql":
                candidates = candidates.select_for_update(skip_locked=True)
            job = candidates.first()
            if job is not None and job.transition(
                Status.RUNNING,
                from_={Status.PENDING},
                started_at=now,
                heartbeat_at=now,
                worker=worker,
                progress=0,
                current_step=0,
                first_step_at=None,
                stepped_at=None,
            ):
                return job
    return None
