"""
What the API answers, as dataclasses. Their fields follow the served OpenAPI
schema's components (Job: JobStatus, Video: VideoInfo, Model: ModelInfo);
tests/client/test_schema.py checks names and types against /api/v1/schema.
Fields a newer server adds are ignored, so an old client keeps working.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import typing
from typing import Any, TypeVar

T = TypeVar("T")

PENDING, RUNNING, COMPLETED, FAILED, CANCELLED = "pending", "running", "completed", "failed", "cancelled"
FINISHED = frozenset({COMPLETED, FAILED, CANCELLED})


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _convert(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    if datetime.datetime in typing.get_args(hint) or hint is datetime.datetime:
        # Python 3.10's fromisoformat() does not take a trailing Z.
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")) if isinstance(value, str) else value
    return value


def _from_dict(cls: type[T], data: dict[str, Any]) -> T:
    hints = _hints(cls)
    values = {field.name: _convert(hints[field.name], data.get(field.name)) for field in dataclasses.fields(cls)}
    return cls(**values)


@dataclasses.dataclass(frozen=True)
class Job:
    """A job as GET /job/{id} shows it (a submit's and a cancel's answer have the same fields, less the queue's)."""

    job_id: str
    status: str
    message: str
    result: str | None
    user_id: str
    progress: int
    current_step: int
    error_message: str
    error_code: str
    prompt: str
    negative_prompt: str
    model: str
    fps: int
    num_frames: int
    width: int
    height: int
    num_inference_steps: int
    guidance_scale: float
    seed: int | None
    attempts: int
    submitted_at: datetime.datetime
    created_at: datetime.datetime
    started_at: datetime.datetime | None
    completed_at: datetime.datetime | None
    video_url: str | None
    poster_url: str | None
    preview_url: str | None
    file_size_bytes: int | None
    video_duration_seconds: float | None
    run_info: Any
    webhook_url: str | None
    webhook_events: list[str]
    expires_at: datetime.datetime | None
    expired_at: datetime.datetime | None
    mode: str
    image_url: str | None
    last_image_url: str | None
    image_fit: str
    extend_job_id: str | None
    start_deadline_at: datetime.datetime | None
    priority: str
    queue_position: int | None
    estimated_start_at: datetime.datetime | None
    estimated_completion_at: datetime.datetime | None
    live_preview_url: str | None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        return _from_dict(cls, data)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def succeeded(self) -> bool:
        return self.status == COMPLETED


@dataclasses.dataclass(frozen=True)
class Video:
    """One completed video, as GET /videos lists it."""

    job_id: str
    user_id: str
    filename: str
    file_size: int
    created_at: datetime.datetime
    status: str
    completed_at: datetime.datetime | None
    video_url: str | None
    poster_url: str | None
    preview_url: str | None
    prompt: str
    model: str
    fps: int
    num_frames: int
    width: int
    height: int
    seed: int | None
    video_duration_seconds: float | None
    expires_at: datetime.datetime | None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Video:
        return _from_dict(cls, data)


@dataclasses.dataclass(frozen=True)
class Model:
    """A model the server serves, as GET /models lists it: build forms from its defaults and bounds."""

    name: str
    description: str
    pipeline: str
    defaults: dict[str, float]
    bounds: dict[str, dict[str, float]]
    modes: list[str]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Model:
        return _from_dict(cls, data)


class ModelList(list):
    """models(): the served models, and `.default`, the one a request that names none gets."""

    def __init__(self, models: list[Model], default: str):
        super().__init__(models)
        self.default = default


# The event names of GET /job/{id}/events; the last three end the stream.
TERMINAL_EVENTS = frozenset({COMPLETED, FAILED, CANCELLED})
EVENT_TYPES = frozenset({"status", "progress", "queue", *TERMINAL_EVENTS})


@dataclasses.dataclass(frozen=True)
class Event:
    """
    One event of a job's stream: `type` (status, progress, queue, completed,
    failed or cancelled), its `id`, and `data` as sent. `job` is the job for
    status and the terminal events; the other fields are filled from what
    the event carries.
    """

    type: str
    id: str | None
    data: dict[str, Any]

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL_EVENTS

    @property
    def job(self) -> Job | None:
        return Job.from_dict(self.data) if self.type == "status" or self.terminal else None

    @property
    def status(self) -> str | None:
        return self.data.get("status")

    @property
    def progress(self) -> int | None:
        return self.data.get("progress")

    @property
    def current_step(self) -> int | None:
        return self.data.get("current_step")

    @property
    def total_steps(self) -> int | None:
        return self.data.get("total_steps", self.data.get("num_inference_steps"))

    @property
    def queue_position(self) -> int | None:
        return self.data.get("queue_position")

    @property
    def live_preview_url(self) -> str | None:
        return self.data.get("live_preview_url")
