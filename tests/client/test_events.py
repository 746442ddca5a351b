"""
events() and wait() over the job's event stream (GET /job/{id}/events,
against the real server.
"""

import asyncio
import re

import httpx
import pytest

from tests.support.proxy import breaking_proxy

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# Enough steps to outlast SQLite's once-a-second read of watched jobs, so progress events come.
STEPS = {"width": 64, "height": 64, "num_frames": 17, "num_inference_steps": 200, "fps": 8}


def submitted_with_stream(client):
    job = client.generate("a stream of events", **STEPS)
    with httpx.stream("GET", f"{client.api_url}/job/{job.job_id}/events", params={"user_id": "alice"}, timeout=30) as answer:
        assert answer.status_code == 200
        assert answer.headers["Content-Type"].startswith("text/event-stream")
    return job


def test_events_follow_a_job_to_its_terminal_event_with_increasing_ids(client):
    job = submitted_with_stream(client)

    events = list(client.events(job.job_id))

    assert events[-1].type == "completed" and events[-1].job.status == "completed"
    assert all(not event.terminal for event in events[:-1])
    ids = [int(event.id) for event in events]
    assert ids == sorted(set(ids))
    steps = [event.current_step for event in events if event.type == "progress"]
    assert steps == sorted(steps) and steps[-1] <= 200
    # Resuming after an event repeats none up to it, and ends with the same terminal event.
    after = list(client.events(job.job_id, last_event_id=events[0].id))
    assert all(int(event.id) > ids[0] for event in after)
    assert (after[-1].type, after[-1].id) == (events[-1].type, events[-1].id)


def test_a_dropped_stream_is_resumed_with_last_event_id(client, server):
    from videogen_client import Client

    job = submitted_with_stream(client)
    first_event = re.compile(rb"(^|\n)id:")

    def cut(number: int, answered: bytes, data: bytes) -> int | None:
        # The first stream is cut just after its first event.
        whole = answered + data
        if b"text/event-stream" not in whole or number != 0:
            return None
        found = list(first_event.finditer(whole))
        if not found:
            return None
        end = whole.find(b"\n\n", found[0].end())
        return None if end < 0 else end + 2 - len(answered)

    with breaking_proxy(server.port, cut) as proxy, Client(proxy.url, user_id="alice", backoff=0.05) as flaky:
        events = list(flaky.events(job.job_id))
    assert proxy.cuts == 1
    assert re.search(rb"(?i)\nlast-event-id: \S+", proxy.requests[1])
    ids = [int(event.id) for event in events]
    assert ids == sorted(set(ids)) and events[-1].type == "completed"


def test_wait_follows_the_stream_and_reports_progress(client):
    job = submitted_with_stream(client)
    seen = []

    finished = client.wait(job.job_id, timeout=120, on_progress=seen.append)

    assert finished.status == "completed" and client._events_supported is not False
    assert all(event.id is not None for event in seen)


def test_the_async_client_waits_on_the_stream_with_a_coroutine_callback_and_iterates_its_events(client, url):
    from videogen_client import AsyncClient

    job = submitted_with_stream(client)
    seen = []

    async def note(event):
        seen.append(event)

    async def follow():
        async with AsyncClient(url, user_id="alice") as running:
            finished = await running.wait(job.job_id, timeout=120, on_progress=note)
            events = [event async for event in running.events(job.job_id)]
            return finished, events, running._events_supported

    finished, events, supported = asyncio.run(follow())

    assert finished.status == "completed" and supported is not False
    assert all(event.id is not None and not event.terminal for event in seen)
    assert events[-1].type == "completed" and events[-1].job.job_id == job.job_id
    ids = [int(event.id) for event in events]
    assert ids == sorted(set(ids))
