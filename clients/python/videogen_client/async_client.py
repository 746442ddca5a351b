"""The asyncio client: Client's methods, awaited (events() and videos() are async iterators)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import httpx_sse

from videogen_client._base import (BaseClient, Call, Emit, Iterate, OnProgress, OnStream, Plan, Read, Sleep,
                                   Steps, T)
from videogen_client.types import Event, Job, ModelList, Video


class AsyncClient(BaseClient):
    """
    async with AsyncClient("http://127.0.0.1:8000", user_id="alice") as client:
        job = await client.generate("a red fox in the snow", wait=True)
        await client.download(job.job_id, "fox.mp4")

    on_progress may be a plain function or a coroutine function.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._http = httpx.AsyncClient(timeout=self.timeout)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.aclose()

    async def generate(self, prompt: str, *, image: Any = None, last_image: Any = None, extend_job_id: str | None = None,
                       wait: bool | float = False, on_progress: OnProgress | None = None,
                       idempotency_key: str | None = None, **params: Any) -> Job:
        plan = self._plan_generate(prompt, image, last_image, extend_job_id, wait, on_progress is not None,
                                   idempotency_key, params)
        return await self._run(plan, on_progress)

    async def job(self, job_id: str) -> Job:
        return await self._run(self._plan_job(job_id))

    async def wait(self, job_id: str, timeout: float | None = None, on_progress: OnProgress | None = None) -> Job:
        return await self._run(self._plan_wait(job_id, timeout, on_progress is not None), on_progress)

    async def events(self, job_id: str, last_event_id: str | None = None) -> AsyncIterator[Event]:
        async for event in self._drive(Steps(self._plan_events(job_id, last_event_id))):
            yield event

    async def download(self, job_id: str, path: str | os.PathLike | None = None) -> Path:
        return await self._run(self._plan_download(job_id, path))

    async def videos(self, page_size: int | None = None) -> AsyncIterator[Video]:
        async for video in self._drive(Steps(self._plan_videos(page_size))):
            yield video

    async def cancel(self, job_id: str) -> Job:
        return await self._run(self._plan_cancel(job_id))

    async def delete(self, job_id: str) -> None:
        await self._run(self._plan_delete(job_id))

    async def models(self) -> ModelList:
        return await self._run(self._plan_models())

    async def _run(self, plan: Plan[T], on_progress: OnProgress | None = None) -> T:
        steps = Steps(plan)
        async for event in self._drive(steps):
            result = on_progress(event)
            if asyncio.iscoroutine(result):
                await result
        return steps.result

    async def _drive(self, steps: Steps) -> AsyncIterator[Any]:
        async with contextlib.AsyncExitStack() as stream:
            for op in steps:
                if isinstance(op, Emit):
                    yield op.value
                    continue
                if not isinstance(op, OnStream):
                    await stream.aclose()
                try:
                    steps.answer = await self._do(op, stream)
                except httpx.TransportError as exc:
                    steps.error = exc

    async def _do(self, op: Any, stream: contextlib.AsyncExitStack) -> Any:
        if isinstance(op, Call) and op.stream:
            return await stream.enter_async_context(self._http.stream(op.method, op.url, **op.send_kwargs()))
        if isinstance(op, Call):
            return await self._http.request(op.method, op.url, **op.send_kwargs())
        if isinstance(op, Sleep):
            return await asyncio.sleep(op.seconds)
        if isinstance(op, Read):
            return await op.response.aread()
        if isinstance(op, Iterate):
            return httpx_sse.EventSource(op.response).aiter_sse() if op.sse else op.response.aiter_bytes()
        return await anext(op.items, None)
