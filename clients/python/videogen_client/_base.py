"""
Everything Client and AsyncClient do, but the I/O: the configuration, how
each request is built, how answers become results or errors, when to
retry, and each operation as a plan: a generator that yields what it
needs done (a Call to send, a Sleep, a read of a stream) and is sent the
answer back. The two clients only drive plans, blocking or awaiting.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Generator, TypeVar

import httpx

from videogen_client.errors import ApiError, ConnectionFailed, DownloadError, NotFound, WaitTimeout, error_for, retry_after
from videogen_client.types import EVENT_TYPES, PENDING, RUNNING, Event, Job, Model, ModelList, Video

__version__ = "0.1.0"

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = 30.0
# The server caps Prefer: wait at VIDEOGEN_MAX_WAIT (default 60); asking for more gains nothing.
MAX_PREFER_WAIT = 60
# The event stream sends a comment every 15 s: silence for three of them means the connection is dead.
STREAM_READ_TIMEOUT = 45.0
RETRY_STATUSES = frozenset({429, 502, 503, 504})
# Errors raised before the request left this machine: retrying any method is safe.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
IMAGE_FIELDS = ("image", "last_image")

# What a request field's --flag takes in the CLI, and how generate() sends it: the
# body fields of POST /generate besides prompt, the images and extend_job_id.
REQUEST_FIELDS: dict[str, type] = {
    "user_id": str,
    "negative_prompt": str,
    "model": str,
    "fps": int,
    "num_frames": int,
    "width": int,
    "height": int,
    "num_inference_steps": int,
    "guidance_scale": float,
    "seed": int,
    "num_videos_per_prompt": int,
    "webhook_url": str,
    "webhook_events": list,
    "image_fit": str,
    "start_within": int,
    "priority": str,
}

OnProgress = Callable[[Event], Any]
T = TypeVar("T")
# What a plan yields (Call, Sleep, Emit or an OnStream op), is sent back (the answer), and returns.
Plan = Generator[Any, Any, T]


@dataclasses.dataclass
class Call:
    """One API request, described once and sent by either client."""

    method: str
    url: str
    params: dict[str, str] = dataclasses.field(default_factory=dict)
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    json: Any = None
    data: dict[str, Any] | None = None
    files: list[tuple[str, tuple[str, bytes, str]]] | None = None
    timeout: httpx.Timeout | float | None = None
    # Whether the request may be sent again after it may have reached the
    # server: reads, and submits (which carry an Idempotency-Key).
    repeatable: bool = True
    # Answered before the body is read, which stays open for the OnStream ops that follow.
    stream: bool = False
    follow_redirects: bool = False

    def send_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"headers": self.headers}
        if self.follow_redirects:
            kwargs["follow_redirects"] = True
        if self.params:
            # httpx drops a URL's own query string when given params, even empty ones (a next-page link).
            kwargs["params"] = self.params
        if self.json is not None:
            kwargs["json"] = self.json
        if self.data is not None:
            kwargs["data"] = self.data
        if self.files is not None:
            kwargs["files"] = self.files
        if self.timeout is not None:
            kwargs["timeout"] = self.timeout
        return kwargs


@dataclasses.dataclass
class Sleep:
    seconds: float


@dataclasses.dataclass
class Emit:
    """A value for the caller as it comes: an Event for on_progress or events(), a Video for videos()."""

    value: Any


class OnStream:
    """An op on the stream the last Call(stream=True) opened; any other op closes that stream first."""


@dataclasses.dataclass
class Read(OnStream):
    """Read the whole body: an error's, to raise it."""

    response: httpx.Response


@dataclasses.dataclass
class Iterate(OnStream):
    """Answered with an iterator, for Next, of the body's bytes or (with sse) of its server-sent events."""

    response: httpx.Response
    sse: bool = False


@dataclasses.dataclass
class Next(OnStream):
    """Answered with the iterator's next item, or None at the end of the stream."""

    items: Any


class Steps:
    """
    A plan walked by a driver: iterating hands out the ops it yields, one by
    one; before the next, the driver sets `answer`, or `error` (a transport
    error, thrown into the plan). `result` is what the plan returned.
    """

    def __init__(self, plan: Plan[Any]):
        self.plan = plan
        self.result = self.answer = self.error = None

    def __iter__(self) -> Steps:
        return self

    def __next__(self) -> Any:
        answer, error, self.answer, self.error = self.answer, self.error, None, None
        try:
            return self.plan.throw(error) if error is not None else self.plan.send(answer)
        except StopIteration as stop:
            self.result = stop.value
            raise


class BaseClient:
    def __init__(
        self,
        base_url: str | None = None,
        user_id: str | None = None,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        max_retries: int = 3,
        backoff: float = 0.5,
        max_retry_wait: float = 10.0,
        poll_interval: float = 1.0,
    ):
        """
        base_url: the server (http://host:8000) or its API root (.../api/v1);
        default VIDEOGEN_URL, else http://127.0.0.1:8000. user_id and api_key
        default to VIDEOGEN_USER_ID and VIDEOGEN_API_KEY. Connection errors
        and 429/502/503/504 are retried max_retries times with exponential
        backoff from `backoff` seconds; a Retry-After longer than
        max_retry_wait is not waited for (RateLimited is raised at once).
        """
        base = (base_url or os.environ.get("VIDEOGEN_URL") or DEFAULT_URL).rstrip("/")
        self.api_url = base if base.endswith("/api/v1") else base + "/api/v1"
        self.user_id = user_id if user_id is not None else os.environ.get("VIDEOGEN_USER_ID") or None
        self.api_key = api_key if api_key is not None else os.environ.get("VIDEOGEN_API_KEY") or None
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_retry_wait = max_retry_wait
        self.poll_interval = poll_interval
        # None: not known yet; False: this server has no event stream, wait() polls.
        self._events_supported: bool | None = None

    # --- Building requests.

    def _url(self, *parts: str) -> str:
        return "/".join([self.api_url, *parts])

    def _headers(self, **extra: str) -> dict[str, str]:
        headers = {"User-Agent": f"videogen-client/{__version__}", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return {**headers, **extra}

    def _user_params(self) -> dict[str, str]:
        return {"user_id": self.user_id} if self.user_id else {}

    def _read(self, *parts: str, params: dict[str, str] | None = None, prefer_wait: int = 0) -> Call:
        call = Call("GET", self._url(*parts), {**self._user_params(), **(params or {})}, self._headers())
        return self._prefer(call, prefer_wait)

    def _prefer(self, call: Call, wait: int) -> Call:
        """Ask the server to hold the answer up to `wait` seconds until the job finishes (Prefer: wait)."""
        if wait:
            call.headers["Prefer"] = f"wait={wait}"
            call.timeout = httpx.Timeout(self.timeout, read=wait + self.timeout)
        return call

    def _submit(self, prompt: str, image: Any, last_image: Any, extend_job_id: str | None, idempotency_key: str | None,
                params: dict[str, Any], prefer_wait: int = 0) -> Call:
        """
        POST /generate: JSON, or multipart/form-data when an image is a file
        (path, bytes, file object, PIL image) rather than a URL. The
        Idempotency-Key (a fresh one unless given) makes a retry return the
        job the first attempt made instead of a second job.
        """
        fields: dict[str, Any] = {"prompt": prompt, **{name: value for name, value in params.items() if value is not None}}
        if "user_id" not in fields and self.user_id:
            fields["user_id"] = self.user_id
        if extend_job_id is not None:
            fields["extend_job_id"] = str(extend_job_id)
        files = []
        for name, value in zip(IMAGE_FIELDS, (image, last_image)):
            if value is None:
                continue
            part = image_part(value)
            if isinstance(part, str):
                fields[name] = part
            else:
                files.append((name, part))
        headers = self._headers(**{"Idempotency-Key": idempotency_key or str(uuid.uuid4())})
        call = self._prefer(Call("POST", self._url("generate"), headers=headers), prefer_wait)
        if files:
            # A form's values are text; a list (webhook_events) is sent as the field repeated.
            call.data = {name: value if isinstance(value, list) else str(value) for name, value in fields.items()}
            call.files = files
        else:
            call.json = fields
        return call

    def _action(self, method: str, *parts: str) -> Call:
        # Cancel and delete are not retried once sent: a repeat would answer 409 or 404 for what did happen.
        return Call(method, self._url(*parts), self._user_params(), self._headers(), repeatable=False)

    # --- Answers.

    def _retry_delay(self, call: Call, attempt: int, *, response: httpx.Response | None = None,
                     error: Exception | None = None) -> float | None:
        """Seconds to wait before sending `call` again, or None to stop here (return the answer or raise)."""
        if attempt >= self.max_retries:
            return None
        if error is not None:
            if not (call.repeatable or isinstance(error, NOT_SENT)):
                return None
        elif response is None or response.status_code not in RETRY_STATUSES:
            return None
        elif response.status_code != 503 and not call.repeatable:
            # A 503 is refused before the work; a 429 or a proxy's 502/504 may come after it was done.
            if response.status_code != 429:
                return None
        delay = self._backoff(attempt)
        if response is not None:
            told = retry_after({k.lower(): v for k, v in response.headers.items()})
            if told is not None:
                if told > self.max_retry_wait:
                    return None
                delay = max(delay, told)
        return delay

    def _backoff(self, attempt: int) -> float:
        # Exponential with jitter, so clients that failed together do not retry together.
        return min(self.backoff * 2**attempt, 8.0) * random.uniform(0.5, 1.0)

    @staticmethod
    def _error(response: httpx.Response) -> ApiError:
        try:
            body = response.json()
        except ValueError:
            body = response.text
        return error_for(response.status_code, body, {k.lower(): v for k, v in response.headers.items()})

    def _result(self, response: httpx.Response) -> Any:
        if response.status_code >= 400:
            raise self._error(response)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    # --- Waiting without the event stream.

    def _hold(self, deadline: float | None, progress: bool) -> int:
        """Seconds a poll asks the server to hold (Prefer: wait): short while progress is wanted.

        Never past the deadline: with under a second left the poll is a plain GET, since
        Prefer: wait counts whole seconds and a wait(timeout=0.5) must not hold for 1.
        """
        hold = max(1, math.ceil(self.poll_interval)) if progress else MAX_PREFER_WAIT
        if deadline is not None:
            hold = min(hold, max(0, math.floor(deadline - time.monotonic())))
        return hold

    @staticmethod
    def _timed_out(deadline: float | None) -> bool:
        return deadline is not None and time.monotonic() >= deadline

    def _pause(self, deadline: float | None) -> float:
        return self.poll_interval if deadline is None else max(0.0, min(self.poll_interval, deadline - time.monotonic()))

    # --- Plans: each operation once, for Client and AsyncClient to drive. Those that
    # take `progress` emit the job's events on the way when it is true.

    def _plan_send(self, call: Call) -> Plan[httpx.Response]:
        attempt = 0
        while True:
            try:
                response = yield call
            except httpx.TransportError as exc:
                delay = self._retry_delay(call, attempt, error=exc)
                if delay is None:
                    raise ConnectionFailed(f"{call.method} {call.url}: {exc or type(exc).__name__}") from exc
            else:
                delay = self._retry_delay(call, attempt, response=response)
                if delay is None:
                    return response
            yield Sleep(delay)
            attempt += 1

    def _plan_result(self, call: Call) -> Plan[Any]:
        return self._result((yield from self._plan_send(call)))

    def _plan_generate(self, prompt: str, image: Any, last_image: Any, extend_job_id: str | None, wait: bool | float,
                       progress: bool, idempotency_key: str | None, params: dict[str, Any]) -> Plan[Job]:
        hold = MAX_PREFER_WAIT if wait is True and not progress else 0
        call = self._submit(prompt, image, last_image, extend_job_id, idempotency_key, params, prefer_wait=hold)
        job = Job.from_dict((yield from self._plan_result(call)))
        if not wait or job.finished:
            return job
        return (yield from self._plan_wait(job.job_id, None if wait is True else float(wait), progress))

    def _plan_job(self, job_id: str) -> Plan[Job]:
        return Job.from_dict((yield from self._plan_result(self._read("job", str(job_id)))))

    def _plan_wait(self, job_id: str, timeout: float | None, progress: bool) -> Plan[Job]:
        job_id, deadline = str(job_id), deadline_of(timeout)
        if self._events_supported is not False:
            try:
                return (yield from self._plan_stream(job_id, None, deadline, progress=progress, terminal=False))
            except NoEventStream:
                self._events_supported = False
        return (yield from self._plan_poll(job_id, deadline, progress))

    def _plan_events(self, job_id: str, last_event_id: str | None) -> Plan[None]:
        try:
            yield from self._plan_stream(str(job_id), last_event_id, None, progress=True, terminal=True)
        except NoEventStream:
            raise NotFound(404, "This server has no event stream (GET /job/{id}/events).") from None

    def _plan_stream(self, job_id: str, last_event_id: str | None, deadline: float | None, *, progress: bool,
                     terminal: bool) -> Plan[Job]:
        """
        Follow the job's event stream to its terminal event and return the
        job; emit the events before it (with `progress`) and the terminal
        one too (with `terminal`). A dropped connection is resumed with
        Last-Event-ID.
        """
        call = self._read("job", job_id, "events")
        attempt = 0
        while True:
            # What httpx_sse.connect_sse sends, and where the last connection left off.
            headers = {**call.headers, "Accept": "text/event-stream", "Cache-Control": "no-store"}
            if last_event_id:
                headers["Last-Event-ID"] = last_event_id
            read = STREAM_READ_TIMEOUT if deadline is None else max(0.1, min(STREAM_READ_TIMEOUT, deadline - time.monotonic()))
            try:
                timeout = httpx.Timeout(self.timeout, read=read)
                response = yield dataclasses.replace(call, headers=headers, timeout=timeout, stream=True)
                delay = self._retry_delay(call, attempt, response=response)
                if delay is None:
                    if response.status_code != 200 or not is_event_stream(response):
                        yield Read(response)
                        if response.status_code >= 400 and response.status_code not in (404, 405, 406):
                            raise self._error(response)
                        # The job exists (else this raises NotFound) but the stream does not.
                        yield from self._plan_job(job_id)
                        raise NoEventStream()
                    events = yield Iterate(response, sse=True)
                    while (sse := (yield Next(events))) is not None:
                        attempt = 0
                        last_event_id = sse.id or last_event_id
                        if sse.event not in EVENT_TYPES:
                            continue
                        event = parse_event(sse.event, sse.id, sse.data)
                        if event.terminal:
                            if terminal:
                                yield Emit(event)
                            return event.job
                        if progress:
                            yield Emit(event)
                        if self._timed_out(deadline):
                            raise (yield from self._plan_timeout(job_id))
                    # Closed before the terminal event: resume after the last one seen.
                    delay = self._backoff(attempt)
            except httpx.TransportError as exc:
                if self._timed_out(deadline):
                    raise (yield from self._plan_timeout(job_id)) from exc
                delay = self._retry_delay(call, attempt, error=exc)
                if delay is None:
                    raise ConnectionFailed(f"The event stream of {job_id} broke off: {exc}") from exc
            yield Sleep(delay)
            attempt += 1

    def _plan_timeout(self, job_id: str) -> Plan[WaitTimeout]:
        return WaitTimeout(f"Job {job_id} did not finish in time.", (yield from self._plan_job(job_id)))

    def _plan_poll(self, job_id: str, deadline: float | None, progress: bool) -> Plan[Job]:
        previous = None
        while True:
            response = yield from self._plan_send(self._read("job", job_id, prefer_wait=self._hold(deadline, progress)))
            body = self._result(response)
            for event in changes(previous, body) if progress else ():
                yield Emit(event)
            job = Job.from_dict(body)
            if job.finished:
                return job
            if self._timed_out(deadline):
                raise WaitTimeout(f"Job {job_id} did not finish in time; it is {job.status}.", job)
            if "preference-applied" not in response.headers:
                yield Sleep(self._pause(deadline))
            previous = body

    def _plan_download(self, job_id: str, path: str | os.PathLike | None) -> Plan[Path]:
        job_id = str(job_id)
        expected = (yield from self._plan_job(job_id)).file_size_bytes
        target, part = download_target(job_id, path)
        call = self._read("download", job_id)
        attempt = 0
        while True:
            have = part.stat().st_size if part.exists() else 0
            try:
                response = yield dataclasses.replace(call, headers=range_headers(call.headers, have), stream=True,
                                                     follow_redirects=True)
                delay = self._retry_delay(call, attempt, response=response)
                if delay is None:
                    if response.status_code >= 400 and response.status_code != 416:
                        yield Read(response)
                        raise self._error(response)
                    start, total = download_offset(response, have)
                    if start is None:
                        if total == have:
                            return finish_download(part, target, total, expected)
                        part.unlink()
                        continue
                    chunks = yield Iterate(response)
                    with open(part, "r+b" if start else "wb") as out:
                        out.seek(start)
                        out.truncate()
                        while (chunk := (yield Next(chunks))) is not None:
                            out.write(chunk)
                    return finish_download(part, target, total, expected)
            except httpx.TransportError as exc:
                delay = self._retry_delay(call, attempt, error=exc)
                if delay is None:
                    raise ConnectionFailed(f"Download of {job_id} broke off: {exc}; call download() again to resume.") from exc
                if part.exists() and part.stat().st_size > have:
                    attempt = -1  # It moved forward: a fresh budget for the rest.
            yield Sleep(delay)
            attempt += 1

    def _plan_videos(self, page_size: int | None) -> Plan[None]:
        call = self._read("videos", params={"page_size": str(page_size)} if page_size else None)
        while call is not None:
            body = yield from self._plan_result(call)
            for video in body["videos"]:
                yield Emit(Video.from_dict(video))
            call = Call("GET", body["next"], headers=call.headers) if body.get("next") else None

    def _plan_cancel(self, job_id: str) -> Plan[Job]:
        return Job.from_dict((yield from self._plan_result(self._action("POST", "job", str(job_id), "cancel"))))

    def _plan_delete(self, job_id: str) -> Plan[None]:
        yield from self._plan_result(self._action("DELETE", "job", str(job_id)))

    def _plan_models(self) -> Plan[ModelList]:
        body = yield from self._plan_result(self._read("models"))
        return ModelList([Model.from_dict(model) for model in body["models"]], body["default"])


def deadline_of(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def changes(previous: dict | None, current: dict) -> list[Event]:
    """
    The events a stream would have sent between two polls of a job: its
    status changing, its queue position moving, its step advancing.
    """
    events = []
    before = previous or {}
    if current["status"] != before.get("status"):
        events.append(Event("status", None, current))
    if current["status"] == PENDING and current.get("queue_position") != before.get("queue_position"):
        events.append(Event("queue", None, {key: current.get(key) for key in ("queue_position", "estimated_start_at")}))
    if current["status"] == RUNNING and current.get("current_step") != before.get("current_step"):
        events.append(Event("progress", None, {
            "progress": current["progress"],
            "current_step": current["current_step"],
            "total_steps": current["num_inference_steps"],
            "estimated_completion_at": current.get("estimated_completion_at"),
        }))
    return events


def parse_event(name: str, event_id: str, data: str) -> Event:
    return Event(name, event_id or None, json.loads(data) if data else {})


class NoEventStream(Exception):
    """The server has no GET /job/{id}/events (it predates it): wait() polls instead."""


def is_event_stream(response: httpx.Response) -> bool:
    return response.headers.get("content-type", "").partition(";")[0].strip() == "text/event-stream"


# --- Images.

def image_part(value: Any) -> str | tuple[str, bytes, str]:
    """
    An image argument as it is sent: a URL (https://, or a data: URI) as
    text; a path, bytes, a file object or a PIL image as a file part
    (name, bytes, type). The server decides the format from the content.
    """
    if isinstance(value, str) and value.startswith(("https://", "http://", "data:")):
        return value
    if isinstance(value, (str, os.PathLike)):
        path = Path(value)
        return path.name, path.read_bytes(), content_type(path.read_bytes()[:16])
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        return "image", data, content_type(data)
    pil = sys.modules.get("PIL.Image")
    if pil is not None and isinstance(value, pil.Image):
        import io

        buffer = io.BytesIO()
        value.save(buffer, format="PNG")
        return "image.png", buffer.getvalue(), "image/png"
    if hasattr(value, "read"):
        data = value.read()
        if isinstance(data, str):
            raise TypeError("An image file must be opened in binary mode ('rb').")
        return Path(getattr(value, "name", "image") or "image").name, data, content_type(data)
    raise TypeError(
        f"An image is a path, bytes, a binary file, an https:// or data: URL, or a PIL image, not {type(value).__name__}."
    )


def content_type(head: bytes) -> str:
    if head.startswith(b"\x89PNG"):
        return "image/png"
    if head.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


# --- Downloads.

def download_target(job_id: str, path: str | os.PathLike | None) -> tuple[Path, Path]:
    """Where a download goes, and the .part file it is written to until its size is verified."""
    target = Path(path) if path is not None else Path(f"{job_id}.mp4")
    if target.is_dir():
        target = target / f"{job_id}.mp4"
    return target, target.with_name(target.name + ".part")


def range_headers(headers: dict[str, str], have: int) -> dict[str, str]:
    return {**headers, "Accept": "video/mp4, application/json", **({"Range": f"bytes={have}-"} if have else {})}


def download_offset(response: httpx.Response, have: int) -> tuple[int | None, int | None]:
    """
    Where the body of a download answer starts in the file, and the file's
    whole size: (have, total) for a 206 resuming it, (0, total) for a 200
    with the whole file. (None, total) for a 416: the part already holds
    `total` bytes, or more than the file (then it starts again).
    """
    headers = response.headers
    if response.status_code == 206:
        start, total = content_range(headers.get("content-range", ""))
        if start != have:
            raise DownloadError(f"The server resumed at byte {start}, not {have}.")
        return have, total
    if response.status_code == 416:
        return None, content_range(headers.get("content-range", ""))[1]
    length = headers.get("content-length")
    return 0, int(length) if length is not None else None


def content_range(value: str) -> tuple[int | None, int | None]:
    """`bytes 100-199/1000` -> (100, 1000); `bytes */1000` -> (None, 1000)."""
    unit, _, spec = value.partition(" ")
    span, _, total = spec.partition("/")
    start = span.partition("-")[0]
    return (int(start) if start.isdigit() else None), (int(total) if total.isdigit() else None)


def finish_download(part: Path, target: Path, total: int | None, expected: int | None) -> Path:
    size = part.stat().st_size
    for what, want in (("the server's Content-Length", total), ("the job's file_size_bytes", expected)):
        if want is not None and size != want:
            part.unlink()
            raise DownloadError(f"Downloaded {size} bytes, but {what} is {want}; the partial file was removed.")
    part.replace(target)
    return target
