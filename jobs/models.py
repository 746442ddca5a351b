import copy
import hashlib
import hmac
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import connections, models, transaction
from django.db.models import Count, F
from django.db.models.sql import InsertQuery
from django.utils import timezone

from generation.params import GenerationParams


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
        CompiledOnce). The submit's insert.
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
        return self.filter(status=Status.COMPLETED).order_by("-completed_at", "-id")


class CompiledOnce:
    """
    SQL the ORM compiles once per database (_compile), kept for the
    process. Django compiles a query's SQL on every evaluation: for a status
    poll that took as long as the database took to answer it; a submit's
    active-job count cost 400 µs of CPU where running its SQL costs 100, and
    its INSERT of the job's 35 columns a quarter of the whole submit's CPU
    (bench/RESULTS.md, hot paths). On PostgreSQL the database keeps them
    parsed and planned too (_prepared_cursor).
    """

    def __init__(self):
        self._compiled: dict[str, tuple] = {}
        self._lock = threading.Lock()

    def compiled(self, alias: str) -> tuple:
        compiled = self._compiled.get(alias)
        if compiled is None:
            with self._lock:
                compiled = self._compiled.setdefault(alias, self._compile(alias))
        return compiled

    def _compile(self, alias: str) -> tuple:
        raise NotImplementedError


class CompiledQuery(CompiledOnce):
    """
    A query, compiled once per database (CompiledOnce). `build` makes the
    queryset from stand-ins for the values named in `fields` (each the model
    field the value is compared with, which prepares it for the database);
    the SQL, its filters (for_user()'s among them) and its column converters
    are the ORM's own, and only those values change between calls.
    """

    def __init__(self, build: Callable[..., models.QuerySet], **fields: models.Field):
        super().__init__()
        self._build = build
        self._fields = fields

    def first(self, alias: str, *, before: tuple[str, list] = ("", []), **values) -> tuple[list[str], list] | None:
        """
        (the columns' attribute names, the first row, converted), or None
        when there is no row. `before`: a statement (SQL, parameters) to run
        first, in the same round trip; PostgreSQL only (client-side binding
        sends both as one simple query, and each statement takes its own
        snapshot).
        """
        sql, slots, names, converters = self.compiled(alias)
        connection = connections[alias]
        params = [
            self._fields[slot].get_db_prep_value(values[slot], connection) if isinstance(slot, str) else slot[1]
            for slot in slots
        ]
        before_sql, before_params = before
        # Prepared once per connection where the backend can (videogen/postgresql); not with `before`, two statements.
        with connection.cursor() if before_sql else _prepared_cursor(connection) as cursor:
            if before_sql:
                cursor.execute(f"{before_sql}; {sql}", [*before_params, *params])
                cursor.nextset()
            else:
                cursor.execute(sql, params)
            row = cursor.fetchone()
        if row is None:
            return None
        row = list(row)
        for position, (functions, expression) in converters.items():
            for function in functions:
                row[position] = function(row[position], expression, connection)
        return names, row

    def _compile(self, alias: str) -> tuple:
        connection = connections[alias]
        stand_ins = {name: _stand_in(name, field, number) for number, (name, field) in enumerate(self._fields.items())}
        compiler = self._build(**stand_ins).using(alias).query.get_compiler(using=alias)
        sql, params = compiler.as_sql()
        prepared = {name: self._fields[name].get_db_prep_value(value, connection) for name, value in stand_ins.items()}
        # Each parameter is one of the values, or a constant of the query's to keep as it is.
        slots = [next((name for name, value in prepared.items() if param == value), ("constant", param)) for param in params]
        if sorted(slot for slot in slots if isinstance(slot, str)) != sorted(self._fields):
            raise AssertionError(f"cannot tell the parameters of {sql!r} apart: {params!r}")
        columns = [column for column, _, _ in compiler.select]
        names = [getattr(getattr(column, "target", None), "attname", label) for (column, _, label) in compiler.select]
        return sql, slots, names, compiler.get_converters(columns)


class CompiledInsert(CompiledOnce):
    """
    A model's INSERT of all its columns, compiled once per database
    (CompiledOnce). Each insert only prepares the values, with the fields'
    own pre_save() and get_db_prep_save(), as the ORM's compiler does. For
    models whose save() is the ORM's own, with no signal receivers and no
    column the database fills in (nothing to read back).
    """

    def __init__(self, model: type[models.Model]):
        super().__init__()
        self._model = model

    def insert(self, instance: models.Model, alias: str) -> None:
        sql, fields = self.compiled(alias)
        connection = connections[alias]
        params = [field.get_db_prep_save(field.pre_save(instance, True), connection) for field in fields]
        with _prepared_cursor(connection) as cursor:
            cursor.execute(sql, params)
        instance._state.adding = False
        instance._state.db = alias

    def _compile(self, alias: str) -> tuple:
        meta = self._model._meta
        if meta.db_returning_fields or any(field.has_db_default() for field in meta.concrete_fields):
            raise TypeError(f"{self._model.__name__} has columns the database fills in")
        fields = list(meta.local_concrete_fields)
        query = InsertQuery(self._model)
        query.insert_values(fields, [self._model()])
        [(sql, params)] = query.get_compiler(using=alias).as_sql()
        if len(params) != len(fields) or sql.count("%s") != len(fields):
            raise AssertionError(f"the INSERT has other placeholders than one per column: {sql!r}")
        return sql, fields


def _prepared_cursor(connection):
    """A cursor whose statements the database keeps parsed and planned (videogen/postgresql), else a plain one."""
    prepared_cursor = getattr(connection, "prepared_cursor", None)
    return connection.cursor() if prepared_cursor is None else prepared_cursor()


def _stand_in(name: str, field: models.Field, number: int):
    """
    A value for the compiler to place that no real value equals: text with a
    NUL (which PostgreSQL cannot store), the nil UUID and its neighbours.
    """
    if isinstance(field, models.UUIDField):
        return uuid.UUID(int=number)
    if isinstance(field, models.CharField):
        return f"\x00{name}"
    raise TypeError(f"no stand-in for a {type(field).__name__}")


class VideoGenerationJob(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user_id = models.CharField(max_length=100)

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
    progress = models.PositiveSmallIntegerField(default=0)
    # The denoising step last reported, out of num_inference_steps.
    current_step = models.PositiveSmallIntegerField(default=0)
    error_message = models.TextField(blank=True, default="")
    error_code = models.CharField(max_length=32, choices=ErrorCode.choices, blank=True, default="")
    # Times the job has been queued to run: 1 at submit, +1 for each re-run.
    attempts = models.PositiveSmallIntegerField(default=1)
    # When the job was last handed to the broker (see jobs.recovery).
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
    # current_step: a running job's own step rate (jobs/estimates.py).
    first_step_at = models.DateTimeField(null=True, blank=True)
    stepped_at = models.DateTimeField(null=True, blank=True)
    # Where to send this job's events (jobs.webhooks), and which of them.
    webhook_url = models.CharField(max_length=2000, blank=True, default="")
    webhook_events = models.JSONField(default=list, blank=True)
    # When VIDEOGEN_RETENTION_DAYS removed the job's files (the row stays).
    expired_at = models.DateTimeField(null=True, blank=True)

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
            # GET /videos?user_id=: one user's completed videos, newest first.
            models.Index(
                fields=["user_id", "-completed_at", "-id"],
                name="job_user_completed_idx",
                condition=models.Q(status="completed"),
            ),
            # GET /videos without user_id: everyone's completed videos.
            models.Index(
                fields=["-completed_at", "-id"],
                name="job_completed_idx",
                condition=models.Q(status="completed"),
            ),
            models.Index(fields=["status", "submitted_at"], name="job_status_submitted_idx"),
            # The admin: newest first, and its filters.
            models.Index(fields=["submitted_at"], name="job_submitted_idx"),
            models.Index(fields=["user_id", "submitted_at"], name="job_user_submitted_idx"),
            models.Index(fields=["model_name", "submitted_at"], name="job_model_submitted_idx"),
            models.Index(fields=["error_code", "submitted_at"], name="job_error_submitted_idx"),
            # The fair claim (jobs/queue.py): the users waiting, and each
            # one's oldest pending job. Partial, so it holds only the queue;
            # model_name makes the users' scan index-only.
            models.Index(
                fields=["user_id", "submitted_at", "model_name"],
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
            updated = rows.update(status=to, **fields)
            if updated != 1:
                return False
            # In the same transaction: a state change whose event is lost
            # cannot commit, nor an event for a change that did not.
            # webhook_url is set at submit and never changes: a job loaded
            # without one needs no look-up (most jobs, every state change).
            if to in WEBHOOK_STATUSES and ("webhook_url" in self.get_deferred_fields() or self.webhook_url):
                # Late, as below: jobs.webhooks and jobs.metrics import this module.
                from jobs.webhooks import record_event

                record_event(self.pk, to)
        self.status = to
        expressions = []
        for name, value in fields.items():
            if hasattr(value, "resolve_expression"):
                expressions.append(name)
            else:
                setattr(self, name, value)
        if expressions:
            self.refresh_from_db(fields=expressions)
        from jobs.metrics import record_transition

        record_transition(self, to)
        return True

    # What a job sent back to pending starts again without: its last run's
    # progress, worker, times and outcome, so that pending looks the same
    # whichever way a job got there. Its parameters and seed stay, and so a
    # re-run makes the same video.
    REQUEUE_RESETS = {
        "progress": 0,
        "current_step": 0,
        "worker": "",
        "heartbeat_at": None,
        "started_at": None,
        "first_step_at": None,
        "stepped_at": None,
        "completed_at": None,
        "error_code": "",
        "error_message": "",
        "run_info": {},
    }

    def requeue(self, *, from_: set[Status], where: models.Q | None = None, count_attempt: bool = True) -> bool:
        """
        Back to pending, as a transition (False when another process got there
        first), with REQUEUE_RESETS and, when count_attempt, one more attempt.
        The caller wakes a worker (jobs.lifecycle.job_enqueue) once it is committed.
        """
        # A copy: run_info's {} must not be shared between instances.
        fields = copy.deepcopy(self.REQUEUE_RESETS)
        # Back in the queue from now (jobs.estimates, jobs.recovery read it).
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
        return self.transition(
            Status.FAILED,
            from_=from_,
            where=where,
            error_code=code,
            error_message=message,
            completed_at=timezone.now(),
            **fields,
        )

    def set_progress(self, progress: int, **fields) -> bool:
        """
        Record progress while running. Returns False, writing nothing, once the
        job has left RUNNING or is no longer this worker's: that is how a
        worker learns it was cancelled (or its job given to another).
        """
        still_running = (
            type(self)
            .objects.filter(pk=self.pk, status=Status.RUNNING, worker=self.worker)
            .update(progress=progress, **fields)
            == 1
        )
        if still_running:
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


# The hot paths' SQL (see CompiledOnce): a status poll's read, with a user
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


class UserWeight(models.Model):
    """
    An operator's share for one user under the fair policy: weight 2 gets
    twice the worker time of weight 1. Users not listed weigh 1.
    """

    user_id = models.CharField(max_length=100, unique=True)
    weight = models.FloatField(default=1.0, validators=[MinValueValidator(0.01), MaxValueValidator(1000)])
    note = models.CharField(max_length=200, blank=True, default="")

    class Meta:
        db_table = "video_generation_user_weights"
        ordering = ["user_id"]

    def __str__(self) -> str:
        return f"{self.user_id} × {self.weight:g}"


class ClusterBeat(models.Model):
    """
    A live qcluster, refreshed by its parent's reaper thread: how many worker
    processes serve which queue. The estimates count live workers from these.
    """

    name = models.CharField(max_length=200, primary_key=True)
    # "" for the default queue, else a VIDEOGEN_MODEL_QUEUES queue.
    queue = models.CharField(max_length=100, blank=True, default="")
    workers = models.PositiveSmallIntegerField()
    seen_at = models.DateTimeField()

    class Meta:
        db_table = "video_generation_cluster_beats"


class QueueSnapshot(models.Model):
    """
    A queue's order and estimated starts as one process of the deployment
    last built them (jobs/estimates.py), so that the others load them
    instead of each reading the whole queue again.
    """

    # "" for the default queue, else a VIDEOGEN_MODEL_QUEUES queue.
    queue = models.CharField(max_length=100, primary_key=True)
    taken_at = models.DateTimeField()
    # How long the build took: rebuilds wait for estimates.REBUILD_SHARE of it.
    build_seconds = models.FloatField()
    # estimates.encode_standing(): each waiting job's id, position and estimated start.
    standing = models.BinaryField()
    # A process is building the next snapshot until then: the others wait for it instead of building too.
    building_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "video_generation_queue_snapshots"


# Keys this process checked, by the SHA-256 of the presented text: (key,
# when checked). Only live keys are kept, at most MAX_CACHED_KEYS of them.
_checked_keys: dict[str, tuple["ApiKey", float]] = {}
MAX_CACHED_KEYS = 10_000


class ApiKeyQuerySet(models.QuerySet):
    def verify(self, presented: str) -> "ApiKey | None":
        """
        The live key `presented` is, or None. A key this process checked
        within VIDEOGEN_API_KEY_CACHE_SECONDS is trusted without asking the
        database again: that query was a sixth of a status poll's cost
        (bench/RESULTS.md, API keys). So a revocation holds at once in the
        process that made it and within those seconds in every other.
        Invalid keys are never remembered, so guessing fills nothing.
        """
        ttl = settings.VIDEOGEN_API_KEY_CACHE_SECONDS
        digest = hash_api_key(presented)
        now = time.monotonic()
        cached = _checked_keys.get(digest)
        if cached is not None and now - cached[1] < ttl:
            return cached[0]
        key = self._verify_in_database(presented, digest)
        if key is None:
            _checked_keys.pop(digest, None)
        elif ttl:
            if len(_checked_keys) >= MAX_CACHED_KEYS:
                _checked_keys.clear()
            _checked_keys[digest] = (key, now)
        return key

    def _verify_in_database(self, presented: str, digest: str) -> "ApiKey | None":
        """
        Keys are looked up by their public prefix and compared by hash in
        constant time; the key itself is never stored.
        """
        prefix, sep, _ = presented.partition(".")
        if not sep or not prefix.startswith(API_KEY_PREFIX) or len(presented) > 200:
            return None
        try:
            # The prefix is unique: get() (no ORDER BY, unlike first()) on its index.
            key = self.get(prefix=prefix, revoked_at__isnull=True)
        except self.model.DoesNotExist:
            return None
        return key if hmac.compare_digest(key.hashed, digest) else None


# Keys look like vg_<16 hex>.<43 url-safe characters>: the part before the dot
# is stored as is (to find the row, and to tell keys apart in the admin), the
# whole key only as a SHA-256. 256 random bits need no slow hash: nobody can
# guess them, and a fast one keeps every request cheap.
API_KEY_PREFIX = "vg_"


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKey(models.Model):
    name = models.CharField(max_length=100, blank=True, default="")
    user_id = models.CharField(max_length=100)
    # An operator key acts for any user_id, and for every user when none is given.
    operator = models.BooleanField(default=False)
    prefix = models.CharField(max_length=32, unique=True)
    hashed = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        db_table = "videogen_api_keys"
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.prefix} ({self.user_id}{', operator' if self.operator else ''})"

    @classmethod
    def issue(cls, *, user_id: str, operator: bool = False, name: str = "") -> tuple["ApiKey", str]:
        """A new key and its secret text, which exists only in this return value."""
        prefix = API_KEY_PREFIX + secrets.token_hex(8)
        text = f"{prefix}.{secrets.token_urlsafe(32)}"
        key = cls.objects.create(name=name, user_id=user_id, operator=operator, prefix=prefix, hashed=hash_api_key(text))
        return key, text

    def revoke(self) -> bool:
        """Revoke the key; False when it already was. Its next request is a 401."""
        now = timezone.now()
        updated = type(self).objects.filter(pk=self.pk, revoked_at__isnull=True).update(revoked_at=now) == 1
        if updated:
            self.revoked_at = now
        # At once in this process; other processes within VIDEOGEN_API_KEY_CACHE_SECONDS.
        _checked_keys.clear()
        return updated

    @property
    def is_authenticated(self) -> bool:
        # DRF's IsAuthenticated asks request.user this; a key is its own user.
        return True


class MetricSeries(models.Model):
    """
    One Prometheus counter or histogram series for job events, kept in the
    database so that every process that changes jobs (gunicorn workers, the
    qcluster's workers, on any host) adds to the same total (jobs/metrics.py).
    """

    name = models.CharField(max_length=100)
    # Rendered Prometheus labels, 'model="tiny-random",status="completed"'.
    labels = models.CharField(max_length=500)
    value = models.FloatField(default=0)

    class Meta:
        db_table = "videogen_metric_series"
        constraints = [models.UniqueConstraint(fields=["name", "labels"], name="metric_series_unique")]


class WorkerHost(models.Model):
    """A qcluster's live worker count, written by its parent at each reap (jobs/metrics.py)."""

    # host:pid of the qcluster parent; a host may run several clusters.
    cluster = models.CharField(max_length=200, primary_key=True)
    host = models.CharField(max_length=200)
    workers = models.PositiveIntegerField(default=0)
    beat_at = models.DateTimeField()

    class Meta:
        db_table = "videogen_worker_hosts"


class WorkerGpu(models.Model):
    """A worker process's CUDA memory, written after each job and with each heartbeat."""

    worker = models.CharField(max_length=200, primary_key=True)
    host = models.CharField(max_length=200)
    device = models.CharField(max_length=50)
    used_bytes = models.BigIntegerField()
    peak_bytes = models.BigIntegerField()
    updated_at = models.DateTimeField()

    class Meta:
        db_table = "videogen_worker_gpus"


class WebhookEvent(models.Model):
    """
    One event to send to a job's webhook_url: recorded with the state change,
    delivered by jobs.webhooks on its own queue until the receiver takes it
    or retries run out. Deleting the job deletes its events, which stops
    their retries.
    """

    class State(models.TextChoices):
        PENDING = "pending"  # to be sent (again) at next_attempt_at
        DELIVERED = "delivered"  # the receiver answered 2xx
        FAILED = "failed"  # a 4xx other than 429, or retries ran out

    # The webhook-id header: the same on every attempt, so receivers can
    # drop duplicates (delivery is at least once).
    id = models.CharField(primary_key=True, max_length=40)
    job = models.ForeignKey(VideoGenerationJob, on_delete=models.CASCADE, related_name="webhook_events_sent")
    type = models.CharField(max_length=32)
    url = models.CharField(max_length=2000)
    # The exact body that is signed and sent on every attempt.
    payload = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    # Retries stop after this (VIDEOGEN_WEBHOOK_RETRY_HOURS after the event, or after a resend).
    retry_until = models.DateTimeField()
    # An attempt in flight holds the event until then (a dead worker's hold expires).
    locked_until = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")

    class Meta:
        db_table = "webhook_events"
        ordering = ["created_at"]
        indexes = [models.Index(fields=["state", "next_attempt_at"], name="webhook_due_idx")]

    def __str__(self) -> str:
        return f"{self.type} {self.id}"


class WebhookAttempt(models.Model):
    """One HTTP request of a delivery, as the admin shows it."""

    event = models.ForeignKey(WebhookEvent, on_delete=models.CASCADE, related_name="attempt_log")
    attempted_at = models.DateTimeField(default=timezone.now)
    # None when no response came (timeout, refused, connection closed).
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField()
    # The first 1 KB of the response body, or what went wrong.
    response_body = models.TextField(blank=True, default="")
    error = models.TextField(blank=True, default="")

    class Meta:
        db_table = "webhook_attempts"
        ordering = ["attempted_at", "id"]
