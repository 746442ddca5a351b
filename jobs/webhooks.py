"""
Webhooks: a job's state changes, sent to its webhook_url as Standard
Webhooks (https://www.standardwebhooks.com/) signed with
VIDEOGEN_WEBHOOK_SECRET.

The state change records a WebhookEvent in its own transaction (a
receiver of job_status_changed, which VideoGenerationJob.transition sends); a django-q2 task on the webhook queue
(VIDEOGEN_WEBHOOK_QUEUE, its own cluster) sends it, so no generation waits on
a receiver. Each attempt is stored. Timeouts, connection errors, 5xx and 429
are retried with exponential backoff and jitter for VIDEOGEN_WEBHOOK_RETRY_HOURS;
any other 4xx ends the event. A scheduled sweep queues events whose retry is
due, or whose task was lost: delivery is at least once, and receivers drop
duplicates by the webhook-id header.

Requests go only to public addresses unless the host is in
VIDEOGEN_WEBHOOK_ALLOWED_HOSTS, checked at submit and again for the address
actually connected to (the resolved address is pinned for the connection, so
a DNS answer that changes in between cannot point it inside). Redirects are
never followed.
"""

import http.client
import json
import logging
import random
import socket
import ssl
import threading
import time
import uuid
from dataclasses import dataclass
from functools import lru_cache
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.dispatch import receiver
from django.utils import timezone
from rest_framework.utils.encoders import JSONEncoder

from jobs.models import WEBHOOK_STATUSES, VideoGenerationJob, WebhookAttempt, WebhookEvent
from jobs.outbound import RefusedURL, check_public_url, connect_checked
from jobs.representation import JOB_STATUS_FIELDS, job_representation
from jobs.signals import job_status_changed
from videogen.logformat import log_fields

logger = logging.getLogger(__name__)

BODY_KEPT = 1024
# Longest wait between two attempts.
MAX_BACKOFF = 3600.0
# A retry due within this many seconds waits in the webhook worker; a later
# one is queued again by the sweep (jobs.tasks.send_due_webhooks, every minute).
INLINE_BACKOFF = 15.0


def check_url(url: str, *, resolve: bool = True) -> None:
    """
    Raise RefusedURL unless the URL is one deliveries may go to: https (or
    http to an allowed host), at most 2,000 characters, no credentials, and
    a host that resolves only to public addresses (or is allowed).
    """
    check_public_url(
        url, allowed_hosts=settings.VIDEOGEN_WEBHOOK_ALLOWED_HOSTS, setting="VIDEOGEN_WEBHOOK_ALLOWED_HOSTS",
        resolve=resolve,
    )


def _connect(host: str, port: int, timeout: float) -> socket.socket:
    """A socket connected to the host, at an address checked now (not at submit)."""
    return connect_checked(host, port, timeout, allowed_hosts=settings.VIDEOGEN_WEBHOOK_ALLOWED_HOSTS)


class _HTTPConnection(http.client.HTTPConnection):
    def connect(self):
        self.sock = _connect(self.host, self.port, self.timeout)


@lru_cache(maxsize=4)
def _tls_context(ca_bundle: str) -> ssl.SSLContext:
    """The system's trusted CAs, and those of VIDEOGEN_WEBHOOK_CA_BUNDLE (a PEM file) when set."""
    context = ssl.create_default_context()
    if ca_bundle:
        context.load_verify_locations(cafile=ca_bundle)
    return context


class _HTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int | None, timeout: float):
        super().__init__(host, port, timeout=timeout, context=_tls_context(settings.VIDEOGEN_WEBHOOK_CA_BUNDLE))

    def connect(self):
        sock = _connect(self.host, self.port, self.timeout)
        # Connected to the checked address; the certificate is checked against
        # the host name (sent as SNI), never the address.
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


@dataclass
class Outcome:
    status_code: int | None
    latency_ms: int
    body: str = ""
    error: str = ""
    # The URL was refused (a non-public address): asking again would only probe.
    refused: bool = False

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def retryable(self) -> bool:
        # No answer (timeout, refused, reset), a server error or "slow down".
        # Other answers (4xx, and 3xx: redirects are not followed) are final.
        if self.refused:
            return False
        return self.status_code is None or self.status_code >= 500 or self.status_code == 429


def signature_headers(event_id: str, payload: str, at: datetime) -> dict[str, str]:
    from standardwebhooks import Webhook

    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(settings.VIDEOGEN_WEBHOOK_SECRET).sign(event_id, at, payload),
    }


def send(url: str, event_id: str, payload: str) -> Outcome:
    """One POST of the event, within VIDEOGEN_WEBHOOK_TIMEOUT seconds all told."""
    started = time.monotonic()
    timeout = settings.VIDEOGEN_WEBHOOK_TIMEOUT
    parts = urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "videogen-webhooks",
        **signature_headers(event_id, payload, datetime.now(dt_timezone.utc)),
    }
    connection_class = _HTTPSConnection if parts.scheme == "https" else _HTTPConnection
    connection = connection_class(parts.hostname, parts.port, timeout=timeout)
    # The socket timeout bounds each read; this bounds the whole exchange
    # (a receiver that trickles a byte every few seconds).
    watchdog = threading.Timer(timeout, _abort, args=(connection,))
    watchdog.start()
    try:
        check_url(url, resolve=False)
        connection.request("POST", path, body=payload.encode(), headers=headers)
        response = connection.getresponse()
        body = response.read(BODY_KEPT).decode("utf-8", "replace")
        return Outcome(response.status, _elapsed_ms(started), body=body)
    except RefusedURL as exc:
        return Outcome(None, _elapsed_ms(started), error=f"refused: {exc}", refused=True)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        if time.monotonic() - started >= timeout:
            return Outcome(None, _elapsed_ms(started), error=f"timed out after {timeout:g} s")
        return Outcome(None, _elapsed_ms(started), error=f"{exc.__class__.__name__}: {exc}"[:BODY_KEPT])
    finally:
        watchdog.cancel()
        connection.close()


def _abort(connection: http.client.HTTPConnection) -> None:
    sock = connection.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def backoff(attempt: int) -> float:
    """Seconds to wait after the attempt-th failure: exponential, capped, with jitter."""
    ceiling = min(settings.VIDEOGEN_WEBHOOK_RETRY_BASE * 2 ** (attempt - 1), MAX_BACKOFF)
    return ceiling * random.uniform(0.5, 1.0)


# --- Recording and queueing ----------------------------------------------------


def event_payload(job: VideoGenerationJob, event_type: str, at: datetime) -> str:
    # The job exactly as GET /job answers it, with links on VIDEOGEN_PUBLIC_URL.
    body = {"type": event_type, "timestamp": at, "data": job_representation(job, JOB_STATUS_FIELDS)}
    return json.dumps(body, cls=JSONEncoder, separators=(",", ":"))


@receiver(job_status_changed, dispatch_uid="jobs.webhooks.status_changed")
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
