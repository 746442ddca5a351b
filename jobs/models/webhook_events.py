"""
A job's webhook events and each attempt to deliver one.
"""

from django.db import models
from django.utils import timezone

from jobs.models.job import MAX_URL_LENGTH, VideoGenerationJob


class WebhookEvent(models.Model):
    """
    One event to send to a job's webhook_url: recorded with the state change,
    delivered by jobs.webhooks on its own queue until the receiver takes it
    or retries run out. Deleting the job deletes its events, which stops
    their retries.
    """

    class State(models.TextChoices):
        PENDING = "pending"  # to be sent (again) at next_attempt_at
        DELIVERED = "delivered"  # the receiver answered 2xx
        FAILED = "failed"  # a 4xx other than 429, or retries ran out

    # The webhook-id header: the same on every attempt, so receivers can
    # drop duplicates (delivery is at least once).
    id = models.CharField(primary_key=True, max_length=40)
    job = models.ForeignKey(VideoGenerationJob, on_delete=models.CASCADE, related_name="webhook_events_sent")
    type = models.CharField(max_length=32)
    url = models.CharField(max_length=MAX_URL_LENGTH)
    # The exact body that is signed and sent on every attempt.
    payload = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    # Retries stop after this (VIDEOGEN_WEBHOOK_RETRY_HOURS after the event, or after a resend).
    retry_until = models.DateTimeField()
    # An attempt in flight holds the event until then (a dead worker's hold expires).
    locked_until = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")

    class Meta:
        db_table = "webhook_events"
        ordering = ["created_at"]
        indexes = [models.Index(fields=["state", "next_attempt_at"], name="webhook_due_idx")]

    def __str__(self) -> str:
        return f"{self.type} {self.id}"


class WebhookAttempt(models.Model):
    """One HTTP request of a delivery, as the admin shows it."""

    event = models.ForeignKey(WebhookEvent, on_delete=models.CASCADE, related_name="attempt_log")
    attempted_at = models.DateTimeField(default=timezone.now)
    # None when no response came (timeout, refused, connection closed).
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField()
    # The first 1 KB of the response body, or what went wrong.
    response_body = models.TextField(blank=True, default="")
    error = models.TextField(blank=True, default="")

    class Meta:
        db_table = "webhook_attempts"
        ordering = ["attempted_at", "id"]
