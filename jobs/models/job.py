"""
The job: its statuses, modes, priorities and error codes; the one QuerySet
method that filters by user; the state changes as conditional updates; and
the files an unfinished attempt uploaded (PendingFile).
"""

import copy
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import models, transaction
from django.db.models import Count, F, Value
from django.db.models.functions import Concat
from django.utils import timezone

from generation.params import FIRST_LAST_FRAME, IMAGE_TO_VIDEO, TEXT_TO_VIDEO, GenerationParams
from jobs.models.compiled import CompiledInsert, CompiledQuery
from jobs.models.signals import job_progressed, job_status_changed


# The longest user_id a job or an API key takes, wherever one is given.
USER_ID_MAX_LENGTH = 100
# The longest URL a job takes (a webhook, an image to fetch), wherever one is given.
MAX_URL_LENGTH = 2000


class Status(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED = {Status.COMPLETED, Status.FAILED, Status.CANCELLED}
ACTIVE = {Status.PENDING, Status.RUNNING}
# The states a webhook can announce (webhook_events), as job.<status> events.
WEBHOOK_STATUSES = (Status.RUNNING, Status.COMPLETED, Status.FAILED, Status.CANCELLED)
DEFAULT_WEBHOOK_EVENTS = [Status.COMPLETED.value, Status.FAILED.value, Status.CANCELLED.value]


# Every file a job may have in storage: its outputs, then its inputs.
OUTPUT_FILES = ("video", "poster", "preview")
# The checkpoint is a running job's saved state (jobs/services/checkpoints.py), gone once it ends.
STORED_FILES = (*OUTPUT_FILES, "image", "last_image", "checkpoint")


class Mode(models.TextChoices):
    """What a job makes its video from: generation.params' modes, and extending another job's video."""

    TEXT_TO_VIDEO = TEXT_TO_VIDEO
    IMAGE_TO_VIDEO = IMAGE_TO_VIDEO
    FIRST_LAST_FRAME = FIRST_LAST_FRAME
    EXTEND = "extend"


class Priority(models.IntegerChoices):
    """Which waiting jobs a worker takes first (jobs/scheduling/queue.py); fair share orders users within one."""

    LOW = 0, "low"
    NORMAL = 1, "normal"
    HIGH = 2, "high"

    @classmethod
    def named(cls, name: str) -> "Priority":
        return {priority.label: priority for priority in cls}[name]


class ErrorCode(models.TextChoices):
    """Why a job failed, so operators can filter and clients can react."""

    OUT_OF_MEMORY = "out_of_memory"
    INVALID_INPUT = "invalid_input"
    MODEL_LOAD = "model_load"
    ENCODE = "encode"
    TIMEOUT = "timeout"
    WORKER_LOST = "worker_lost"
    # The broker refused the job's wake-up at submit or re-run.
    ENQUEUE_FAILED = "enqueue_failed"
    INTERNAL = "internal"
    # Cancelled, not failed: the job had not started by its start_within.
    DEADLINE_EXCEEDED = "deadline_exceeded"


# Lists count their rows up to this, never scanning a huge table on every
# page: past it they say "at least" (the API's total_is_exact, the admin).
COUNT_CAP = 10_000


def count_up_to(queryset: models.QuerySet, cap: int = COUNT_CAP) -> tuple[int, bool]:
    """(rows, exact): the queryset's rows counted up to `cap`; past it (cap, False)."""
    counted = queryset.order_by()[: cap + 1].count()
    return min(counted, cap), counted <= cap


class JobQuerySet(models.QuerySet):
    def for_user(self, user_id: str | None) -> "JobQuerySet":
        """
        The jobs a request may see. With a user_id, only that user's jobs
        (filtered in the database); without one, every job: the seed
        contract's admin view. Another user's job is then indistinguishable
        from a missing one, which is the point.
        """
        if user_id is None:
            return self
        return self.filter(user_id=user_id)

    def visible(self, user_id: str | None, job_id: uuid.UUID) -> "VideoGenerationJob | None":
        """
        for_user(user_id).filter(pk=job_id), the one job a request names, or
        None: the query of every status poll. Its SQL is the one for_user()
        makes, compiled once per process (see CompiledQuery), so it reads
        the whole table: call it on VideoGenerationJob.objects, not on a
        filtered queryset.
        """
        self._whole_table("visible")
        if user_id is None:
            found = _visible_to_all.first(self.db, job=job_id)
        else:
            found = _visible_to_user.first(self.db, user=user_id, job=job_id)
        return None if found is None else VideoGenerationJob.from_db(self.db, *found)

    def active_count(self, user_id: str, *, before: tuple[str, list] = ("", [])) -> int:
        """
        for_user(user_id).active().count(), compiled once per process: the
        active-job cap's count at every submit, after the statement
        `before` (SQL and parameters; see CompiledQuery.first). Like
        visible(), call it on VideoGenerationJob.objects.
        """
        self._whole_table("active_count")
        # Part of a submit's transaction, with its lock: the database written to, as create() uses.
        self._for_write = True
        found = _active_jobs.first(self.db, before=before, user=user_id)
        return 0 if found is None else found[1][0]

    def insert(self, job: "VideoGenerationJob") -> "VideoGenerationJob":
        """
        Save a new job: create()'s INSERT, compiled once per process (see
        jobs.models.compiled.CompiledOnce). The submit's insert.
        """
        self._for_write = True  # as create() does: the database written to
        _job_insert.insert(job, self.db)
        return job

    def _whole_table(self, method: str) -> None:
        if self.query.where:
            raise TypeError(f"{method}() ignores other filters: call it on VideoGenerationJob.objects")

    def active(self) -> "JobQuerySet":
        return self.filter(status__in=ACTIVE)

    def completed_videos(self) -> "JobQuerySet":
        # An expired job's files are gone: GET /job still shows it, the list of videos does not.
        return self.filter(status=Status.COMPLETED, expired_at__isnull=True).order_by("-completed_at", "-id")


def this_deployment() -> str:
    """
    The deployment this process belongs to: its VIDEOGEN_QUEUE_NAME. Two
    deployments may share a database; each claims only its own jobs.
    """
    return settings.Q_CLUSTER["name"]


class VideoGenerationJob(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user_id = models.CharField(max_length=USER_ID_MAX_LENGTH)

    # The generation parameters: the fields of generation.params.GenerationParams.
    prompt = models.TextField()
    negative_prompt = models.TextField(blank=True, default="")
    model_name = models.CharField(max_length=100)
    fps = models.PositiveSmallIntegerField(default=24)
    num_frames = models.PositiveSmallIntegerField()
    width = models.PositiveSmallIntegerField()
    height = models.PositiveSmallIntegerField()
    num_inference_steps = models.PositiveSmallIntegerField()
    guidance_scale = models.FloatField()
    # Chosen at submit when the client gives none, so any video can be made
    # again. NULL only on rows from before seeds were recorded.
    seed = models.BigIntegerField(null=True, blank=True)

    status = models.CharField(max_length=32, choices=Status.choices, default=Status.PENDING)
    # The deployment that accepted the job (this_deployment()): only its workers claim it.
    deployment = models.CharField(max_length=100, default=this_deployment, editable=False)
    progress = models.PositiveSmallIntegerField(default=0)
    # The denoising step last reported, out of num_inference_steps.
    current_step = models.PositiveSmallIntegerField(default=0)
    error_message = models.TextField(blank=True, default="")
    error_code = models.CharField(max_length=32, choices=ErrorCode.choices, blank=True, default="")
    # Times the job has been queued to run: 1 at submit, +1 for each re-run.
    attempts = models.PositiveSmallIntegerField(default=1)
    # When the job was last handed to the broker (see jobs.services.recovery).
    queued_at = models.DateTimeField(null=True, blank=True)
    # Which worker process holds a running job, and when it last said so.
    worker = models.CharField(max_length=200, blank=True, default="")
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # How the video was made, for reproducing it: model revision, dtype,
    # device, scheduler, library versions.
    run_info = models.JSONField(default=dict, blank=True)

    video = models.FileField(max_length=500, blank=True, db_column="output_file_path")
    poster = models.FileField(max_length=500, blank=True)
    # A client's Idempotency-Key, unique per user while it is set (keys are
    # released after a day), and a digest of the request it came with.
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)
    request_fingerprint = models.CharField(max_length=64, blank=True, default="")
    # A small animated preview for people browsing jobs.
    preview = models.FileField(max_length=500, blank=True)
    file_size_bytes = models.BigIntegerField(null=True, blank=True)
    video_duration_seconds = models.FloatField(null=True, blank=True)

    submitted_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    # When the first denoising step was reported, and the step in
    # current_step: a running job's own step rate (jobs/scheduling/estimates.py).
    first_step_at = models.DateTimeField(null=True, blank=True)
    stepped_at = models.DateTimeField(null=True, blank=True)
    # Where to send this job's events (jobs.webhooks), and which of them.
    webhook_url = models.CharField(max_length=MAX_URL_LENGTH, blank=True, default="")
    webhook_events = models.JSONField(default=list, blank=True)
    # When VIDEOGEN_RETENTION_DAYS removed the job's files (the row stays).
    expired_at = models.DateTimeField(null=True, blank=True)
    # The inputs besides the prompt: the images as the client sent them
    # (jobs.api.inputs), how they are fitted to width x height, the job whose
    # video this one extends, and each image's sha256, format and size.
    mode = models.CharField(max_length=32, choices=Mode.choices, default=Mode.TEXT_TO_VIDEO)
    image = models.FileField(max_length=500, blank=True)
    last_image = models.FileField(max_length=500, blank=True)
    image_fit = models.CharField(max_length=16, default="crop")
    extend_job_id = models.UUIDField(null=True, blank=True)
    inputs = models.JSONField(default=dict, blank=True)
    # A client's start_within: when a job that has not started by then is
    # cancelled (deadline_exceeded). Cleared when it first starts.
    start_deadline_at = models.DateTimeField(null=True, blank=True)
    # Every status the job has had, in order, comma-separated: the event
    # stream's ids and resumes are derived from it (jobs/api/events.py).
    status_log = models.TextField(default=Status.PENDING.value, editable=False)
    # The denoising state of an unfinished run and the step it was saved
    # after: a requeued job goes on from it (jobs/services/checkpoints.py). Kept
    # across requeues, removed when the job ends.
    checkpoint = models.FileField(max_length=500, blank=True)
    checkpoint_step = models.PositiveSmallIntegerField(default=0)
    priority = models.SmallIntegerField(choices=Priority.choices, default=Priority.NORMAL)
    # Set on a running job that is to checkpoint and go back to pending for a
    # waiting high-priority one (jobs/scheduling/queue.py, preemption); its worker reads
    # it with its next progress write.
    yield_requested_at = models.DateTimeField(null=True, blank=True)
    # How often the job yielded its worker that way; run_info.preemptions shows it.
    preemptions = models.PositiveSmallIntegerField(default=0)

    objects = JobQuerySet.as_manager()

    class Meta:
        db_table = "video_generation_jobs"
        ordering = ["-submitted_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["user_id", "idempotency_key"],
                name="job_user_idempotency_key_unique",
                condition=models.Q(idempotency_key__isnull=False),
            ),
        ]
        indexes = [
            # GET /videos?user_id=: one user's completed videos not yet expired, newest first.
            models.Index(
                fields=["user_id", "-completed_at", "-id"],
                name="job_user_completed_idx",
                condition=models.Q(status="completed", expired_at__isnull=True),
            ),
            # GET /videos without user_id: everyone's completed videos not yet expired.
            models.Index(
                fields=["-completed_at", "-id"],
                name="job_completed_idx",
                condition=models.Q(status="completed", expired_at__isnull=True),
            ),
            models.Index(fields=["status", "submitted_at"], name="job_status_submitted_idx"),
            # The admin: newest first, and its filters.
            models.Index(fields=["submitted_at"], name="job_submitted_idx"),
            models.Index(fields=["user_id", "submitted_at"], name="job_user_submitted_idx"),
            models.Index(fields=["model_name", "submitted_at"], name="job_model_submitted_idx"),
            models.Index(fields=["error_code", "submitted_at"], name="job_error_submitted_idx"),
            # The fair claim (jobs/scheduling/queue.py): the users waiting, and each
            # one's oldest pending job. Partial, so it holds only the queue;
            # model_name makes the users' scan index-only.
            models.Index(
                fields=["deployment", "user_id", "submitted_at", "model_name", "priority"],
                name="job_pending_claim_idx",
                condition=models.Q(status="pending"),
            ),
            # Worker time used over VIDEOGEN_FAIR_WINDOW: jobs that ran, by when they ended.
            models.Index(
                fields=["completed_at"],
                name="job_ran_completed_idx",
                condition=models.Q(started_at__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.id} ({self.user_id}, {self.status})"

    @property
    def params(self) -> GenerationParams:
        """What the job makes, as the engine takes it: its columns of GenerationParams' names."""
        return GenerationParams.of(self)

    def transition(self, to: Status, *, from_: set[Status], where: models.Q | None = None, **fields) -> bool:
        """
        Move the job to status `to` if, in the database, it is still in one of
        `from_` (and matches `where`), setting `fields` in the same UPDATE.
        Returns False when it was not (another process got there first), and
        then changes nothing, in the database or on this instance. This is the
        only way status changes.
        """
        rows = type(self).objects.filter(pk=self.pk, status__in=list(from_))
        if where is not None:
            rows = rows.filter(where)
        with transaction.atomic():
            updated = rows.update(status=to, status_log=Concat(F("status_log"), Value(f",{Status(to).value}")), **fields)
            if updated != 1:
                return False
            before = self.__dict__.copy()
            try:
                self.status = to
                expressions = []
                for name, value in fields.items():
                    if hasattr(value, "resolve_expression"):
                        expressions.append(name)
                    else:
                        setattr(self, name, value)
                if expressions:
                    self.refresh_from_db(fields=expressions)
                # Announced inside the transaction (the event stream, webhooks,
                # metrics listen): a change whose webhook event is lost cannot
                # commit, nor an event for a change that did not.
                job_status_changed.send(type(self), job=self, status=to)
            except BaseException:
                # Rolled back: this instance is as it was, like the row.
                self.__dict__.clear()
                self.__dict__.update(before)
                raise
        return True

    # What a run starts without, whether claimed (start) or sent back to
    # pending (requeue): the last run's progress and its preemption request.
    RUN_RESETS = {
        "progress": 0,
        "current_step": 0,
        "first_step_at": None,
        "stepped_at": None,
        "yield_requested_at": None,
    }

    # What a job sent back to pending starts again without: its last run's
    # progress, worker, times and outcome, so that pending looks the same
    # whichever way a job got there. Its parameters and seed stay, and so a
    # re-run makes the same video.
    REQUEUE_RESETS = {
        **RUN_RESETS,
        "worker": "",
        "heartbeat_at": None,
        "started_at": None,
        "completed_at": None,
        "error_code": "",
        "error_message": "",
        "run_info": {},
    }

    def start(self, *, worker: str, now) -> bool:
        """
        Claim: pending to running as `worker`'s, as a transition (False when
        another process got there first), with RUN_RESETS.
        """
        return self.transition(
            Status.RUNNING,
            from_={Status.PENDING},
            started_at=now,
            heartbeat_at=now,
            worker=worker,
            **self.RUN_RESETS,
            # Started: start_within no longer applies, whatever happens to this run.
            start_deadline_at=None,
        )

    def requeue(
        self, *, from_: set[Status], where: models.Q | None = None, count_attempt: bool = True, **fields
    ) -> bool:
        """
        Back to pending, as a transition (False when another process got there
        first), with REQUEUE_RESETS and, when count_attempt, one more attempt.
        The caller wakes a worker (jobs.services.lifecycle.job_enqueue) once it is committed.
        """
        # A copy: run_info's {} must not be shared between instances.
        fields = {**copy.deepcopy(self.REQUEUE_RESETS), **fields}
        # Back in the queue from now (jobs.scheduling.estimates, jobs.services.recovery read it).
        fields["queued_at"] = timezone.now()
        if count_attempt:
            fields["attempts"] = F("attempts") + 1
        return self.transition(Status.PENDING, from_=from_, where=where, **fields)

    def fail(
        self, code: ErrorCode, message: str, *, from_: set[Status], where: models.Q | None = None, **fields
    ) -> bool:
        """
        Fail the job with an error_code (what the admin and `rerun_failed_jobs`
        filter on) and a message clients read, as a transition. `fields` are
        recorded with it (the run's run_info).
        """
        return self._finish(Status.FAILED, from_=from_, where=where, error_code=code, error_message=message, **fields)

    def complete(
        self, *, video: str, poster: str, preview: str, from_: set[Status], where: models.Q | None = None, **fields
    ) -> bool:
        """
        Complete the job with its stored files, as a transition: progress
        full, every step done. `fields` are recorded with it (the file's
        size and duration, the run's run_info).
        """
        return self._finish(
            Status.COMPLETED,
            from_=from_,
            where=where,
            video=video,
            poster=poster,
            preview=preview,
            progress=100,
            current_step=self.num_inference_steps,
            **fields,
        )

    def _finish(self, to: Status, *, from_: set[Status], where: models.Q | None, **fields) -> bool:
        # A finished job's completed_at is when it finished, whichever way.
        return self.transition(to, from_=from_, where=where, completed_at=timezone.now(), **fields)

    def cancel_past_start_deadline(self, now) -> bool:
        """Cancel the job as deadline_exceeded if it is still pending past its start deadline, as a transition."""
        return self.transition(
            Status.CANCELLED,
            from_={Status.PENDING},
            where=models.Q(start_deadline_at__lte=now),
            error_code=ErrorCode.DEADLINE_EXCEEDED,
            error_message=f"Not started by its start deadline ({self.start_deadline_at:%Y-%m-%d %H:%M:%S} UTC, "
            "start_within): cancelled without running.",
            completed_at=now,
        )

    def ask_to_yield(self, now) -> bool:
        """
        Preemption: ask this running job's worker to checkpoint it and hand it
        back (it reads this with its next progress write, set_progress). Only
        a run still RUNNING as the same worker's, and asked once.
        """
        return bool(
            type(self).objects.filter(
                pk=self.pk, status=Status.RUNNING, worker=self.worker, yield_requested_at__isnull=True
            ).update(yield_requested_at=now)
        )

    def asked_to_yield(self) -> bool:
        return type(self).objects.filter(
            pk=self.pk, status=Status.RUNNING, worker=self.worker, yield_requested_at__isnull=False
        ).exists()

    def set_progress(self, progress: int, **fields) -> bool:
        """
        Record progress while running. Returns False, writing nothing, once the
        job has left RUNNING, is no longer this worker's, or was asked to
        yield (ask_to_yield): that is how a worker learns it was cancelled (or
        its job given to another, or preempted; asked_to_yield tells which).
        """
        still_running = (
            type(self)
            .objects.filter(pk=self.pk, status=Status.RUNNING, worker=self.worker, yield_requested_at__isnull=True)
            .update(progress=progress, **fields)
            == 1
        )
        if still_running:
            job_progressed.send(type(self), job_id=self.pk)
            self.progress = progress
            for name, value in fields.items():
                setattr(self, name, value)
        return still_running

    @property
    def expires_at(self):
        """When VIDEOGEN_RETENTION_DAYS removes (or removed) a completed job's files; None if never."""
        if self.expired_at is not None:
            return self.expired_at
        days = settings.VIDEOGEN_RETENTION_DAYS
        if self.status != Status.COMPLETED or days is None or self.completed_at is None:
            return None
        return self.completed_at + timedelta(days=days)

    @property
    def video_filename(self) -> str:
        return f"{self.id}.mp4"


# The hot paths' SQL (see jobs.models.compiled.CompiledOnce): a status poll's read, with a user
# filter and without; a submit's INSERT and its active-job cap's count.
_visible_to_user = CompiledQuery(
    lambda user, job: VideoGenerationJob.objects.for_user(user).filter(pk=job).order_by(),
    user=VideoGenerationJob._meta.get_field("user_id"),
    job=VideoGenerationJob._meta.pk,
)
_visible_to_all = CompiledQuery(
    lambda job: VideoGenerationJob.objects.for_user(None).filter(pk=job).order_by(), job=VideoGenerationJob._meta.pk
)
_job_insert = CompiledInsert(VideoGenerationJob)
# Grouped by the one user it filters on: a plain COUNT(*) row, in a form the ORM compiles without running it.
_active_jobs = CompiledQuery(
    lambda user: VideoGenerationJob.objects.for_user(user).active().order_by().values("user_id").annotate(jobs=Count("pk")).values_list("jobs"),
    user=VideoGenerationJob._meta.get_field("user_id"),
)


class PendingFileQuerySet(models.QuerySet):
    def record(self, job: VideoGenerationJob, names: list[str]) -> None:
        """Record the storage names an attempt of `job` (its current worker's) is about to write."""
        self.bulk_create([self.model(name=name, job_id=job.pk, worker=job.worker) for name in names])

    def forget(self, names: list[str]) -> None:
        """The files are the job's now, or deleted: nothing is left to sweep."""
        self.filter(name__in=names).delete()


class PendingFile(models.Model):
    """
    A file an attempt of a job writes to storage (the job's outputs, and any
    other file named here), recorded before it is written and forgotten once
    the job points at it or it is deleted. The reaper removes the files of
    attempts that ended otherwise (jobs.services.recovery.sweep_unfinished_files):
    a worker killed between its uploads and the job's final write.
    """

    name = models.CharField(max_length=500, db_index=True)
    # Not a foreign key: a job deleted while its attempt wrote must leave its record to sweep.
    job_id = models.UUIDField()
    # The attempt: the worker that held the job when it recorded the name.
    worker = models.CharField(max_length=200, blank=True, default="")
    # Each deployment sweeps its own storage's files.
    deployment = models.CharField(max_length=100, default=this_deployment)
    recorded_at = models.DateTimeField(default=timezone.now)

    objects = PendingFileQuerySet.as_manager()

    class Meta:
        db_table = "videogen_pending_files"
