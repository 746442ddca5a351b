import dataclasses
import hashlib
import json
import logging
import secrets
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, connection, router, transaction
from django.utils import timezone
from django_q.brokers import Broker, get_broker
from django_q.brokers.orm import ORM
from django_q.conf import Conf

from generation.params import GenerationParams
from jobs.services.checkpoints import job_drop_checkpoint
from jobs.scheduling.deployment import queue_for_model, queue_timeout
from jobs.scheduling.estimates import job_entered_queue
from jobs.services.files import delete_files
from jobs.models import ACTIVE, STORED_FILES, ErrorCode, Mode, Priority, Status, VideoGenerationJob
from jobs.metrics.series import record_submitted
from videogen.logformat import log_fields

logger = logging.getLogger(__name__)

# Seeds are drawn below 2**32 so they also fit generators that take 32 bits.
DRAWN_SEEDS = 2**32


class ActiveJobLimitReached(Exception):
    def __init__(self, user_id: str, active: int, limit: int):
        super().__init__(
            f"user_id {user_id!r} already has {active} active jobs (pending or running); the limit is {limit}. "
            "Submit more once some have finished."
        )


class IdempotencyKeyReused(Exception):
    def __init__(self, key: str):
        super().__init__(
            f"Idempotency-Key {key!r} was already used with a different request; use a new key for a new request."
        )


def request_fingerprint(request: dict) -> str:
    """A digest of what was asked for, to tell a retry from a different request under the same key."""
    return hashlib.sha256(json.dumps(request, sort_keys=True, default=str).encode()).hexdigest()


def _user_lock(user_id: str) -> tuple[str, list]:
    """
    The statement that serialises one user's submissions until the
    transaction ends, so the active-job count cannot be raced past the
    limit; empty on SQLite, where our transactions are IMMEDIATE and take
    the database's write lock up front.
    """
    if connection.vendor == "postgresql":
        return "SELECT pg_advisory_xact_lock(7011, hashtext(%s))", [user_id]
    return "", []


def _lock_user(user_id: str) -> None:
    sql, params = _user_lock(user_id)
    if sql:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)


def check_active_limit(user_id: str) -> None:
    """
    Raise ActiveJobLimitReached when the user has the most jobs waiting or
    running they may. Takes the user's lock first (again, if the caller
    took it: it is re-entrant), in the same round trip as the count: the
    count is a statement of its own after the lock, so it sees every job
    committed while the lock was waited for.
    """
    limit = settings.VIDEOGEN_MAX_ACTIVE_JOBS_PER_USER
    active = VideoGenerationJob.objects.active_count(user_id, before=_user_lock(user_id))
    if active >= limit:
        raise ActiveJobLimitReached(user_id, active, limit)


@dataclasses.dataclass(frozen=True)
class JobInputs:
    """What a job is made from besides its parameters: its stored images, or the job whose video it extends."""

    mode: str = Mode.TEXT_TO_VIDEO
    # Storage names (jobs.api.inputs.store_images); "" for none.
    image: str = ""
    last_image: str = ""
    image_fit: str = "crop"
    extend_job_id: uuid.UUID | None = None
    # Per image field, its sha256, format, size and bytes (ImageInput.info()).
    info: dict = dataclasses.field(default_factory=dict)

    def columns(self) -> dict:
        return {
            "mode": self.mode,
            "image": self.image,
            "last_image": self.last_image,
            "image_fit": self.image_fit,
            "extend_job_id": self.extend_job_id,
            "inputs": self.info,
        }


def job_create(
    *,
    user_id: str,
    params: GenerationParams,
    inputs: JobInputs = JobInputs(),
    idempotency_key: str | None = None,
    fingerprint: str = "",
    webhook_url: str = "",
    webhook_events: list[str] | None = None,
    start_within: int | None = None,
    priority: Priority = Priority.NORMAL,
) -> tuple[VideoGenerationJob, bool]:
    """
    Record a job with these parameters (a seed drawn when they have none)
    and queue its generation once the row is committed. Returns
    (job, created): with an idempotency_key that this user already sent
    within VIDEOGEN_IDEMPOTENCY_TTL_HOURS, the job it created and False.
    Raises IdempotencyKeyReused when that key came with another request
    (another fingerprint), ActiveJobLimitReached when the user has too many
    jobs waiting or running.
    """
    if params.seed is None:
        params = dataclasses.replace(params, seed=secrets.randbelow(DRAWN_SEEDS))
    # Twice at most: the second time after a racing request with the same key
    # committed first, or after an expired key was released.
    for _ in range(2):
        try:
            with transaction.atomic():
                if idempotency_key is not None:
                    # Before the look-up: a retry racing the first request waits for it, then finds its job.
                    _lock_user(user_id)
                    existing = _job_for_key(user_id, idempotency_key)
                    if existing is not None:
                        if existing.request_fingerprint != fingerprint:
                            raise IdempotencyKeyReused(idempotency_key)
                        return existing, False
                check_active_limit(user_id)
                now = timezone.now()
                job = VideoGenerationJob.objects.insert(VideoGenerationJob(
                    user_id=user_id,
                    **params.as_dict(),
                    **inputs.columns(),
                    idempotency_key=idempotency_key,
                    request_fingerprint=fingerprint,
                    webhook_url=webhook_url,
                    webhook_events=webhook_events or [],
                    submitted_at=now,
                    start_deadline_at=None if start_within is None else now + timedelta(seconds=start_within),
                    priority=priority,
                    # In the queue from its commit on (the wake-up follows it).
                    queued_at=now,
                ))
                queue = queue_for_model(job.model_name)
                if wakes_up_with_the_job(queue):
                    # django-q2's ORM broker: the wake-up is a row in this
                    # database, written in this transaction. It commits with
                    # the job or not at all, so no worker sees it first, and
                    # needs no commit of its own (bench/RESULTS.md, hot
                    # paths). If it cannot be written, the submit fails:
                    # nothing was accepted.
                    wake_up(queue, job=job)
                    transaction.on_commit(lambda: job_submitted(job, woken=True))
                else:
                    # A worker must never pick up a task for a row it cannot see yet.
                    transaction.on_commit(lambda: job_submitted(job))
            return job, True
        except IntegrityError:
            # The unique (user_id, idempotency_key) constraint is what keeps a
            # key to one job; the look-up above only spares most duplicates
            # the failed insert.
            if idempotency_key is None:
                raise
    existing = _job_for_key(user_id, idempotency_key)
    if existing is None or existing.request_fingerprint != fingerprint:
        raise IdempotencyKeyReused(idempotency_key)
    return existing, False


def _job_for_key(user_id: str, key: str) -> VideoGenerationJob | None:
    """The job this user's key names, releasing the key first if it is older than the TTL."""
    expired = timezone.now() - timedelta(hours=settings.VIDEOGEN_IDEMPOTENCY_TTL_HOURS)
    keyed = VideoGenerationJob.objects.for_user(user_id).filter(idempotency_key=key)
    keyed.filter(submitted_at__lt=expired).update(idempotency_key=None)
    return keyed.first()


def job_enqueue(job: VideoGenerationJob) -> None:
    """
    Wake a worker of the job's queue: the job waits in the jobs table, and
    the worker claims whichever job the fair policy picks (jobs/scheduling/queue.py).
    If the broker refuses, the job fails with the reason instead of waiting
    forever for a wake-up that was never sent.
    """
    try:
        wake_up(queue_for_model(job.model_name), job=job)
    except Exception as exc:
        logger.exception("could not be queued", extra=log_fields(job))
        job.fail(ErrorCode.ENQUEUE_FAILED, f"The job could not be queued: {exc}", from_={Status.PENDING})
    else:
        now = timezone.now()
        # A new or requeued job's row already says so (job_create, requeue()):
        # no second write for it; a wake-up the reaper resends does write.
        if job.queued_at is None or now - job.queued_at > timedelta(seconds=1):
            VideoGenerationJob.objects.filter(pk=job.pk).update(queued_at=now)
        _log_queued(job)


def _log_queued(job: VideoGenerationJob) -> None:
    logger.info("queued on model %s", job.model_name, extra=log_fields(job))


def job_submitted(job: VideoGenerationJob, *, woken: bool = False) -> None:
    """
    After a new job's row is committed: queue it (unless its wake-up
    committed with it, `woken`), and count it for the metrics, a count a
    server crash may lose without harm, so its commit does not wait for the
    disk (jobs.metrics).
    """
    if woken:
        _log_queued(job)
    else:
        job_enqueue(job)
    record_submitted(job.model_name)
    job_entered_queue(job)


def wakes_up_with_the_job(queue: str | None) -> bool:
    """
    Whether this queue's wake-ups are rows in the jobs' own database
    (django-q2's ORM broker), which a job's transaction can write with it.
    """
    return isinstance(broker(queue), ORM) and Conf.ORM == router.db_for_write(VideoGenerationJob)


def wake_up(queue: str | None, *, job: VideoGenerationJob | None = None) -> None:
    """
    Send one "look for work" task to a queue (None: the default one). The
    job that prompted it rides along for the worker's log, in the arguments
    tasks had before the fair policy, so both kinds read the same.
    """
    from django_q.tasks import async_task

    args = (str(job.id), job.user_id) if job is not None else ()
    async_task(
        "generation.tasks.generate_video",
        *args,
        task_name=f"generate_video {job.id}" if job is not None else "generate_video",
        cluster=queue,
        timeout=queue_timeout(queue),
        broker=broker(queue),
    )


_brokers: dict[str, Broker] = {}


def broker(queue: str | None) -> Broker:
    """
    This process's django-q2 broker for a queue (None: the default one).
    django-q2 makes a new one for every task it queues unless given one, and
    with Redis each new one opened a new connection: one per submit. A
    broker's Redis client keeps a thread-safe pool (reset after a fork).
    """
    name = queue or Conf.CLUSTER_NAME
    found = _brokers.get(name)
    if found is None:
        found = _brokers.setdefault(name, get_broker(name))
    return found


def job_cancel(job: VideoGenerationJob) -> bool:
    """
    Cancel a pending or running job. A pending one never starts; a running
    one is interrupted by its worker at the next denoising step, which keeps
    no video. False when the job had already finished.
    """
    cancelled = job.transition(Status.CANCELLED, from_=ACTIVE, completed_at=timezone.now())
    if cancelled and VideoGenerationJob.objects.filter(pk=job.pk).exclude(checkpoint="").exists():
        # A job handed back or lost mid-run waits with its checkpoint; a running one's worker removes its own too.
        job_drop_checkpoint(job)
    return cancelled


def job_delete(job: VideoGenerationJob) -> bool:
    """
    Delete the job: cancel it if it is active (its worker stops at the next
    step and keeps nothing), remove its files, then its row and with it its
    webhook events, which stops their retries. False when it was already
    gone. Raises StorageUnavailable, keeping the row, when the files cannot
    be removed, so no file is left that no row names.
    """
    job_cancel(job)
    # Read after the cancel: no worker can complete the job any more, so
    # these are all the files it will ever have.
    names = VideoGenerationJob.objects.filter(pk=job.pk).values_list(*STORED_FILES).first()
    if names is None:
        return False
    delete_files(list(names))
    deleted, _ = VideoGenerationJob.objects.filter(pk=job.pk).delete()
    logger.info("deleted with its files", extra=log_fields(job))
    return deleted > 0


def job_rerun(job: VideoGenerationJob) -> bool:
    """
    An operator's re-run of a failed job: requeue() it, counting one more
    attempt, and wake a worker once that is committed. The requeue is a
    conditional update, so when two callers race, or the job is no longer
    failed, exactly one or neither succeeds, and a job is never queued twice.
    False when it was not failed; raises ActiveJobLimitReached when its user
    already has too many jobs waiting.
    """
    with transaction.atomic():
        check_active_limit(job.user_id)
        requeued = job.requeue(from_={Status.FAILED})
        if requeued:
            transaction.on_commit(lambda: job_enqueue(job))
    return requeued
