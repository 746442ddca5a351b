"""
The adapter between a job row and the engine: it claims a job, runs it,
stores its files and records how it ended. Elsewhere in `generation` only
the workers' life touches jobs, through jobs.recovery: a worker that starts
reaps lost jobs (generation/worker.py), and a stopping one, or the qcluster
command on its behalf, hands its job back.
"""

import logging
import tempfile
import threading
import time
from pathlib import Path

from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import DatabaseError, connection
from django.db.models import Q
from django.utils import timezone

from generation.encoding import EncodingError, encode_mp4, write_poster, write_preview
from generation.pipelines import (
    Cancelled,
    InvalidParams,
    LoadOptions,
    ModelLoadError,
    OutOfMemory,
    configure_torch,
    describe_run,
    generate_frames,
)
from generation.registry import UnknownModel
from generation.worker import current_slot, limit_task_time, shutdown_requested
from jobs.deployment import job_timeout, model_spec
from jobs.models import ErrorCode, Status, VideoGenerationJob
from jobs.metrics import record_gpu_memory
from jobs.queue import job_claim_next, pending_for
from jobs.recovery import job_hand_back, worker_name
from jobs.lifecycle import wake_up
from videogen.logformat import log_fields

logger = logging.getLogger(__name__)

# Denoising is most of the work; decoding and encoding take the rest.
DENOISE_SHARE = 90
MAX_ERROR_LENGTH = 2000


class JobLog(logging.LoggerAdapter):
    """Every log line of a generation carries the job's fields (videogen/logformat.py renders them)."""

    def process(self, msg, kwargs):
        kwargs["extra"] = {**log_fields(self.extra["job"]), **kwargs.get("extra", {})}
        return msg, kwargs


class ProgressWriter:
    """
    Called after each denoising step. Writes progress (and the heartbeat) to
    the job at most once per interval, and learns from that same conditional
    UPDATE whether the job is still running: when it was cancelled, it tells
    the engine to stop. One cheap write per interval, not a query per step.
    """

    def __init__(self, job: VideoGenerationJob, interval: float):
        self.job = job
        self.interval = interval
        self.last_write: float | None = None

    def __call__(self, step: int, total: int) -> bool:
        if shutdown_requested():
            return False
        now = time.monotonic()
        # The first and last steps are always written, the rest at most once per interval.
        if step < total and self.last_write is not None and now - self.last_write < self.interval:
            return True
        first = self.last_write is None
        self.last_write = now
        written_at = timezone.now()
        # The times of the first step and of this one give the job's own
        # step rate, for its estimated completion (jobs/estimates.py).
        times = {"first_step_at": written_at} if first else {}
        try:
            return self.job.set_progress(
                step * DENOISE_SHARE // total, current_step=step, heartbeat_at=written_at, stepped_at=written_at,
                **times,
            )
        except DatabaseError:
            # A database blip must not throw away minutes of GPU work: keep
            # denoising, and write again at the next interval.
            logger.warning("could not write progress", exc_info=True, extra=log_fields(self.job))
            connection.close_if_unusable_or_obsolete()
            return True


class Heartbeat:
    """
    Refreshes the job's heartbeat from a thread while the job runs, so a long
    model load, VAE decode or encode (no denoising steps to report) does not
    look like a dead worker to the reaper.
    """

    def __init__(self, job: VideoGenerationJob, interval: float):
        self.job_id = job.id
        self.worker = job.worker
        self.log_fields = log_fields(job)
        self.interval = interval
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.beat, name=f"heartbeat {job.id}", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stopped.set()
        self.thread.join()

    def beat(self) -> None:
        try:
            while not self.stopped.wait(self.interval):
                try:
                    VideoGenerationJob.objects.filter(
                        pk=self.job_id, status=Status.RUNNING, worker=self.worker
                    ).update(heartbeat_at=timezone.now())
                    record_gpu_memory(self.worker, current_slot().device)
                except DatabaseError:
                    logger.warning("could not write heartbeat", exc_info=True, extra=self.log_fields)
                    connection.close_if_unusable_or_obsolete()
        finally:
            # This thread's own connection.
            connection.close()


def retry_database(write, *, attempts: int = 6, delay: float = 1.0):
    """
    Run a final state write, retrying while the database is unreachable (a
    restart takes seconds), so a finished job is not left running.
    """
    for attempt in range(1, attempts + 1):
        try:
            return write()
        except DatabaseError:
            if attempt == attempts:
                raise
            logger.warning("database unavailable; retrying in %.0fs", delay, exc_info=True)
            connection.close_if_unusable_or_obsolete()
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


class _TemporaryFile(File):
    # FileSystemStorage moves a file that has a temporary path instead of
    # copying it: an atomic rename when both are on one filesystem. S3Storage
    # uploads it instead; an S3 object is visible only once whole.
    def temporary_file_path(self) -> str:
        return self.file.name


class StorageWriteError(OSError):
    """Storing a finished file failed (the bucket unreachable, access denied): the job fails as `encode`."""


def load_options() -> LoadOptions:
    return LoadOptions(
        device=current_slot().engine_device,
        dtype=settings.VIDEOGEN_DTYPE,
        max_loaded=settings.VIDEOGEN_MAX_LOADED_MODELS,
        gpu_memory_gib=settings.VIDEOGEN_GPU_MEMORY_GB,
    )


def job_run_next(queue: str | None) -> VideoGenerationJob | None:
    """
    Claim the next job this worker's queue serves, by the fair policy
    (jobs/queue.py), and run it; None when nothing was pending. A job
    cancelled while it waited is never claimed, so it costs nothing.
    """
    job = job_claim_next(queue=queue, worker=worker_name(slot=current_slot().index, device=current_slot().device))
    if job is None:
        logger.info("woken up on queue %s: nothing pending", queue or "default")
        return None
    log = JobLog(logger, {"job": job})
    limit_task_time(job_timeout(job.model_name))
    log.info(
        "running %s: %d frames %dx%d, %d steps, seed %s, attempt %d",
        job.model_name, job.num_frames, job.width, job.height, job.num_inference_steps, job.seed, job.attempts,
    )
    started = time.monotonic()
    with Heartbeat(job, settings.VIDEOGEN_HEARTBEAT_INTERVAL):
        _run_claimed(job, log, started)
    record_gpu_memory(job.worker, current_slot().device)
    # Look again before returning: more work means another wake-up, so one
    # wake-up drains the queue. A new task rather than a loop here, because
    # django-q2's timeout is per task and each job gets its own.
    try:
        if pending_for(queue).exists():
            wake_up(queue)
    except Exception:
        logger.warning("could not send the next wake-up; the reaper will", exc_info=True)
    return job


def _run_claimed(job: VideoGenerationJob, log: JobLog, started: float) -> None:
    # Every write after the claim holds only while the job is still this
    # worker's: if the reaper gave it to another (this worker looked dead),
    # the other one's run is the one that counts.
    mine = Q(worker=job.worker)
    run_info: dict = {}
    try:
        configure_torch(settings.VIDEOGEN_TORCH_THREADS)
        spec = model_spec(job.model_name)
        options = load_options()
        # The device as the operator listed it (cuda:3), not as the bound process sees it (cuda:0).
        run_info = {**describe_run(spec, options), "device": current_slot().device, "slot": current_slot().index}
        frames = generate_frames(
            spec,
            job.params,
            options=options,
            on_step=ProgressWriter(job, settings.VIDEOGEN_PROGRESS_INTERVAL),
        )
        stored, file_size = _store_outputs(job, frames)
    except Cancelled as stop:
        if shutdown_requested():
            _hand_back(job, log, stop)
        else:
            log.info(
                "cancelled: stopped after step %d of %d, no video kept (cancelled, or no longer this worker's)",
                stop.step, stop.total,
            )
        return
    except BaseException as exc:
        # BaseException: django-q2's timeout is a SystemExit, and a job must
        # not stay running after one. Anything not an Exception is re-raised
        # once the job is marked.
        code, message = classify_failure(exc)
        log.exception("failed (%s) after %.1fs", code, time.monotonic() - started)
        # The exception's own text (paths, hosts) is for the operator: the
        # admin shows run_info whole, clients see it without this.
        run_info = {**run_info, "error_detail": f"{exc.__class__.__name__}: {exc}"[:MAX_ERROR_LENGTH]}
        # _store_outputs removes what it stored when it fails; nothing else to clean.
        retry_database(
            lambda: job.fail(code, message[:MAX_ERROR_LENGTH], from_={Status.RUNNING}, where=mine, run_info=run_info)
        )
        if not isinstance(exc, Exception):
            raise
        return

    completed = retry_database(
        lambda: job.transition(
            Status.COMPLETED,
            from_={Status.RUNNING},
            where=mine,
            video=stored[0],
            poster=stored[1],
            preview=stored[2],
            file_size_bytes=file_size,
            video_duration_seconds=job.num_frames / job.fps,
            progress=100,
            current_step=job.num_inference_steps,
            run_info=run_info,
            completed_at=timezone.now(),
        )
    )
    if not completed:
        # The write may have landed before the connection dropped, and its
        # retry then finds the job no longer running: only the row says
        # whether these files are the job's now.
        completed = retry_database(
            lambda: VideoGenerationJob.objects.filter(pk=job.pk, status=Status.COMPLETED, video=stored[0]).exists()
        )
    if completed:
        log.info("completed in %.1fs: %s (%d bytes)", time.monotonic() - started, stored[0], file_size)
    else:
        # Cancelled while it was encoding, or no longer this worker's: keep no video.
        _delete_stored(stored)
        log.info("left running while encoding; output discarded")


def _hand_back(job: VideoGenerationJob, log: JobLog, stop: Cancelled) -> None:
    retry_database(lambda: job_hand_back(job))
    log.info("worker stopping: handed back after step %d of %d", stop.step, stop.total)


def _store_outputs(job: VideoGenerationJob, frames) -> tuple[list[str], int]:
    """Encode video, poster and preview, and move them into storage. Returns their names and the video's size."""
    stored: list[str] = []
    try:
        with tempfile.TemporaryDirectory(prefix="videogen-") as workdir:
            work = Path(workdir)
            files = [
                (encode_mp4(frames, work / f"{job.id}.mp4", fps=job.fps), "videos"),
                (write_poster(frames[0], work / f"{job.id}.jpg"), "posters"),
                (write_preview(frames, work / f"{job.id}.webp", fps=job.fps), "previews"),
            ]
            file_size = files[0][0].stat().st_size
            for path, folder in files:
                name = f"{folder}/{path.name}"
                with open(path, "rb") as handle:
                    try:
                        stored.append(default_storage.save(name, _TemporaryFile(handle)))
                    except Exception as exc:
                        if isinstance(exc, OSError):
                            raise
                        # botocore's errors are not OSErrors; name what failed.
                        raise StorageWriteError(f"could not store {name}: {exc}") from exc
    except BaseException:
        _delete_stored(stored)
        raise
    return stored, file_size


def classify_failure(exc: BaseException) -> tuple[str, str]:
    """
    The job's error_code and a message a person can act on. Clients read it:
    where the exception's text is not ours (a library's, the OS's) it may
    name paths and hosts, so the message says what failed and the text goes
    to the log and the admin (run_info's error_detail).
    """
    from django_q.exceptions import TimeoutException

    if isinstance(exc, TimeoutException):
        return ErrorCode.TIMEOUT, f"Generation timed out: {exc}"
    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
        return ErrorCode.WORKER_LOST, "Generation was interrupted: the worker was stopped while running this job."
    if isinstance(exc, OutOfMemory):
        return ErrorCode.OUT_OF_MEMORY, f"Generation failed: {exc}"
    if isinstance(exc, ModelLoadError):
        return ErrorCode.MODEL_LOAD, (
            f"Generation failed: could not load model {exc.model!r} on the worker (the operator can see why)."
        )
    if isinstance(exc, (InvalidParams, UnknownModel)):
        return ErrorCode.INVALID_INPUT, f"Generation failed: {exc}"
    if isinstance(exc, (EncodingError, OSError)):
        return ErrorCode.ENCODE, "Generation failed while writing the video (the operator can see why)."
    return ErrorCode.INTERNAL, f"Generation failed: an internal error ({exc.__class__.__name__}; the operator can see why)."


def _delete_stored(names: list[str]) -> None:
    for name in names:
        try:
            default_storage.delete(name)
        except Exception:
            # OSError on disk, botocore's errors on S3: log the orphan and go
            # on deleting the others.
            logger.warning("could not delete %s", name, exc_info=True)
