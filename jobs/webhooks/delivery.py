"""
A job's webhook events: recorded in the transaction of the status change
(a receiver of job_status_changed), sent by a task on the webhook queue,
retried until the receiver takes one or its retries run out.
"""

import json
import logging
import time
import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.dispatch import receiver
from django.utils import timezone
from rest_framework.utils.encoders import JSONEncoder

from jobs.models import WEBHOOK_STATUSES, VideoGenerationJob, WebhookAttempt, WebhookEvent
from jobs.models.signals import job_status_changed
from jobs.representation import JOB_STATUS_FIELDS, job_representation
from jobs.webhooks.sending import BODY_KEPT, Outcome, backoff, send
from videogen.logformat import log_fields

logger = logging.getLogger(__name__)

# A retry due within this many seconds waits in the webhook worker; a later
# one is queued again by the sweep (jobs.tasks.send_due_webhooks, every minute).
INLINE_BACKOFF = 15.0


# --- Recording and queueing ----------------------------------------------------


def event_payload(job: VideoGenerationJob, event_type: str, at: datetime) -> str:
    # The job exactly as GET /job answers it, with links on VIDEOGEN_PUBLIC_URL.
    body = {"type": event_type, "timestamp": at, "data": job_representation(job, JOB_STATUS_FIELDS)}
    return json.dumps(body, cls=JSONEncoder, separators=(",", ":"))


@receiver(job_status_changed, dispatch_uid="jobs.webhooks.delivery.status_changed")
def _status_changed(sender, *, job: VideoGenerationJob, status: str, **kwargs) -> None:
    # webhook_url is set at submit and never changes: a job loaded without
    # one needs no look-up (most jobs, every state change).
    if status in WEBHOOK_STATUSES and ("webhook_url" in job.get_deferred_fields() or job.webhook_url):
        record_event(job.pk, status)


def record_event(job_id, status: str) -> WebhookEvent | None:
    """
    Inside transition()'s transaction, after the UPDATE: the event for the
    job's new status, when its webhook asks for it, and its delivery queued
    once that commits.
    """
    job = VideoGenerationJob.objects.filter(pk=job_id).exclude(webhook_url="").first()
    if job is None or status not in job.webhook_events:
        return None
    now = timezone.now()
    event_type = f"job.{status}"
    event = WebhookEvent.objects.create(
        id=f"msg_{uuid.uuid4().hex}",
        job=job,
        type=event_type,
        url=job.webhook_url,
        payload=event_payload(job, event_type, now),
        created_at=now,
        next_attempt_at=now,
        retry_until=now + timedelta(hours=settings.VIDEOGEN_WEBHOOK_RETRY_HOURS),
    )
    transaction.on_commit(lambda: enqueue_delivery(event.id))
    return event


def enqueue_delivery(event_id: str) -> None:
    from django_q.tasks import async_task

    try:
        async_task(
            "jobs.tasks.deliver_webhook",
            event_id,
            task_name=f"deliver_webhook {event_id}",
            cluster=settings.VIDEOGEN_WEBHOOK_QUEUE,
        )
    except Exception:
        # The event is in the database: the sweep queues it within a minute.
        logger.exception("webhook event %s could not be queued; the sweep will", event_id)


def send_due() -> int:
    """Queue every pending event whose attempt is due and not held (the scheduled sweep)."""
    now = timezone.now()
    due = list(
        WebhookEvent.objects.filter(state=WebhookEvent.State.PENDING, next_attempt_at__lte=now)
        .filter(Q(locked_until__isnull=True) | Q(locked_until__lt=now))
        .values_list("id", flat=True)[:1000]
    )
    for event_id in due:
        enqueue_delivery(event_id)
    return len(due)


def resend(event: WebhookEvent) -> bool:
    """Send an event again (the admin's action), with a fresh retry window; False if its job is gone."""
    now = timezone.now()
    updated = WebhookEvent.objects.filter(pk=event.pk).update(
        state=WebhookEvent.State.PENDING,
        next_attempt_at=now,
        locked_until=None,
        retry_until=now + timedelta(hours=settings.VIDEOGEN_WEBHOOK_RETRY_HOURS),
        last_error="",
    )
    if updated:
        transaction.on_commit(lambda: enqueue_delivery(event.pk))
    return bool(updated)


# --- Delivering ----------------------------------------------------------------


def _claim(event_id: str) -> WebhookEvent | None:
    """Hold a due event for one attempt; None when it is not due, held, done, or gone (its job deleted)."""
    now = timezone.now()
    hold = now + timedelta(seconds=settings.VIDEOGEN_WEBHOOK_TIMEOUT + 60)
    claimed = (
        WebhookEvent.objects.filter(pk=event_id, state=WebhookEvent.State.PENDING, next_attempt_at__lte=now)
        .filter(Q(locked_until__isnull=True) | Q(locked_until__lt=now))
        .update(locked_until=hold, attempts=F("attempts") + 1)
    )
    if claimed != 1:
        return None
    return WebhookEvent.objects.filter(pk=event_id).first()


def deliver(event_id: str) -> str:
    """
    Attempt the event until it is delivered, fails, or its next retry is far
    enough off to leave to the sweep. Returns the event's state.
    """
    started = time.monotonic()
    while True:
        event = _claim(event_id)
        if event is None:
            return "skipped"
        outcome = send(event.url, event.id, event.payload)
        state, delay = _record(event, outcome)
        logger.info(
            "webhook %s %s: attempt %d, %s in %d ms -> %s",
            event.id, event.type, event.attempts, outcome.status_code or outcome.error, outcome.latency_ms, state,
            extra=log_fields(job_id=event.job_id),
        )
        # Well inside the webhook cluster's task timeout (120 s): a long run
        # of quick retries is left to the sweep too.
        if state != WebhookEvent.State.PENDING or delay > INLINE_BACKOFF or time.monotonic() - started > 60:
            return state
        time.sleep(delay)


def _record(event: WebhookEvent, outcome: Outcome) -> tuple[str, float]:
    now = timezone.now()
    delay = 0.0
    if outcome.delivered:
        fields = {"state": WebhookEvent.State.DELIVERED, "delivered_at": now, "last_error": ""}
    elif not outcome.retryable:
        why = outcome.error or f"the receiver answered {outcome.status_code}"
        fields = {"state": WebhookEvent.State.FAILED, "last_error": why}
    else:
        delay = backoff(event.attempts)
        why = outcome.error or f"the receiver answered {outcome.status_code}"
        if now + timedelta(seconds=delay) > event.retry_until:
            fields = {"state": WebhookEvent.State.FAILED, "last_error": f"gave up after {event.attempts} attempts: {why}"}
        else:
            fields = {"next_attempt_at": now + timedelta(seconds=delay), "last_error": why}
    with transaction.atomic():
        # Only while the event still exists: deleting the job deletes its
        # events, and that is what stops their retries.
        updated = WebhookEvent.objects.filter(pk=event.pk, locked_until=event.locked_until).update(
            locked_until=None, **fields
        )
        if updated != 1:
            return "gone", 0.0
        WebhookAttempt.objects.create(
            event_id=event.pk,
            attempted_at=now,
            status_code=outcome.status_code,
            latency_ms=outcome.latency_ms,
            response_body=outcome.body[:BODY_KEPT],
            error=outcome.error,
        )
    return fields.get("state", WebhookEvent.State.PENDING), delay
