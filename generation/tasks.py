"""The django-q2 entry point: a wake-up; the service claims and runs the next job."""

import logging

from generation.runner import job_run_next
from generation.worker import worker_queue
from videogen.logformat import log_fields

logger = logging.getLogger(__name__)


def generate_video(job_id: str | None = None, user_id: str | None = None) -> None:
    """
    "A worker should look for work" on this worker's queue. job_id and
    user_id name the job whose submit sent the wake-up (for the log); tasks
    queued before the fair policy carry the same arguments and are read the
    same way: the job that runs is the one the policy picks.
    """
    logger.info("task received: looking for work", extra=log_fields(job_id=job_id, user_id=user_id))
    job_run_next(worker_queue())
