"""The blocking client. AsyncClient (async_client.py) has the same methods, awaited."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import httpx_sse

from videogen_client._base import (BaseClient, Call, Emit, Iterate, OnProgress, OnStream, Plan, Read, Sleep,
                                   Steps, T)
from videogen_client.types import Event, Job, ModelList, Video


class Client(BaseClient):
    """
    A videogen API client:

        with Client("http://127.0.0.1:8000", user_id="alice") as client:
            job = client.generate("a red fox in the snow", num_frames=16, wait=True)
            client.download(job.job_id, "fox.mp4")
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._http = httpx.Client(timeout=self.timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # --- The API: each method drives its plan (_base.py).

    def generate(self, prompt: str, *, image: Any = None, last_image: Any = None, extend_job_id: str | None = None,
                 wait: bool | float = False, on_progress: OnProgress | None = None, idempotency_key: str | None = None,
                 **params: Any) -> Job:
        """
        Submit a job; params are the request's other fields (num_frames=16,
        model=..., seed=...). wait=True returns the finished job (a number:
        at most that many seconds, then WaitTimeout), calling on_progress
        with each Event meanwhile.
        """
        plan = self._plan_generate(prompt, image, last_image, extend_job_id, wait, on_progress is not None,
                                   idempotency_key, params)
        return self._run(plan, on_progress)

    def job(self, job_id: str) -> Job:
        return self._run(self._plan_job(job_id))

    def wait(self, job_id: str, timeout: float | None = None, on_progress: OnProgress | None = None) -> Job:
        """
        The job once finished (completed, failed or cancelled: check
        job.status), following its event stream, or polling GET /job (with
        Prefer: wait) on a server without one. WaitTimeout after `timeout` seconds.
        """
        return self._run(self._plan_wait(job_id, timeout, on_progress is not None), on_progress)

    def events(self, job_id: str, last_event_id: str | None = None) -> Iterator[Event]:
        """
        The job's events as they happen (GET /job/{id}/events), ending with
        its terminal event. A dropped connection is resumed with
        Last-Event-ID, so no event is repeated or skipped.
        """
        yield from self._drive(Steps(self._plan_events(job_id, last_event_id)))

    def download(self, job_id: str, path: str | os.PathLike | None = None) -> Path:
        """
        Download the MP4 to `path` (default ./<job_id>.mp4; a directory: into
        it), through `<path>.part`: a broken download resumes with Range,
        also in a later call, and the file is renamed only once its size is
        verified. Returns the path.
        """
        return self._run(self._plan_download(job_id, path))

    def videos(self, page_size: int | None = None) -> Iterator[Video]:
        """Every completed video, newest first, fetching page after page."""
        yield from self._drive(Steps(self._plan_videos(page_size)))

    def cancel(self, job_id: str) -> Job:
        return self._run(self._plan_cancel(job_id))

    def delete(self, job_id: str) -> None:
        self._run(self._plan_delete(job_id))

    def models(self) -> ModelList:
        return self._run(self._plan_models())

    # --- Driving plans: the I/O.

    def _run(self, plan: Plan[T], on_progress: OnProgress | None = None) -> T:
        steps = Steps(plan)
        for event in self._drive(steps):
            on_progress(event)
        return steps.result

    def _drive(self, steps: Steps) -> Iterator[Any]:
        """Do each op of the plan, yielding what it emits."""
        with contextlib.ExitStack() as stream:
            for op in steps:
                if isinstance(op, Emit):
                    yield op.value
                    continue
                if not isinstance(op, OnStream):
                    stream.close()
                try:
                    steps.answer = self._do(op, stream)
                except httpx.TransportError as exc:
                    steps.error = exc

    def _do(self, op: Any, stream: contextlib.ExitStack) -> Any:
        if isinstance(op, Call) and op.stream:
            return stream.enter_context(self._http.stream(op.method, op.url, **op.send_kwargs()))
        if isinstance(op, Call):
            return self._http.request(op.method, op.url, **op.send_kwargs())
        if isinstance(op, Sleep):
            return time.sleep(op.seconds)
        if isinstance(op, Read):
            return op.response.read()
        if isinstance(op, Iterate):
            return httpx_sse.EventSource(op.response).iter_sse() if op.sse else op.response.iter_bytes()
        return next(op.items, None)
