"""
The job event stream under load (docs/events.md): gunicorn as
`make run` starts it (videogen/gunicorn.py), SUBSCRIBERS streams open on
running jobs from a separate client process, and this process writing the
jobs' progress as a worker does (set_progress: the row, then the publish).

    .venv/bin/python -m bench.events                                   # SQLite: the once-a-second poll
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/videogen_events .venv/bin/python -m bench.events
    DATABASE_URL=... REDIS_URL=redis://127.0.0.1:6379/13 VIDEOGEN_QUEUE_NAME=videogen-events .venv/bin/python -m bench.events
    .venv/bin/python -m bench.events --preview-only                   # the live preview's cost per step

Prints:
- latency from a progress write's commit to each subscriber's reading the
  event: p50, p95, max;
- GET /job req/s with the subscribers connected against none, in the same
  run (alternating rounds, medians);
- the web processes' RSS per subscriber and their CPU while the
  subscribers sit idle, against none;
- `Prefer: wait=60` against polling every 0.5 s: requests per job and the
  time from the job's completion to the client's knowing;
- the live preview's cost per denoising step on the tiny models, as a
  share of the step's time (every step, and every VIDEOGEN_PREVIEW_EVERY).
"""

import argparse
import asyncio
import contextlib
import http.client
import multiprocessing
import os
import statistics
import sys
import threading
import time
from pathlib import Path

from bench.common import (
    bench_database, cpu_between, cpu_seconds, gunicorn, percentile, python_load, setup_django,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=100, help="running jobs the subscribers watch, evenly")
    parser.add_argument("--writes", type=int, default=10, help="progress writes per job")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between a job's writes (the worker's default)")
    parser.add_argument("--duration", type=float, default=5, help="seconds per GET /job measurement")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--idle", type=float, default=10, help="seconds of idle CPU measured")
    parser.add_argument("--wait-jobs", type=int, default=20, help="jobs for Prefer: wait against polling")
    parser.add_argument("--preview-steps", type=int, default=10)
    parser.add_argument("--preview-only", action="store_true")
    parser.add_argument("--no-preview", action="store_true")
    args = parser.parse_args()

    data_dir = setup_django(data_dir="videogen-bench-events-", quiet=True)
    if not args.preview_only:
        serve(args, data_dir)
    if not args.no_preview:
        preview_cost(args)


def serve(args, data_dir: Path) -> None:
    from django.db import connection

    print(f"database: {connection.vendor}; publishing: "
          f"{'Redis' if os.environ.get('REDIS_URL') else 'NOTIFY' if connection.vendor == 'postgresql' else 'none (poll)'}")
    with bench_database():
        jobs = running_jobs(args.jobs)
        poll_path = f"/api/v1/job/{jobs[0].id}?user_id=alice"
        connection.close()
        with gunicorn({}, data_dir / "gunicorn.log") as (port, group):
            measure(args, port, group, jobs, poll_path)
            prefer_wait_against_polling(args, port)


def running_jobs(count: int) -> list:
    from django.utils import timezone

    from jobs.models import Status, VideoGenerationJob

    now = timezone.now()
    rows = [
        VideoGenerationJob(user_id="alice", prompt=f"prompt {index}", model_name="tiny-random", num_frames=9, width=64,
                           height=64, num_inference_steps=200, guidance_scale=4.5, seed=index, status=Status.RUNNING,
                           status_log="pending,running", worker="bench", started_at=now, heartbeat_at=now)
        for index in range(count)
    ]
    VideoGenerationJob.objects.bulk_create(rows)
    return rows


def rss_kib(group: int) -> int:
    total = 0
    for status in Path("/proc").glob("[0-9]*/status"):
        with contextlib.suppress(OSError, ValueError):
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
            if os.getpgid(int(status.parent.name)) == group and "VmRSS" in fields:
                total += int(fields["VmRSS"].split()[0])
    return total


def measure(args, port: int, group: int, jobs: list, poll_path: str) -> None:
    from jobs.api.events import EPOCH, STEP

    def rate() -> float:
        return python_load(port, poll_path, {}, args.connections, args.duration)["rps"]

    def idle_cpu() -> float:
        before = cpu_seconds(group, None)["app"]
        time.sleep(args.idle)
        return cpu_between(before, cpu_seconds(group, None)["app"]) / args.idle

    rate()  # warm every process
    none_rates, with_rates = [rate()], []
    cpu_none = idle_cpu()
    rss_none = rss_kib(group)
    parent, child = multiprocessing.Pipe()
    watched = [str(jobs[index % len(jobs)].id) for index in range(args.subscribers)]
    process = multiprocessing.get_context("spawn").Process(target=subscribe, args=(child, port, watched))
    process.start()
    opened = parent.recv()
    print(f"{opened} of {args.subscribers} streams open")
    time.sleep(2)
    rss_with = rss_kib(group)
    cpu_with = idle_cpu()
    with_rates.append(rate())

    # The writes: each job's step, committed; the subscribers note when each event arrives.
    committed: dict[tuple[str, int], float] = {}
    for write in range(1, args.writes + 1):
        started = time.monotonic()
        for job in jobs:
            job.set_progress(write, current_step=write)
            committed[(str(job.id), 2 * EPOCH + write * STEP)] = time.time()
        time.sleep(max(0.0, args.interval - (time.monotonic() - started)))
    time.sleep(3)
    for _ in range(args.rounds - 1):
        with_rates.append(rate())
    parent.send("stop")
    received = parent.recv()
    process.join()
    for _ in range(args.rounds - 1):
        none_rates.append(rate())

    latencies = sorted(
        (at - committed[(job_id, event_id)]) * 1000 for job_id, event_id, at in received if (job_id, event_id) in committed
    )
    expected = args.subscribers * args.writes
    print(f"events: {len(latencies)} received of {expected} progress writes x subscribers "
          "(progress is coalesced: a subscriber may skip to the latest)")
    if latencies:
        print(f"latency commit -> subscriber ms: p50 {statistics.median(latencies):.0f}, "
              f"p95 {percentile(latencies, 0.95):.0f}, max {latencies[-1]:.0f}")
    none_rps, with_rps = statistics.median(none_rates), statistics.median(with_rates)
    print(f"GET /job req/s: none {none_rps:.0f} {[round(r) for r in none_rates]}, with {args.subscribers} streams "
          f"{with_rps:.0f} {[round(r) for r in with_rates]}: {with_rps / none_rps:.2f}x")
    print(f"web RSS: {rss_none / 1024:.0f} MiB without, {rss_with / 1024:.0f} MiB with: "
          f"{(rss_with - rss_none) / max(1, opened):.1f} KiB per subscriber")
    print(f"idle CPU of the web processes: {cpu_none * 100:.1f}% of a core without, {cpu_with * 100:.1f}% with")


def subscribe(pipe, port: int, job_ids: list[str]) -> None:
    """The client process: one asyncio connection per stream; reports (job, event id, when read)."""

    async def run():
        received: list[tuple[str, int, float]] = []
        stop = asyncio.Event()

        async def watch(job_id: str, opened: asyncio.Future):
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
                writer.write(f"GET /api/v1/job/{job_id}/events?user_id=alice HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                             "Accept: text/event-stream\r\n\r\n".encode())
                await writer.drain()
                head = await reader.readuntil(b"\r\n\r\n")
                opened.set_result(True if head.startswith(b"HTTP/1.1 200") else head[:200])
                event_id = None
                while not stop.is_set():
                    line = await reader.readline()
                    if not line:
                        return
                    if line.startswith(b"id: "):
                        event_id = int(line[4:])
                    elif line.startswith(b"data: ") and event_id is not None:
                        received.append((job_id, event_id, time.time()))
            except (OSError, asyncio.IncompleteReadError) as exc:
                if not opened.done():
                    opened.set_exception(exc)

        loop = asyncio.get_running_loop()
        tasks, opened = [], []
        for index, job_id in enumerate(job_ids):
            future = loop.create_future()
            opened.append(future)
            tasks.append(asyncio.create_task(watch(job_id, future)))
            if index % 100 == 99:
                await asyncio.gather(*opened[-100:], return_exceptions=True)
        results = await asyncio.gather(*opened, return_exceptions=True)
        failures = [result for result in results if result is not True]
        if failures:
            print(f"{len(failures)} streams did not open, e.g. {failures[0]!r}", file=sys.stderr)
        pipe.send(sum(1 for result in results if result is True))
        await loop.run_in_executor(None, pipe.recv)
        stop.set()
        for task in tasks:
            task.cancel()
        pipe.send(received)

    asyncio.run(run())


def prefer_wait_against_polling(args, port: int) -> None:
    import random

    from django.utils import timezone

    from jobs.models import Status, VideoGenerationJob

    def new_job():
        return VideoGenerationJob.objects.create(
            user_id="alice", prompt="p", model_name="tiny-random", num_frames=9, width=64, height=64,
            num_inference_steps=2, guidance_scale=4.5, seed=1, status=Status.RUNNING, status_log="pending,running",
            worker="bench", started_at=timezone.now(),
        )

    def client(job_id: str, mode: str, out: list) -> None:
        requests = 0
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while True:
            requests += 1
            headers = {"Prefer": "wait=60"} if mode == "wait" else {}
            connection.request("GET", f"/api/v1/job/{job_id}?user_id=alice", headers=headers)
            response = connection.getresponse()
            body = response.read()
            if response.getheader("Connection", "").lower() == "close":
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            if b'"status":"completed"' in body:
                out.append((time.time(), requests))
                return
            if mode == "poll":
                time.sleep(0.5)

    for mode in ("wait", "poll"):
        jobs = [new_job() for _ in range(args.wait_jobs)]
        results: dict[str, list] = {str(job.id): [] for job in jobs}
        threads = [threading.Thread(target=client, args=(job_id, mode, out)) for job_id, out in results.items()]
        for thread in threads:
            thread.start()
        completed_at = {}
        for job in sorted(jobs, key=lambda _: random.random()):
            time.sleep(random.uniform(0.05, 0.3))
            # Taken before the commit: the delay includes the transition's own write.
            completed_at[str(job.id)] = time.time()
            job.transition(Status.COMPLETED, from_={Status.RUNNING}, completed_at=timezone.now(), progress=100)
        for thread in threads:
            thread.join()
        delays = sorted((results[job_id][0][0] - at) * 1000 for job_id, at in completed_at.items())
        requests = [results[job_id][0][1] for job_id in completed_at]
        label = "Prefer: wait=60" if mode == "wait" else "polling every 0.5 s"
        print(f"{label}: {statistics.mean(requests):.1f} requests per job; completion -> client ms "
              f"p50 {statistics.median(delays):.0f}, max {delays[-1]:.0f}")


def preview_cost(args) -> None:
    """The live preview (projection, JPEG, storage write) against a denoising step, on the tiny models at their defaults."""
    from django.conf import settings
    from django.core.files.storage import default_storage

    from generation.pipelines import generate_frames
    from generation.params import GenerationParams
    from generation.preview import LatentPreview
    from generation.registry import get_spec
    from generation.runner import LivePreviewWriter

    class Job:
        id = "bench"
        user_id = "bench"
        model_name = "bench"
        worker = "bench"
        attempts = 1

    for name in ("tiny-random", "tiny-random-wan"):
        spec = get_spec(name)
        values = {**spec.defaults(), "num_inference_steps": args.preview_steps}
        params = GenerationParams(prompt="a red fox in the snow", negative_prompt="", seed=1,
                                  **{key: values[key] for key in ("width", "height", "num_frames", "num_inference_steps",
                                                                  "guidance_scale")})
        generate_frames(spec, params)  # loaded and warm
        steps: list[float] = []
        spent: list[float] = []
        last = [time.perf_counter()]

        def on_step(done, total):
            now = time.perf_counter()
            steps.append(now - last[0])
            last[0] = now

        writer = LivePreviewWriter(Job(), spec.pipeline_class, 1)

        def on_latents(step, latents):
            started = time.perf_counter()
            writer(step, latents)
            spent.append(time.perf_counter() - started)
            # The step's own time excludes the preview: on_step measures from here.
            last[0] += spent[-1]

        last[0] = time.perf_counter()
        generate_frames(spec, params, on_step=on_step, on_latents=on_latents)
        default_storage.delete(writer.name)
        step = statistics.median(steps[1:])
        preview = statistics.median(spent)
        every = settings.VIDEOGEN_PREVIEW_EVERY or 1
        print(f"{name} {params.width}x{params.height}, {params.num_frames} frames: step {step * 1000:.0f} ms, preview "
              f"{preview * 1000:.1f} ms ({LatentPreview(spec.pipeline_class).__class__.__name__}): "
              f"{preview / step * 100:.2f}% of a step when drawn every step, "
              f"{preview / step / every * 100:.2f}% every {every} steps (VIDEOGEN_PREVIEW_EVERY)")


if __name__ == "__main__":
    main()
