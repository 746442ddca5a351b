"""
The adapter between a job row and the engine: it claims a job, runs it,
stores its files and records how it ended. Elsewhere in `generation` only
the workers' life touches jobs, through jobs.services.recovery: a worker that starts
reaps lost jobs (generation/worker.py), and a stopping one, or the qcluster
command on its behalf, hands its job back.
"""

import dataclasses
import functools
import logging
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import DatabaseError, connection
from django.db.models import Q
from django.utils import timezone

from generation.encoding import EncodingError, encode_mp4, read_frames, write_poster, write_preview
from generation.images import fit_image, prepare_image
from generation.params import GenerationParams
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
from generation.preview import LatentPreview
from generation.registry import UnknownModel
from generation.worker import current_slot, limit_task_time, shutdown_requested
from jobs.services.checkpoints import job_drop_checkpoint, job_save_checkpoint, read_checkpoint
from jobs.scheduling.deployment import job_timeout, model_spec, queue_for_model
from jobs.services.files import live_preview_name, put_replacing
from jobs.models import FINISHED, ErrorCode, Mode, PendingFile, Status, VideoGenerationJob
from jobs.metrics.series import record_gpu_memory
from jobs.scheduling.queue import job_claim_next, jobs_preempt_for_high_priority, pending_for
from jobs.services.recovery import job_hand_back, worker_name
from jobs.services.lifecycle import wake_up
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
        # Told to stop because the job was preempted (to yield), not cancelled.
        self.preempted = False

    def __call__(self, step: int, total: int) -> bool:
        if should_yield():
            return False
        now = time.monotonic()
        # The first and last steps are always written, the rest at most once per interval.
        if step < total and self.last_write is not None and now - self.last_write < self.interval:
            return True
        first = self.last_write is None
        self.last_write = now
        written_at = timezone.now()
        # The times of the first step and of this one give the job's own
        # step rate, for its estimated completion (jobs/scheduling/estimates.py).
        times = {"first_step_at": written_at} if first else {}
        if first:
            self.first_step, self.first_written_at = step, written_at
        elif self.first_step > 1 and step > self.first_step:
            # A resumed run's first step was not step 1: first_step_at is put
            # where step 1 would have been at this run's rate, so that
            # (stepped_at - first_step_at) / (current_step - 1) is that rate.
            per_step = (written_at - self.first_written_at) / (step - self.first_step)
            times = {"first_step_at": written_at - per_step * (step - 1)}
        try:
            still_running = self.job.set_progress(
                step * DENOISE_SHARE // total, current_step=step, heartbeat_at=written_at, stepped_at=written_at,
                **times,
            )
            if not still_running:
                self.preempted = self.job.asked_to_yield()
            return still_running
        except DatabaseError:
            # A database blip must not throw away minutes of GPU work: keep
            # denoising, and write again at the next interval.
            logger.warning("could not write progress", exc_info=True, extra=log_fields(self.job))
            connection.close_if_unusable_or_obsolete()
            return True


class LivePreviewWriter:
    """
    Called with each step's latents: every `every` steps, stores the job's
    live preview (generation/preview.py) over the previous one. A storage
    failure costs the preview, never the run.
    """

    def __init__(self, job: VideoGenerationJob, pipeline_class: str, every: int):
        self.name = live_preview_name(job.id)
        self.preview = LatentPreview(pipeline_class)
        self.every = every
        self.log_fields = log_fields(job)

    def __call__(self, step: int, latents) -> None:
        if step % self.every:
            return
        try:
            # Replaced in one step: a reader never finds the preview missing between two redraws.
            put_replacing(self.name, self.preview.jpeg(latents), durable=False)
        except Exception:
            logger.warning("could not store the live preview", exc_info=True, extra=self.log_fields)


def remove_live_preview(job: VideoGenerationJob) -> None:
    try:
        default_storage.delete(live_preview_name(job.id))
    except Exception:
        logger.warning("could not remove the live preview", exc_info=True, extra=log_fields(job))


def should_yield() -> bool:
    """
    Whether the running job is to stop at this step and go back to pending
    (job_yield) rather than run on: today when its worker is stopping.
    """
    return shutdown_requested()


class CheckpointWriter:
    """
    Given the engine's state at a step boundary (at most once per
    VIDEOGEN_CHECKPOINT_SECONDS), stores it as the job's checkpoint. A
    failed save is logged and the job runs on: it only loses what a resume
    could have kept.
    """

    def __init__(self, job: VideoGenerationJob):
        self.job = job
        self.saved_step: int | None = None
        self.seconds = 0.0
        self.saves = 0

    def __call__(self, step: int, data: bytes) -> None:
        began = time.monotonic()
        try:
            if job_save_checkpoint(self.job, step, data):
                self.saved_step = step
                self.saves += 1
        except Exception:
            logger.warning("could not save a checkpoint after step %d", step, exc_info=True, extra=log_fields(self.job))
            connection.close_if_unusable_or_obsolete()
        finally:
            self.seconds += time.monotonic() - began


class Heartbeat:
    """
    Refreshes the job's heartbeat from a thread while the job runs, so a long
    model load, VAE decode or encode (no denoising steps to report) does not
    look like a dead worker to the reaper. Each beat also looks for a
    high-priority job of this queue waiting long enough to preempt one
    (jobs.scheduling.queue.jobs_preempt_for_high_priority): only busy workers can.
    """

    def __init__(self, job: VideoGenerationJob, interval: float):
        self.job_id = job.id
        self.queue = queue_for_model(job.model_name)
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
                    jobs_preempt_for_high_priority(self.queue)
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
    (jobs/scheduling/queue.py), and run it; None when nothing was pending. A job
    cancelled while it waited is never claimed, so it costs nothing.
    """
    job = job_claim_next(queue=queue, worker=worker_name(slot=current_slot().index, device=current_slot().device))
    if job is None:
        logger.info("woken up on queue %s: nothing pending", queue or "default")
        return None
    log = JobLog(logger, {"job": job})
    limit_task_time(job_timeout(job.model_name))
    log.info(
        "running %s %s: %d frames %dx%d, %d steps, seed %s, attempt %d",
        job.model_name, job.mode, job.num_frames, job.width, job.height, job.num_inference_steps, job.seed,
        job.attempts,
    )
    started = time.monotonic()
    with Heartbeat(job, settings.VIDEOGEN_HEARTBEAT_INTERVAL):
        try:
            _run_claimed(job, log, started)
        finally:
            remove_live_preview(job)
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
    checkpoints = CheckpointWriter(job)
    progress = ProgressWriter(job, settings.VIDEOGEN_PROGRESS_INTERVAL)
    try:
        configure_torch(settings.VIDEOGEN_TORCH_THREADS)
        spec = model_spec(job.model_name)
        options = load_options()
        # The device as the operator listed it (cuda:3), not as the bound process sees it (cuda:0).
        run_info = {**describe_run(spec, options), "device": current_slot().device, "slot": current_slot().index}
        if job.preemptions:
            run_info["preemptions"] = job.preemptions
        inputs = engine_inputs(job)
        resume_from = _stored_checkpoint(job, run_info)

        def resumed(step: int, reason: str | None) -> None:
            if step:
                run_info["resumed_from_step"] = step
                log.info("resuming from the checkpoint after step %d", step)
            if reason:
                run_info["checkpoint_discarded"] = reason
                log.warning("checkpoint not used, starting from step 0: %s", reason)

        frames = generate_frames(
            spec,
            inputs.params,
            image=inputs.image,
            last_image=inputs.last_image,
            options=options,
            on_step=progress,
            on_latents=(
                LivePreviewWriter(job, spec.pipeline_class, settings.VIDEOGEN_PREVIEW_EVERY)
                if settings.VIDEOGEN_PREVIEW_EVERY else None
            ),
            resume_from=resume_from,
            on_resume=resumed,
            checkpoint_every=settings.VIDEOGEN_CHECKPOINT_SECONDS,
            on_checkpoint=checkpoints,
        )
        frames = inputs.video(frames)
        stored, file_size = _store_outputs(job, frames)
        _test_pause(log)
    except Cancelled as stop:
        if should_yield() or progress.preempted:
            job_yield(job, log, stop, checkpoints, preempted=progress.preempted and not should_yield())
        else:
            log.info(
                "cancelled: stopped after step %d of %d, no video kept (cancelled, or no longer this worker's)",
                stop.step, stop.total,
            )
            _drop_checkpoint_if_finished(job)
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
        failed = retry_database(
            lambda: job.fail(code, message[:MAX_ERROR_LENGTH], from_={Status.RUNNING}, where=mine, run_info=run_info)
        )
        if failed:
            job_drop_checkpoint(job)
        if not isinstance(exc, Exception):
            raise
        return

    completed = retry_database(
        lambda: job.complete(
            video=stored[0],
            poster=stored[1],
            preview=stored[2],
            from_={Status.RUNNING},
            where=mine,
            file_size_bytes=file_size,
            video_duration_seconds=len(frames) / job.fps,
            run_info=run_info,
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
        try:
            PendingFile.objects.forget(stored)
        except DatabaseError:
            logger.warning("could not forget the stored files' records; the reaper will", exc_info=True)
        job_drop_checkpoint(job)
        log.info("completed in %.1fs: %s (%d bytes)", time.monotonic() - started, stored[0], file_size)
    else:
        # Cancelled while it was encoding, or no longer this worker's: keep no video.
        _delete_stored(stored)
        _drop_checkpoint_if_finished(job)
        log.info("left running while encoding; output discarded")


class InputUnavailable(Exception):
    """An input the job needs is no longer stored (its image, or the video it extends): it fails as invalid_input."""


@dataclasses.dataclass
class EngineInputs:
    """What the engine is given for a job besides its prompt: its parameters and images, fitted to its size."""

    params: GenerationParams
    image: "Image.Image | None" = None
    last_image: "Image.Image | None" = None
    # An extend's source video, which the new frames follow.
    source_frames: np.ndarray | None = None

    def video(self, frames: np.ndarray) -> np.ndarray:
        """The job's video: an extend's source, then its new frames but the first, the source's last again."""
        if self.source_frames is None:
            return frames
        return np.concatenate([self.source_frames, frames[1:]])


def engine_inputs(job: VideoGenerationJob) -> EngineInputs:
    params = job.params
    fit = functools.partial(prepare_image, width=job.width, height=job.height, fit=job.image_fit)
    if job.mode == Mode.EXTEND:
        source = _read_source_video(job)
        last = Image.fromarray(source[-1])
        # One frame more: the first is the source's last, dropped from the video (EngineInputs.video).
        params = dataclasses.replace(params, num_frames=params.num_frames + 1)
        return EngineInputs(params, image=fit_image(last, job.width, job.height, job.image_fit), source_frames=source)
    return EngineInputs(
        params,
        image=fit(_read_stored(job.image, "image")) if job.image else None,
        last_image=fit(_read_stored(job.last_image, "last_image")) if job.last_image else None,
    )


def _read_stored(stored, field: str) -> bytes:
    try:
        with default_storage.open(stored.name, "rb") as handle:
            return handle.read()
    except Exception as exc:
        raise InputUnavailable(f"The job's {field} is no longer stored, so it cannot run.") from exc


def _read_source_video(job: VideoGenerationJob) -> np.ndarray:
    """The frames of the video this job extends, which must still be stored."""
    source = VideoGenerationJob.objects.filter(pk=job.extend_job_id, status=Status.COMPLETED).first()
    if source is None or not source.video or source.expired_at is not None:
        raise InputUnavailable(f"The video of job {job.extend_job_id} (extend_job_id) is no longer stored.")
    try:
        with tempfile.TemporaryDirectory(prefix="videogen-") as workdir:
            path = Path(workdir) / "source.mp4"
            with default_storage.open(source.video.name, "rb") as stored, open(path, "wb") as local:
                shutil.copyfileobj(stored, local, 1024 * 1024)
            return read_frames(path)
    except Exception as exc:
        raise InputUnavailable(f"The video of job {job.extend_job_id} (extend_job_id) could not be read.") from exc


def _test_pause(log: JobLog) -> None:
    pause = settings.VIDEOGEN_TEST_PAUSE_AFTER_STORING
    if pause and Path(pause).exists():
        log.info("paused after storing")
        while Path(pause).exists():
            time.sleep(0.05)


def job_yield(
    job: VideoGenerationJob, log: JobLog, stop: Cancelled, checkpoints: CheckpointWriter, *, preempted: bool = False
) -> None:
    """
    A run told to stop and go on later (its worker stopping, should_yield;
    or preempted for a high-priority job): save its state after the step it
    stopped at, unless that one is saved already, then hand the job back to
    pending without counting an attempt. Its next run, on any worker,
    resumes from that step.
    """
    began = time.monotonic()
    if (
        settings.VIDEOGEN_CHECKPOINT_SECONDS is not None
        and stop.checkpoint is not None
        and checkpoints.saved_step != stop.step
    ):
        checkpoints(stop.step, stop.checkpoint())
    retry_database(lambda: job_hand_back(job, preempted=preempted))
    log.info(
        "%s: handed back after step %d of %d (checkpoint after step %s, saved in %.2fs)",
        "preempted by a high-priority job" if preempted else "worker stopping",
        stop.step, stop.total, checkpoints.saved_step, time.monotonic() - began,
    )


def _stored_checkpoint(job: VideoGenerationJob, run_info: dict) -> bytes | None:
    """The job's checkpoint, when it has one and checkpoints are on; one that cannot be read is said so in run_info."""
    if not job.checkpoint or settings.VIDEOGEN_CHECKPOINT_SECONDS is None:
        return None
    try:
        return read_checkpoint(job.checkpoint.name)
    except Exception as exc:
        run_info["checkpoint_discarded"] = f"could not be read: {exc.__class__.__name__}: {str(exc)[:200]}"
        logger.warning("checkpoint %s not read; starting from step 0", job.checkpoint.name, exc_info=True,
                       extra=log_fields(job))
        return None


def _drop_checkpoint_if_finished(job: VideoGenerationJob) -> None:
    # A job that is no longer this worker's but still unfinished runs elsewhere, from this very checkpoint.
    if VideoGenerationJob.objects.filter(pk=job.pk, status__in=FINISHED).exists() or not (
        VideoGenerationJob.objects.filter(pk=job.pk).exists()
    ):
        job_drop_checkpoint(job)


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
            # Recorded before any is written: a worker killed before the job's
            # final write leaves records the reaper sweeps, not orphans.
            try:
                names = [default_storage.get_available_name(f"{folder}/{path.name}") for path, folder in files]
            except Exception as exc:
                if isinstance(exc, OSError):
                    raise
                raise StorageWriteError(f"could not choose the names to store: {exc}") from exc
            retry_database(lambda: PendingFile.objects.record(job, names))
            for path, name in zip((path for path, _ in files), names):
                with open(path, "rb") as handle:
                    try:
                        saved = default_storage.save(name, _TemporaryFile(handle))
                    except Exception as exc:
                        if isinstance(exc, OSError):
                            raise
                        # botocore's errors are not OSErrors; name what failed.
                        raise StorageWriteError(f"could not store {name}: {exc}") from exc
                if saved != name:
                    # Another run of the job took the name since (a rare race): record what was written.
                    PendingFile.objects.record(job, [saved])
                stored.append(saved)
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
    if isinstance(exc, (InvalidParams, UnknownModel, InputUnavailable)):
        return ErrorCode.INVALID_INPUT, f"Generation failed: {exc}"
    if isinstance(exc, (EncodingError, OSError)):
        return ErrorCode.ENCODE, "Generation failed while writing the video (the operator can see why)."
    return ErrorCode.INTERNAL, f"Generation failed: an internal error ({exc.__class__.__name__}; the operator can see why)."


def _delete_stored(names: list[str]) -> None:
    deleted = []
    for name in names:
        try:
            default_storage.delete(name)
            deleted.append(name)
        except Exception:
            # OSError on disk, botocore's errors on S3: its record stays for
            # the reaper; go on deleting the others.
            logger.warning("could not delete %s", name, exc_info=True)
    try:
        PendingFile.objects.forget(deleted)
    except DatabaseError:
        # The reaper finds these deleted already: a delete of no object is a no-op.
        logger.warning("could not forget deleted files' records", exc_info=True)
