"""The django-q2 entry point: fetch the job, hand it to the service."""

import logging

from generation.services import job_run
from jobs.models import VideoGenerationJob
from videogen.logformat import log_fields

logger = logging.getLogger(__name__)


def generate_video(job_id: str, user_id: str | None = None) -> None:
    logger.info("task received", extra=log_fields(job_id=job_id, user_id=user_id))
    job = VideoGenerationJob.objects.filter(pk=job_id).first()
    if job is None:
        logger.warning("no such job: nothing to do", extra=log_fields(job_id=job_id, user_id=user_id))
        return
    job_run(job)
