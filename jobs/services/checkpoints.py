"""
A running job's checkpoint: the engine's saved denoising state
(generation/denoise.py) as bytes, stored through the job's storage (local
disk or S3) under one fixed name per job, each save replacing the last and
never visible half-written. The job names it (checkpoint, checkpoint_step)
while it is unfinished; a requeued job goes on from it on any worker. It is
removed when the job ends (the worker, job_cancel, job_delete), and under
retention with the job's other files (STORED_FILES). docs/checkpoints.md.
"""

import logging

from django.core.files.storage import Storage, default_storage
from django.db.models import Q

from jobs.services.files import put_replacing
from jobs.models import Status, VideoGenerationJob
from videogen.logformat import log_fields

logger = logging.getLogger(__name__)

CHECKPOINT_DIRECTORY = "checkpoints"


def checkpoint_name(job: VideoGenerationJob) -> str:
    return f"{CHECKPOINT_DIRECTORY}/{job.id}.pt"


def read_checkpoint(name: str, storage: Storage = default_storage) -> bytes:
    """The stored bytes; whatever the storage raises (missing, unreachable) for the caller to report."""
    with storage.open(name, "rb") as file:
        return file.read()


def job_save_checkpoint(job: VideoGenerationJob, step: int, data: bytes) -> bool:
    """
    Save a running job's state after `step`, if the job is still this
    worker's. The row names the checkpoint before the first write, so an
    object is never stored that no row names (a worker killed between the
    two leaves a name whose object is missing, which a resume reports and
    starts over from). False when the job is no longer this worker's.
    """
    mine = Q(pk=job.pk, worker=job.worker, status=Status.RUNNING)
    name = checkpoint_name(job)
    if job.checkpoint.name != name:
        if not VideoGenerationJob.objects.filter(mine).update(checkpoint=name):
            return False
        job.checkpoint.name = name
    put_replacing(name, data, job.checkpoint.storage)
    if not VideoGenerationJob.objects.filter(mine).update(checkpoint_step=step):
        return False
    job.checkpoint_step = step
    return True


def job_drop_checkpoint(job: VideoGenerationJob) -> None:
    """
    Remove the job's checkpoint, stored or not, and forget it on the row.
    By its fixed name, so that one written after the row was read (a worker
    not yet told of a cancel) goes too. Failing storage is logged, not
    raised: the job's end must not wait on it, and retention and job_delete
    remove what is left.
    """
    name = checkpoint_name(job)
    try:
        default_storage.delete(name)
    except FileNotFoundError:
        pass
    except Exception:
        logger.warning("could not delete its checkpoint %s", name, exc_info=True, extra=log_fields(job))
        return
    VideoGenerationJob.objects.filter(pk=job.pk, checkpoint=name).update(checkpoint="", checkpoint_step=0)
    job.checkpoint.name = ""
    job.checkpoint_step = 0
