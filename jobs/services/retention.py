"""
VIDEOGEN_RETENTION_DAYS: the files of finished jobs older than that (their
outputs and their input images) are removed; the row stays, with expired_at set, and downloads answer 410.
Run every hour by django-q2's scheduler (migration 0013) and on demand by
`manage.py expire_outputs`.
"""

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from jobs.services.files import StorageUnavailable, delete_files
from jobs.models import FINISHED, STORED_FILES, VideoGenerationJob
from videogen.logformat import log_fields

logger = logging.getLogger(__name__)


def expired_jobs(now: datetime | None = None):
    """Finished jobs past retention whose files are still kept; none when retention is unset."""
    days = settings.VIDEOGEN_RETENTION_DAYS
    if days is None:
        return VideoGenerationJob.objects.none()
    cutoff = (now or timezone.now()) - timedelta(days=days)
    # Strictly older: a job finished exactly `days` ago is still within retention.
    return VideoGenerationJob.objects.filter(
        status__in=FINISHED, completed_at__lt=cutoff, expired_at__isnull=True
    ).order_by("completed_at")


def expire_outputs(*, dry_run: bool = False, now: datetime | None = None) -> list[VideoGenerationJob]:
    """Remove the files of every job expired_jobs() finds and mark it expired; the jobs it expired (or would)."""
    now = now or timezone.now()
    # With what log_fields() reads, so that a log line costs no query.
    fields = ("id", "user_id", "model_name", "mode", "worker", "status", "completed_at", *STORED_FILES)
    candidates = list(expired_jobs(now).only(*fields))
    if dry_run:
        return candidates
    expired = []
    for job in candidates:
        try:
            delete_files([getattr(job, name).name for name in STORED_FILES])
        except StorageUnavailable:
            # The row keeps naming its files, so the next run tries again.
            logger.exception("could not remove expired files", extra=log_fields(job))
            continue
        # Conditional, like every write to a job that others may be changing.
        if expired_jobs(now).filter(pk=job.pk).update(expired_at=now, **{name: "" for name in STORED_FILES}):
            expired.append(job)
            logger.info("outputs expired (finished %s)", job.completed_at, extra=log_fields(job))
    return expired
