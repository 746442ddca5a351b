"""
How the service scales on one machine, side by side in one run:

  throughput  jobs per minute with the tiny model at 1 and 2 worker processes
              (VIDEOGEN_DEVICES=cpu vs cpu,cpu, one torch thread each),
              alternating 1, 2, 1, 2 ... so that load from elsewhere on the
              box hits both alike. Goal: 2 workers >= 1.6x one.
  dispatch    submit -> started (the job claimed by its worker) with an idle,
              warm worker, p50 and p95 over --dispatch-jobs jobs, the ORM
              broker vs Redis, each at django-q2's poll interval as deployed
              (VIDEOGEN_QUEUE_POLL, 0.2 s). Goal: Redis p50 <= 50 ms.

    .venv/bin/python -m bench.scale
    DATABASE_URL=postgres://... REDIS_URL=redis://127.0.0.1:6379/N .venv/bin/python -m bench.scale --rounds 3

Throughput uses the broker of the environment (REDIS_URL, else the ORM);
dispatch measures Redis only when REDIS_URL is set. A throwaway SQLite
database unless DATABASE_URL is set; its own queue either way. Prints the
load average before and after, since other work on the box skews the figures.
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.common import ROOT, migrate, percentile, setup_django, start_qcluster, stop_process

# About 3 s of denoising on one thread: the model build and the encode are
# small beside it, as they are for a real model.
THROUGHPUT_JOB = {"width": 128, "height": 128, "num_frames": 17, "num_inference_steps": 40, "fps": 8}
# One step: the job is over quickly, so the worker is idle for the next.
DISPATCH_JOB = {"width": 64, "height": 64, "num_frames": 5, "num_inference_steps": 1, "fps": 8}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2, help="throughput rounds of each worker count (default 2)")
    parser.add_argument("--jobs", type=int, default=12, help="jobs per throughput round (default 12)")
    parser.add_argument("--dispatch-jobs", type=int, default=25, help="jobs per broker for dispatch (default 25)")
    parser.add_argument("--only", choices=["throughput", "dispatch"])
    # Internal: run the dispatch measurement in this process's broker and print JSON.
    parser.add_argument("--dispatch-child", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


def submit(index: int, job: dict):
    from jobs.models import VideoGenerationJob
    from jobs.services.lifecycle import job_enqueue

    row = VideoGenerationJob.objects.create(
        user_id=f"scale-{index % 5}", prompt=f"scale {index}", model_name="tiny-random", seed=index,
        guidance_scale=4.5, **job,
    )
    job_enqueue(row)
    return row


def wait_finished(job_ids, cluster: subprocess.Popen, log_path: Path, timeout: float = 600) -> None:
    from jobs.models import FINISHED, Status, VideoGenerationJob

    deadline = time.monotonic() + timeout
    while VideoGenerationJob.objects.filter(pk__in=job_ids, status__in=FINISHED).count() < len(job_ids):
        if cluster.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"jobs did not finish; see {log_path}")
        time.sleep(0.05)
    failed = VideoGenerationJob.objects.filter(pk__in=job_ids).exclude(status=Status.COMPLETED).count()
    if failed:
        raise SystemExit(f"{failed} jobs did not complete; see {log_path}")


class Cluster:
    def __init__(self, data_dir: Path, name: str, **env: str):
        self.log_path = data_dir / f"{name}.log"
        with open(self.log_path, "a") as log:
            self.process = start_qcluster(log, env)

    def stop(self) -> None:
        stop_process(self.process)


# A pure CPU-bound loop, the baseline for what the box itself gives two processes at this moment.
SPIN = "import time; start = time.monotonic(); sum(i * i for i in range(6_000_000)); print(time.monotonic() - start)"


def machine_parallelism() -> float:
    """How many times more loops per second two processes get than one, right now (2.0 on two idle cores)."""
    def run(count: int) -> float:
        spins = [subprocess.Popen([sys.executable, "-c", SPIN], stdout=subprocess.PIPE, text=True)
                 for _ in range(count)]
        return count / max(float(spin.communicate()[0]) for spin in spins)

    return run(2) / run(1)


def throughput_round(args, data_dir: Path, workers: int, offset: int) -> tuple[float, float]:
    """Jobs per minute of a warm cluster with this many workers, and the median seconds one job took in it."""
    devices = ",".join(["cpu"] * workers)
    cluster = Cluster(data_dir, f"throughput-{workers}", VIDEOGEN_DEVICES=devices, VIDEOGEN_TORCH_THREADS="1")
    try:
        # One job per worker first, so every worker has built its pipeline.
        warm = [submit(offset + n, THROUGHPUT_JOB).pk for n in range(workers)]
        wait_finished(warm, cluster.process, cluster.log_path)
        started = time.monotonic()
        job_ids = [submit(offset + workers + n, THROUGHPUT_JOB).pk for n in range(args.jobs)]
        wait_finished(job_ids, cluster.process, cluster.log_path)
        rate = args.jobs / (time.monotonic() - started) * 60
    finally:
        cluster.stop()
    # Each job's own run time, from the worker's log: if two workers make
    # each job slower, the cores were not free for both.
    seconds = [float(found) for found in re.findall(r"completed in ([\d.]+)s", cluster.log_path.read_text())]
    return rate, statistics.median(seconds[-args.jobs:])


def dispatch_child(args) -> None:
    """Submit -> started for jobs submitted one at a time to a warm, idle one-worker cluster."""
    setup_django(data_dir=None)
    from jobs.models import VideoGenerationJob

    data_dir = Path(os.environ["SCALE_DATA_DIR"])
    cluster = Cluster(data_dir, f"dispatch-{'redis' if os.environ.get('REDIS_URL') else 'orm'}",
                      VIDEOGEN_DEVICES="cpu", VIDEOGEN_TORCH_THREADS="1")
    latencies = []
    try:
        wait_finished([submit(0, DISPATCH_JOB).pk], cluster.process, cluster.log_path)
        for index in range(1, args.dispatch_jobs + 1):
            # Let the worker go back to waiting on the broker.
            time.sleep(0.5)
            submitted = time.time()
            job = submit(index, DISPATCH_JOB)
            wait_finished([job.pk], cluster.process, cluster.log_path)
            started_at = VideoGenerationJob.objects.values_list("started_at", flat=True).get(pk=job.pk)
            latencies.append((started_at.timestamp() - submitted) * 1000)
    finally:
        cluster.stop()
    print(json.dumps(latencies))


def dispatch(args, data_dir: Path) -> dict[str, list[float]]:
    brokers = {"ORM broker": {key: value for key, value in os.environ.items() if key != "REDIS_URL"}}
    if os.environ.get("REDIS_URL"):
        brokers["Redis"] = dict(os.environ)
    results = {}
    for broker, env in brokers.items():
        answer = subprocess.run(
            [sys.executable, "-m", "bench.scale", "--dispatch-child", "--dispatch-jobs", str(args.dispatch_jobs)],
            env={**env, "SCALE_DATA_DIR": str(data_dir)}, cwd=ROOT, capture_output=True, text=True,
        )
        if answer.returncode:
            raise SystemExit(f"{broker} dispatch failed:\n{answer.stderr[-3000:]}")
        results[broker] = json.loads(answer.stdout.strip().splitlines()[-1])
    return results


def main() -> int:
    args = parse_args()
    if args.dispatch_child:
        dispatch_child(args)
        return 0
    data_dir = setup_django(data_dir="videogen-scale-", VIDEOGEN_QUEUE_NAME=f"videogen-scale-{os.getpid()}",
                            VIDEOGEN_MAX_ACTIVE_JOBS_PER_USER="1000")
    from django.db import connection

    migrate()
    load_before = os.getloadavg()
    print(f"{os.cpu_count()} cores, load average {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}; "
          f"database {connection.vendor}, broker {'Redis' if os.environ.get('REDIS_URL') else 'ORM'}")
    ok = True
    if args.only != "dispatch":
        per_workers: dict[int, list[float]] = {1: [], 2: []}
        parallelism: list[float] = []
        job_seconds: dict[int, list[float]] = {1: [], 2: []}
        offset = 0
        for _ in range(args.rounds):
            parallelism.append(machine_parallelism())
            for workers in (1, 2):
                rate, seconds = throughput_round(args, data_dir, workers, offset)
                offset += 100
                per_workers[workers].append(rate)
                job_seconds[workers].append(seconds)
                print(f"  {workers} worker(s): {rate:.1f} jobs/min, {seconds:.2f} s a job", file=sys.stderr)
        one, two = (statistics.median(per_workers[n]) for n in (1, 2))
        print(f"throughput, {args.jobs} jobs of {THROUGHPUT_JOB} per round, {args.rounds} rounds each, alternating:")
        for workers in (1, 2):
            rates = " ".join(f"{rate:.1f}" for rate in per_workers[workers])
            print(f"  {workers} worker(s), 1 torch thread each: median {statistics.median(per_workers[workers]):.1f}"
                  f" jobs/min (rounds: {rates}); a job takes {statistics.median(job_seconds[workers]):.2f} s")
        print(f"  2 workers / 1 worker: {two / one:.2f}x (goal >= 1.6x)")
        print(f"  baseline, a CPU-bound loop in 2 processes / 1, before each round: "
              f"{' '.join(f'{ratio:.2f}x' for ratio in parallelism)} (2.00x on two idle cores)")
        ok = ok and two / one >= 1.6
    if args.only != "throughput":
        print(f"dispatch, submit -> started, idle warm worker, {args.dispatch_jobs} jobs each, "
              f"VIDEOGEN_QUEUE_POLL={os.environ.get('VIDEOGEN_QUEUE_POLL', '0.2')}:")
        for broker, latencies in dispatch(args, data_dir).items():
            p50, p95 = percentile(latencies, 0.5), percentile(latencies, 0.95)
            print(f"  {broker:<11} p50 {p50:6.1f} ms  p95 {p95:6.1f} ms  (min {min(latencies):.1f}, "
                  f"max {max(latencies):.1f})")
            if broker == "Redis":
                ok = ok and p50 <= 50
    load_after = os.getloadavg()
    print(f"load average after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    shutil.rmtree(data_dir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
