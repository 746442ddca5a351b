"""
The job event stream (GET /job/{id}/events) and `Prefer: wait`: how a job's
changes reach the processes that serve watchers (docs/events.md).

Publishing: the process that changes a job announces its id once, where the
change is written (the job_status_changed and job_progressed signals, sent
by transition() and set_progress()): Redis pub/sub when REDIS_URL is set, else PostgreSQL's
NOTIFY, in the same transaction. The SQLite default has neither: each web
process then reads its watched jobs once a second instead.

Watching: each web process has one Listener thread, whatever the number of
watchers. It reads a changed job's row once (only if someone here watches
it), renders it with the GET /job serializer, and hands the result to the
watchers' coroutines on the handoff loop (videogen/handoff.py).

Event ids are derived from the row, so they are the same in every process and
after restarts: epoch * 1_000_000 + step * 1000 + q, where epoch counts the
statuses the job has had (its status_log), step is the denoising step of a
running job, and q numbers queue events within a pending epoch. A client
resuming with Last-Event-ID gets every status after its epoch, from
status_log, then the latest progress: nothing repeated, no status skipped.
"""

import asyncio
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import DatabaseError, close_old_connections, connection, transaction
from django.dispatch import receiver

from jobs.models import FINISHED, Status, VideoGenerationJob
from jobs.representation import JOB_STATUS_FIELDS, job_representation
from jobs.models.signals import job_progressed, job_status_changed
from videogen import handoff

logger = logging.getLogger(__name__)

KEEP_ALIVE = 15.0
# Progress events a stream sends per second at most.
PROGRESS_RATE = 4
# The SQLite fallback: watched jobs read once a second per process. Elsewhere a
# safety read at each keep-alive covers a lost notification (a broker restart).
POLL_INTERVAL = 1.0
SAFETY_INTERVAL = KEEP_ALIVE
# Queue positions of watched pending jobs are re-read at most this often, after any status change.
QUEUE_INTERVAL = 1.0
EPOCH = 1_000_000
STEP = 1000
READ_CHUNK = 500


def channel() -> str:
    # Redis' pub/sub spans its numbered databases: the queue name keeps deployments apart.
    return f"videogen_events_{settings.Q_CLUSTER['name']}"[:63]


# --- Publishing ----------------------------------------------------------------

_redis = None
_redis_lock = threading.Lock()


def _redis_client():
    global _redis
    with _redis_lock:
        if _redis is None:
            import redis

            _redis = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
        return _redis


@receiver(job_status_changed, dispatch_uid="jobs.api.events.status_changed")
def _status_changed(sender, *, job, status: str, **kwargs) -> None:
    publish(job.pk, status)


@receiver(job_progressed, dispatch_uid="jobs.api.events.progressed")
def _progressed(sender, *, job_id: uuid.UUID, **kwargs) -> None:
    publish(job_id, None)


def publish(job_id: uuid.UUID, status: str | None) -> None:
    """Announce a change of the job; a failure is logged, never the writer's: the safety read catches up."""
    payload = f"{job_id} {status or ''}".rstrip()
    try:
        if settings.REDIS_URL:
            transaction.on_commit(lambda: _redis_client().publish(channel(), payload), robust=True)
        elif connection.vendor == "postgresql":
            # Delivered when (and only if) the transaction commits.
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_notify(%s, %s)", [channel(), payload])
    except Exception:
        if connection.vendor == "postgresql" and connection.in_atomic_block:
            raise
        logger.warning("could not publish job %s's change", job_id, exc_info=True)


# --- Snapshots and the events they make -----------------------------------------


class _BaseURL:
    """Stands for the request in job_representation(): absolute URLs on the watcher's host."""

    def __init__(self, base: str):
        self.base = base

    def build_absolute_uri(self, path: str) -> str:
        return self.base + path


@dataclass
class Snapshot:
    """A job as one read saw it, rendered as GET /job for one base URL."""

    statuses: tuple[str, ...]
    step: int
    body: dict
    read_at: float = field(default_factory=time.monotonic)
    _encoded: dict = field(default_factory=dict)

    @property
    def status(self) -> str:
        return self.statuses[-1]

    @property
    def epoch(self) -> int:
        return len(self.statuses)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def terminal_id(self) -> int:
        return self.epoch * EPOCH

    def encoded(self, kind: str) -> str:
        if kind not in self._encoded:
            self._encoded[kind] = json.dumps(event_data(kind, self.body), cls=DjangoJSONEncoder, separators=(",", ":"))
        return self._encoded[kind]


def statuses_of(job: VideoGenerationJob) -> tuple[str, ...]:
    logged = tuple(job.status_log.split(",")) if job.status_log else ()
    # Rows from before status_log (or a status written around it) end in their status.
    return logged if logged and logged[-1] == job.status else (*logged, job.status)


def snapshot(job: VideoGenerationJob, base_url: str) -> Snapshot:
    body = job_representation(job, JOB_STATUS_FIELDS, request=_BaseURL(base_url))
    step = job.current_step if job.status == Status.RUNNING else 0
    return Snapshot(statuses=statuses_of(job), step=step, body=dict(body))


PROGRESS_FIELDS = ("progress", "current_step", "estimated_completion_at")


def event_data(kind: str, body: dict) -> dict:
    if kind == "progress":
        data = {name: body[name] for name in PROGRESS_FIELDS}
        data["total_steps"] = body["num_inference_steps"]
        if body.get("live_preview_url"):
            data["live_preview_url"] = body["live_preview_url"]
        return data
    if kind == "queue":
        return {"queue_position": body["queue_position"], "estimated_start_at": body["estimated_start_at"]}
    return body


def parse_event_id(value: str | None) -> int | None:
    if value is None:
        return None
    value = value.strip()
    if not (value.isascii() and value.isdigit()) or len(value) > 15:
        return None
    return int(value)


@dataclass
class Position:
    """What a stream has sent: the last event id, and the queue position it last told."""

    last_id: int | None = None
    queue_position: int | None = None


def plan(position: Position, snap: Snapshot) -> list[tuple[int, str, str]]:
    """
    The events (id, name, data) that bring a client at `position` up to
    `snap`: every status after its epoch (the last one, when finished, as
    the terminal event), then the latest progress or queue position.
    """
    events: list[tuple[int, str, str]] = []
    last = position.last_id
    epoch = snap.epoch
    if last is None or last // EPOCH > epoch:
        # A fresh stream (or an id this job never gave): the current status only.
        first_epoch, last_step, last_q = epoch, 0, 0
    else:
        first_epoch = last // EPOCH + 1
        same_epoch = last // EPOCH == epoch
        last_step = (last // STEP) % 1000 if same_epoch else 0
        last_q = last % STEP if same_epoch else 0
    for number in range(first_epoch, epoch + 1):
        status = snap.statuses[number - 1]
        name = status if number == epoch and snap.finished else "status"
        events.append((number * EPOCH, name, snap.encoded("status")))
    if snap.finished:
        return events
    if snap.status == Status.RUNNING and snap.step > last_step:
        events.append((epoch * EPOCH + snap.step * STEP, "progress", snap.encoded("progress")))
    queue_position = snap.body.get("queue_position")
    if snap.status == Status.PENDING and queue_position is not None and last_q < STEP - 1:
        if queue_position != position.queue_position or first_epoch <= epoch:
            events.append((epoch * EPOCH + last_q + 1, "queue", snap.encoded("queue")))
    return events


def format_event(event_id: int, name: str, data: str) -> bytes:
    return f"id: {event_id}\nevent: {name}\ndata: {data}\n\n".encode()


# --- The listener: one per process ---------------------------------------------


class Watch:
    """One stream's or waiter's interest in a job, on the loop: the latest snapshot and a wake-up."""

    def __init__(self, job_id: uuid.UUID, base_url: str, first: Snapshot):
        self.job_id = job_id
        self.base_url = base_url
        self.snapshot = first
        self.changed = asyncio.Event()

    def update(self, snap: Snapshot) -> None:
        self.snapshot = snap
        self.changed.set()


class Listener:
    """
    This process's one subscriber to job changes, and the registry of its
    watches. Watches are added and removed on the loop; the thread reads
    rows and posts snapshots back to the loop.
    """

    def __init__(self):
        self.lock = threading.Lock()
        self.watches: dict[uuid.UUID, set[Watch]] = {}
        self.dirty: set[uuid.UUID] = set()
        # The listener thread's own: what each watched job's row said when last posted.
        self.seen: dict[uuid.UUID, tuple] = {}
        self.queues_dirty = False
        self.wake = threading.Event()
        self.thread: threading.Thread | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    @property
    def count(self) -> int:
        with self.lock:
            return sum(len(watches) for watches in self.watches.values())

    def add(self, watch: Watch) -> None:
        with self.lock:
            self.watches.setdefault(watch.job_id, set()).add(watch)
            if self.thread is None or not self.thread.is_alive():
                self.loop = handoff.loop()
                self.thread = threading.Thread(target=self.run, name="videogen-events", daemon=True)
                self.thread.start()

    def remove(self, watch: Watch) -> None:
        with self.lock:
            watches = self.watches.get(watch.job_id)
            if watches is not None:
                watches.discard(watch)
                if not watches:
                    del self.watches[watch.job_id]

    def notified(self, job_id: uuid.UUID, status_changed: bool) -> None:
        with self.lock:
            if job_id in self.watches:
                self.dirty.add(job_id)
            self.queues_dirty = self.queues_dirty or status_changed
        self.wake.set()

    def run(self) -> None:
        source = _source()
        threading.Thread(target=source, args=(self,), name="videogen-events-source", daemon=True).start()
        last_full = last_queue = time.monotonic()
        full_interval = SAFETY_INTERVAL if source.pushes else POLL_INTERVAL
        while True:
            self.wake.wait(timeout=min(full_interval, QUEUE_INTERVAL))
            self.wake.clear()
            now = time.monotonic()
            with self.lock:
                dirty, self.dirty = self.dirty, set()
                if now - last_full >= full_interval:
                    dirty |= set(self.watches)
                    last_full = now
                queues = self.queues_dirty and now - last_queue >= QUEUE_INTERVAL
                if queues:
                    self.queues_dirty = False
                    last_queue = now
            try:
                self.refresh(dirty, queues)
            except DatabaseError:
                logger.warning("events: could not read jobs; trying again", exc_info=True)
                close_old_connections()
                time.sleep(1)
            except Exception:
                logger.exception("events: refreshing watched jobs failed")
            if self.queues_dirty:
                # Come back for the queue positions once QUEUE_INTERVAL has passed.
                self.wake.set() if time.monotonic() - last_queue >= QUEUE_INTERVAL else None

    def refresh(self, dirty: set[uuid.UUID], queues: bool) -> None:
        """Read the changed watched jobs (and, after status changes, the pending ones) and post their snapshots."""
        ids = set(dirty)
        if queues:
            with self.lock:
                watched = list(self.watches)
            ids |= set(
                VideoGenerationJob.objects.filter(pk__in=watched, status=Status.PENDING).values_list("pk", flat=True)
            ) if watched else set()
        if not ids:
            return
        ids_list = list(ids)
        for start in range(0, len(ids_list), READ_CHUNK):
            for job in VideoGenerationJob.objects.filter(pk__in=ids_list[start : start + READ_CHUNK]):
                # A row as it was last posted is posted again only where its queue position may have moved.
                seen = (job.status_log, job.status, job.current_step, job.progress, job.stepped_at, job.completed_at)
                if self.seen.get(job.pk) != seen or job.status == Status.PENDING:
                    self.seen[job.pk] = seen
                    self.post(job)
        with self.lock:
            for job_id in set(self.seen) - set(self.watches):
                del self.seen[job_id]
        close_old_connections()

    def post(self, job: VideoGenerationJob) -> None:
        with self.lock:
            watches = list(self.watches.get(job.pk, ()))
        snapshots = {base: snapshot(job, base) for base in {watch.base_url for watch in watches}}
        self.loop.call_soon_threadsafe(_deliver, watches, snapshots)


def _deliver(watches: Iterable[Watch], snapshots: dict[str, Snapshot]) -> None:
    for watch in watches:
        watch.update(snapshots[watch.base_url])


class _Source:
    pushes = True

    def __call__(self, listener: Listener) -> None:
        while True:
            try:
                self.listen(listener)
            except Exception:
                logger.warning("events: the %s subscription dropped; reconnecting", type(self).__name__, exc_info=True)
            # Whatever changed meanwhile: read every watched job again.
            with listener.lock:
                listener.dirty |= set(listener.watches)
                listener.queues_dirty = True
            listener.wake.set()
            time.sleep(1)

    def listen(self, listener: Listener) -> None:
        raise NotImplementedError


def _received(listener: Listener, payload: str) -> None:
    job_id, _, status = payload.partition(" ")
    try:
        listener.notified(uuid.UUID(job_id), bool(status))
    except ValueError:
        logger.warning("events: ignoring the message %r", payload[:100])


class _RedisSource(_Source):
    def listen(self, listener: Listener) -> None:
        import redis

        client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=5, health_check_interval=30)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(channel())
        try:
            while True:
                message = pubsub.get_message(timeout=SAFETY_INTERVAL)
                if message is not None and message["type"] == "message":
                    _received(listener, message["data"].decode())
        finally:
            pubsub.close()
            client.close()


class _PostgresSource(_Source):
    def listen(self, listener: Listener) -> None:
        import psycopg

        params = connection.get_connection_params()
        params.pop("cursor_factory", None)
        params.pop("prepare_threshold", None)
        with psycopg.connect(**params, autocommit=True) as listening:
            listening.execute(f'LISTEN "{channel()}"')
            while True:
                for notification in listening.notifies(timeout=SAFETY_INTERVAL):
                    _received(listener, notification.payload)


class _Polling(_Source):
    """SQLite: nothing publishes; the listener's own once-a-second read of watched jobs is the source."""

    pushes = False

    def __call__(self, listener: Listener) -> None:
        pass


def _source() -> _Source:
    if settings.REDIS_URL:
        return _RedisSource()
    if connection.vendor == "postgresql":
        return _PostgresSource()
    return _Polling()


_listener = Listener()


def listener() -> Listener:
    return _listener


class TooManyWatchers(Exception):
    pass


def reserve() -> None:
    """Refuse a new stream or waiter past VIDEOGEN_MAX_STREAMS in this process."""
    if _listener.count >= settings.VIDEOGEN_MAX_STREAMS:
        raise TooManyWatchers()


# --- The coroutines ---------------------------------------------------------------

STREAM_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-store",
    # nginx: pass each event on at once, not when its buffer fills.
    "X-Accel-Buffering": "no",
}


async def stream(output: handoff.Output, job_id: uuid.UUID, base_url: str, first: Snapshot, last_id: int | None) -> None:
    """The event stream of one job, from `first` on; closes after the terminal event."""
    watch = Watch(job_id, base_url, first)
    _listener.add(watch)
    position = Position(last_id=last_id)
    last_progress = 0.0
    gone = asyncio.ensure_future(output.gone.wait())
    try:
        await output.start(200, STREAM_HEADERS)
        # How soon an EventSource reconnects, given with the first event (a block of its own is an empty event to some clients).
        retry = b"retry: 2000\n"
        while not output.gone.is_set():
            snap = watch.snapshot
            watch.changed.clear()
            events = plan(position, snap)
            if events and all(name == "progress" for _, name, _ in events):
                wait = last_progress + 1 / PROGRESS_RATE - time.monotonic()
                if wait > 0:
                    # Coalesced: the latest progress after the pause, whatever came meanwhile.
                    await asyncio.sleep(wait)
                    continue
            if events:
                await output.write(retry + b"".join(format_event(*event) for event in events))
                retry = b""
                position.last_id = events[-1][0]
                if any(name == "progress" for _, name, _ in events):
                    last_progress = time.monotonic()
                if snap.status == Status.PENDING:
                    position.queue_position = snap.body.get("queue_position")
            if snap.finished:
                return
            changed = asyncio.ensure_future(watch.changed.wait())
            done, _ = await asyncio.wait({changed, gone}, timeout=KEEP_ALIVE, return_when=asyncio.FIRST_COMPLETED)
            changed.cancel()
            if not done:
                await output.write(b": keep-alive\n\n")
    finally:
        gone.cancel()
        _listener.remove(watch)


async def wait_finished(
    job_id: uuid.UUID, base_url: str, first: Snapshot, seconds: float, gone: asyncio.Event | None
) -> None:
    """Return once the job is finished, `seconds` have passed or the client left."""
    gone = gone or asyncio.Event()
    watch = Watch(job_id, base_url, first)
    _listener.add(watch)
    try:
        async with asyncio.timeout(seconds):
            while not watch.snapshot.finished and not gone.is_set():
                changed = asyncio.ensure_future(watch.changed.wait())
                left = asyncio.ensure_future(gone.wait())
                await asyncio.wait({changed, left}, return_when=asyncio.FIRST_COMPLETED)
                changed.cancel()
                left.cancel()
                watch.changed.clear()
    except TimeoutError:
        pass
    finally:
        _listener.remove(watch)
