import logging
import secrets

from django.db import transaction
from django.utils import timezone

from django.db.models import F

from jobs.models import ACTIVE, Status, VideoGenerationJob

logger = logging.getLogger(__name__)

# Seeds are drawn below 2**32 so they also fit generators that take 32 bits.
SEED_RANGE = 2**32


def job_create(
    *,
    user_id: str,
    prompt: str,
    model_name: str,
    fps: int,
    num_frames: int,
    width: int,
    height: int,
    num_inference_steps: int,
    guidance_scale: float,
    seed: int | None = None,
    negative_prompt: str = "",
) -> VideoGenerationJob:
    """Record a job and queue its generation once the row is committed."""
    with transaction.atomic():
        job = VideoGenerationJob.objects.create(
            user_id=user_id,
            prompt=prompt,
            negative_prompt=negative_prompt,
            model_name=model_name,
            fps=fps,
            num_frames=num_frames,
            width=width,
            height=height,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            seed=secrets.randbelow(SEED_RANGE) if seed is None else seed,
        )
        # A worker must never pick up a task for a row it cannot see yet.
        transaction.on_commit(lambda: job_enqueue(job))
    return job


def job_enqueue(job: VideoGenerationJob) -> None:
    """
    Hand the job to django-q2. If the broker refuses, the job fails with the
    reason instead of waiting forever for a task that was never queued.
    """
    from django_q.tasks import async_task

    from generation.registry import queue_for_model

    try:
        async_task(
            "generation.tasks.generate_video",
            str(job.id),
            job.user_id,
            task_name=f"generate_video {job.id}",
            # None: the default queue. A pinned model's jobs wait in its own
            # queue for the workers started on it.
            cluster=queue_for_model(job.model_name),
        )
    except Exception as exc:
        logger.exception("job=%s user_id=%s could not be queued", job.id, job.user_id)
        job.transition(
            Status.FAILED,
            from_={Status.PENDING},
            error_message=f"The job could not be queued: {exc}",
            completed_at=timezone.now(),
        )
    else:
        logger.info("job=%s user_id=%s queued on model %s", job.id, job.user_id, job.model_name)


def job_cancel(job: VideoGenerationJob) -> bool:
    """
    Cancel a pending or running job. A pending one never starts; a running
    one is interrupted by its worker at the next denoising step, which keeps
    no video. False when the job had already finished.
    """
    return job.transition(Status.CANCELLED, from_=ACTIVE, completed_at=timezone.now())


def job_rerun(job: VideoGenerationJob) -> bool:
    """
    Put a failed job back in the queue with its parameters (seed included),
    counting one more attempt. A conditional update: when two callers race,
    or the job is no longer failed, exactly one or neither succeeds, so a job
    is never queued twice. False when it was not failed.
    """
    with transaction.atomic():
        requeued = job.transition(
            Status.PENDING,
            from_={Status.FAILED},
            attempts=F("attempts") + 1,
            progress=0,
            error_message="",
            error_code="",
            started_at=None,
            completed_at=None,
            worker="",
            heartbeat_at=None,
        )
        if requeued:
            transaction.on_commit(lambda: job_enqueue(job))
    return requeued
