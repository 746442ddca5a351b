"""
The adapter between a job row and the engine: the only place in `generation`
that reads or writes jobs.
"""

import logging
import tempfile
import time
from pathlib import Path

from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage
from django.utils import timezone

from generation.encoding import encode_mp4, write_poster
from generation.pipelines import GenerationParams, configure_torch, generate_frames
from generation.registry import get_spec
from jobs.models import Status, VideoGenerationJob

logger = logging.getLogger(__name__)

# Denoising is most of the work; decoding and encoding take the rest.
DENOISE_SHARE = 90
MAX_ERROR_LENGTH = 2000


class JobLog(logging.LoggerAdapter):
    """Every log line of a generation carries job_id and user_id."""

    def process(self, msg, kwargs):
        return f"job={self.extra['job_id']} user_id={self.extra['user_id']} {msg}", kwargs


class ProgressWriter:
    """Writes denoising progress to the job, at most once per interval."""

    def __init__(self, job: VideoGenerationJob, interval: float):
        self.job = job
        self.interval = interval
        self.last_write: float | None = None

    def __call__(self, step: int, total: int) -> None:
        now = time.monotonic()
        # The first and last steps are always written, the rest at most once per interval.
        if step < total and self.last_write is not None and now - self.last_write < self.interval:
            return
        self.last_write = now
        self.job.set_progress(step * DENOISE_SHARE // total)


class _TemporaryFile(File):
    # FileSystemStorage moves a file that has a temporary path instead of
    # copying it: an atomic rename when both are on one filesystem.
    def temporary_file_path(self) -> str:
        return self.file.name


def job_run(job: VideoGenerationJob) -> None:
    log = JobLog(logger, {"job_id": job.id, "user_id": job.user_id})
    # The claim. A duplicate delivery, or a job cancelled while it waited,
    # finds the row no longer pending and leaves.
    claimed = job.transition(
        Status.RUNNING,
        from_={Status.PENDING},
        started_at=timezone.now(),
        progress=0,
    )
    if not claimed:
        job.refresh_from_db(fields=["status"])
        log.info("not pending but %s: nothing to do", job.status)
        return

    log.info(
        "running %s: %d frames %dx%d, %d steps, seed %s",
        job.model_name, job.num_frames, job.width, job.height, job.num_inference_steps, job.seed,
    )
    started = time.monotonic()
    stored: list[str] = []
    try:
        configure_torch(settings.VIDEOGEN_TORCH_THREADS)
        frames = generate_frames(
            get_spec(job.model_name),
            GenerationParams(
                prompt=job.prompt,
                negative_prompt=job.negative_prompt,
                width=job.width,
                height=job.height,
                num_frames=job.num_frames,
                num_inference_steps=job.num_inference_steps,
                guidance_scale=job.guidance_scale,
                seed=job.seed,
            ),
            device=settings.VIDEOGEN_DEVICE,
            on_step=ProgressWriter(job, settings.VIDEOGEN_PROGRESS_INTERVAL),
        )
        with tempfile.TemporaryDirectory(prefix="videogen-") as workdir:
            video_path = encode_mp4(frames, Path(workdir) / job.video_filename, fps=job.fps)
            poster_path = write_poster(frames[0], Path(workdir) / f"{job.id}.jpg")
            file_size = video_path.stat().st_size
            with open(video_path, "rb") as video_file:
                stored.append(default_storage.save(f"videos/{job.id}.mp4", _TemporaryFile(video_file)))
            with open(poster_path, "rb") as poster_file:
                stored.append(default_storage.save(f"posters/{job.id}.jpg", _TemporaryFile(poster_file)))
    except BaseException as exc:
        # BaseException: django-q2's timeout is a SystemExit, and a job must
        # not stay running after one. Anything not an Exception is re-raised
        # once the job is marked.
        log.exception("failed after %.1fs", time.monotonic() - started)
        _delete_stored(stored)
        job.transition(
            Status.FAILED,
            from_={Status.RUNNING},
            error_message=describe_failure(exc)[:MAX_ERROR_LENGTH],
            completed_at=timezone.now(),
        )
        if not isinstance(exc, Exception):
            raise
        return

    completed = job.transition(
        Status.COMPLETED,
        from_={Status.RUNNING},
        video=stored[0],
        poster=stored[1],
        file_size_bytes=file_size,
        video_duration_seconds=job.num_frames / job.fps,
        progress=100,
        completed_at=timezone.now(),
    )
    if completed:
        log.info("completed in %.1fs: %s (%d bytes)", time.monotonic() - started, stored[0], file_size)
    else:
        # Cancelled (or failed by an operator) while it ran: keep no video.
        _delete_stored(stored)
        log.info("finished after it left running; output discarded")


def describe_failure(exc: BaseException) -> str:
    from django_q.exceptions import TimeoutException

    if isinstance(exc, TimeoutException):
        return f"Generation timed out: {exc}"
    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
        return "Generation was interrupted: the worker was stopped while running this job."
    message = str(exc) or exc.__class__.__name__
    return f"Generation failed: {message}"


def _delete_stored(names: list[str]) -> None:
    for name in names:
        try:
            default_storage.delete(name)
        except OSError:
            logger.warning("could not delete %s", name, exc_info=True)
