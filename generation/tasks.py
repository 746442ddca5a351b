"""The django-q2 entry point: fetch the job, hand it to the service."""

import logging

from generation.services import job_run
from jobs.models import VideoGenerationJob

logger = logging.getLogger(__name__)


def generate_video(job_id: str, user_id: str | None = None) -> None:
    logger.info("job=%s user_id=%s task received", job_id, user_id)
    job = VideoGenerationJob.objects.filter(pk=job_id).first()
    if job is None:
        logger.warning("job=%s user_id=%s no such job: nothing to do", job_id, user_id)
        return
    job_run(job)
