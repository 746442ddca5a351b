"""
What a checkpoint costs: for each tiny model and mode, the
time to serialize the denoising state at a step boundary, the time to
store it (jobs.services.files.put_replacing: a temporary file renamed over
the last, on local disk here), its bytes, and the share of the job's time
that saving costs at the default interval (60 s) and at 1 s. Against a
baseline run alongside: the same job with no checkpoints, and with a
checkpoint after every step (the cost the interval bounds).

    .venv/bin/python -m bench.resume
    .venv/bin/python -m bench.resume --steps 20 --frames 17 --size 128

The share at an interval is (serialize + store) / max(interval, one step's
time): at most one save per interval, and never more than one per step.
The soak with kills (steps recomputed with checkpoints and without) is
bench/soak.py --checkpoint-seconds.

    .venv/bin/python -m bench.resume --preemption
    .venv/bin/python -m bench.resume --preemption --settings off,10,2 --high-jobs 6 --low-jobs 12

--preemption measures instead how long a high-priority job waits for a
worker while the only one is busy with low-priority jobs: a real
one-worker qcluster (throwaway SQLite, default heartbeat and reaper
intervals) is kept busy by a backlog of low jobs (unless --low-jobs says,
enough to outlast the high jobs, from one low job timed first: a fixed
count drained before the last high job on a quiet box), and a high job is
submitted every --high-every seconds. For each VIDEOGEN_PREEMPT_AFTER
setting (off, the baseline, first): the high jobs' wait from submit to
start (p50, p95, max), the low jobs' preemptions, their mean time from
submit to completion and the last one's end (the extra time preemption
costs them), against the baseline's.
"""

import argparse
import math
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

from bench.common import (
    JOB, clear_jobs, migrate, setup_django, start_qcluster, stop_process, submit, wait_finished, warm_up,
)

CASES = [
    ("tiny-random", "text-to-video"),
    ("tiny-random-i2v", "image-to-video"),
    ("tiny-random-wan", "text-to-video"),
    ("tiny-random-wan-i2v", "image-to-video"),
    ("tiny-random-wan-flf2v", "first-last-frame"),
    ("tiny-random-wan-ti2v", "text-to-video"),
    ("tiny-random-wan-ti2v", "image-to-video"),
]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--size", type=int, default=128, help="width and height (a multiple of 32)")
    parser.add_argument("--repeats", type=int, default=5, help="saves timed per model (median)")
    parser.add_argument("--preemption", action="store_true", help="measure preemption latency instead")
    parser.add_argument("--settings", default="off,10,2", help="--preemption: VIDEOGEN_PREEMPT_AFTER values, off first")
    parser.add_argument("--high-jobs", type=int, default=6, help="--preemption: high jobs per setting")
    parser.add_argument("--high-every", type=float, default=15.0, help="--preemption: seconds between high jobs")
    parser.add_argument("--low-steps", type=int, default=200, help="--preemption: steps of each low job")
    parser.add_argument("--low-frames", type=int, default=33, help="--preemption: frames of each low job")
    parser.add_argument("--low-jobs", type=int, default=0,
                        help="--preemption: the backlog of low jobs (default: enough to outlast the high jobs, "
                             "from one low job timed first)")
    return parser.parse_args()


def bench_preemption(args) -> None:
    setup_django(data_dir="videogen-resume-", VIDEOGEN_QUEUE_NAME=f"videogen-resume-{os.getpid()}")
    migrate()
    from jobs.models import Priority, VideoGenerationJob

    low_job = {"width": 256, "height": 256, "num_frames": args.low_frames, "num_inference_steps": args.low_steps}
    baseline = None
    with tempfile.TemporaryDirectory() as logs:
        for setting in args.settings.split(","):
            with open(Path(logs) / f"q-{setting}.log", "w") as log:
                cluster = start_qcluster(log, {"VIDEOGEN_WORKERS": "1", "VIDEOGEN_QUEUE_POLL": "0.05",
                                               "VIDEOGEN_PREEMPT_AFTER": setting, "VIDEOGEN_REAPER_INTERVAL": "30"})
                try:
                    warm_up(cluster)
                    if not args.low_jobs:
                        # A backlog that keeps the worker busy past the last high job, on this box today.
                        timed = submit("low", priority=Priority.LOW, **low_job)
                        wait_finished(cluster)
                        timed.refresh_from_db()
                        seconds = (timed.completed_at - timed.started_at).total_seconds()
                        args.low_jobs = math.ceil(1.5 * args.high_jobs * args.high_every / seconds) + 1
                        print(f"a low job timed alone: {seconds:.1f} s")
                    clear_jobs()
                    lows = [submit("low", priority=Priority.LOW, **low_job) for _ in range(args.low_jobs)]
                    while not VideoGenerationJob.objects.filter(pk=lows[0].pk, started_at__isnull=False).exists():
                        time.sleep(0.05)
                    began, highs = time.monotonic(), []
                    # The same arrival times for every setting, at random points of the low jobs.
                    rng = random.Random(7)
                    for number in range(args.high_jobs):
                        due = began + number * args.high_every + rng.uniform(0, args.high_every / 2)
                        time.sleep(max(0.0, due - time.monotonic()))
                        highs.append(submit("high", priority=Priority.HIGH))
                    wait_finished(cluster, timeout=3600)
                finally:
                    stop_process(cluster)
            jobs = {job.pk: job for job in VideoGenerationJob.objects.all()}
            waits = sorted((jobs[job.pk].started_at - jobs[job.pk].submitted_at).total_seconds() for job in highs)
            low_done = [jobs[job.pk] for job in lows]
            failed = [job for job in jobs.values() if job.status != "completed"]
            if failed:
                raise SystemExit(f"{len(failed)} jobs did not complete: {failed[0].error_message}")
            low_mean = statistics.mean((job.completed_at - job.submitted_at).total_seconds() for job in low_done)
            first = min(job.submitted_at for job in jobs.values())
            last_end = (max(job.completed_at for job in jobs.values()) - first).total_seconds()
            preemptions = sum(job.preemptions for job in low_done)
            if baseline is None:
                baseline = (low_mean, last_end)
                print(f"one worker; {args.low_jobs} low jobs of {args.low_steps} steps, {args.low_frames} frames at "
                      f"256x256 (tiny-random, CPU); {args.high_jobs} high jobs of {JOB['num_inference_steps']} steps, "
                      f"one every {args.high_every:g} s; heartbeat and reaper at their defaults")
                print(f"{'PREEMPT_AFTER':>13} {'high wait p50':>13} {'p95':>6} {'max':>6} {'preemptions':>11} "
                      f"{'low submit-to-end':>17} {'ratio':>6} {'last end s':>10} {'ratio':>6}")
            print(f"{setting:>13} {statistics.median(waits):>13.1f} {waits[math.ceil(0.95 * len(waits)) - 1]:>6.1f} "
                  f"{waits[-1]:>6.1f} {preemptions:>11} {low_mean:>17.1f} {low_mean / baseline[0]:>6.2f} "
                  f"{last_end:>10.1f} {last_end / baseline[1]:>6.2f}")


def main() -> None:
    args = parse_args()
    if args.preemption:
        return bench_preemption(args)
    setup_django()
    import numpy as np
    import torch
    from django.core.files.storage import FileSystemStorage
    from PIL import Image

    from generation.params import FIRST_LAST_FRAME, TEXT_TO_VIDEO, GenerationParams
    from generation.pipelines import Cancelled, generate_frames, release_pipelines
    from generation.registry import get_spec
    from jobs.services.files import put_replacing

    torch.set_num_threads(1)
    params = GenerationParams(
        prompt="a lighthouse in a storm", negative_prompt="", width=args.size, height=args.size,
        num_frames=args.frames, num_inference_steps=args.steps, guidance_scale=5.0, seed=3,
    )
    rng = np.random.default_rng(0)

    def picture() -> Image.Image:
        return Image.fromarray(rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8))

    storage = FileSystemStorage(location=tempfile.mkdtemp(prefix="videogen-resume-bench-"))
    print(f"{args.steps} steps, {args.frames} frames at {args.size}x{args.size}, CPU, torch threads 1")
    header = (f"{'model':<22} {'mode':<17} {'KiB/save':>9} {'serialize ms':>12} {'store ms':>9} "
              f"{'step ms':>8} {'job s':>7} {'every step s':>12} {'share@60s':>10} {'share@1s':>9}")
    print(header)
    for name, mode in CASES:
        release_pipelines()
        spec = get_spec(name)
        given = {}
        if mode != TEXT_TO_VIDEO:
            given["image"] = picture()
        if mode == FIRST_LAST_FRAME:
            given["last_image"] = picture()
        generate_frames(spec, params, **given)  # load and warm up
        began = time.perf_counter()
        generate_frames(spec, params, **given)
        plain = time.perf_counter() - began
        saves = []
        began = time.perf_counter()
        generate_frames(spec, params, **given, checkpoint_every=0.0, on_checkpoint=lambda step, data: saves.append(data))
        every_step = time.perf_counter() - began
        try:
            generate_frames(spec, params, **given, on_step=lambda step, total: step < args.steps // 2)
        except Cancelled as stop:
            checkpoint = stop.checkpoint
        serialize, store = [], []
        for _ in range(args.repeats):
            began = time.perf_counter()
            data = checkpoint()
            serialize.append(time.perf_counter() - began)
            began = time.perf_counter()
            put_replacing(f"checkpoints/{name}.pt", data, storage)
            store.append(time.perf_counter() - began)
        cost = statistics.median(serialize) + statistics.median(store)
        step = plain / args.steps
        print(
            f"{name:<22} {mode:<17} {len(data) / 1024:>9.1f} {statistics.median(serialize) * 1000:>12.2f} "
            f"{statistics.median(store) * 1000:>9.2f} {step * 1000:>8.1f} {plain:>7.2f} {every_step:>12.2f} "
            f"{cost / max(60.0, step):>9.3%} {cost / max(1.0, step):>9.2%}"
        )
        assert len(saves) == args.steps - 1


if __name__ == "__main__":
    main()
