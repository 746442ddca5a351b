"""
Several hosts on one machine (tests/support/hosts.py): host A serves the API on
gunicorn, hosts B and C run one qcluster worker each, each in its own
directory with its own data dir and VIDEOGEN_WORKER_HOST, sharing only
PostgreSQL, Redis and an S3 server (moto, started here). Three scenarios,
each --rounds times:

  download  a job submitted to A runs on B and downloads from A (302 to the bucket)
  lost      B's whole cluster SIGKILLed mid-job: the job completes on C (attempt 2)
  stopped   B stopped for good (SIGTERM) with --waiting jobs queued: C runs them all

    DATABASE_URL=postgres://... REDIS_URL=redis://127.0.0.1:6379/N .venv/bin/python -m bench.hosts
    ... bench/hosts.py --rounds 3 --heartbeat-timeout 60

Prints, per scenario, the seconds each round took (for "lost": from the kill
to the job completed on C), and over all: jobs, completed, stuck, run twice,
orphaned objects, files written to a host's own disk. Exits non-zero unless
the last four are 0. Migrates the database in DATABASE_URL; uses its own queue.
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.common import FINISHED, migrate, setup_django
from tests.support.hosts import (
    FAST_RECOVERY, LONG_JOB, ApiHost, WorkerHost, completions, expected_objects, worker_env,
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each scenario (default 3)")
    parser.add_argument("--waiting", type=int, default=4, help="jobs queued when B stops for good (default 4)")
    parser.add_argument("--heartbeat-timeout", type=float,
                        default=float(FAST_RECOVERY["VIDEOGEN_HEARTBEAT_TIMEOUT"]),
                        help="VIDEOGEN_HEARTBEAT_TIMEOUT on the worker hosts (default 10; production's is 60)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds a round may take")
    return parser.parse_args()


class Bench:
    def __init__(self, args, root: Path, shared: dict[str, str], bucket):
        self.args = args
        self.root = root
        self.shared = shared
        self.bucket = bucket
        self.hosts: list = []
        self.job_ids: list[str] = []
        self.a = self.host(ApiHost, "host-a").start()

    def host(self, kind, name: str):
        extra = worker_env(VIDEOGEN_HEARTBEAT_TIMEOUT=str(self.args.heartbeat_timeout)) if kind is WorkerHost else {}
        host = kind(name, self.root / f"{name}-{len(self.hosts)}", self.shared, **extra)
        self.hosts.append(host)
        return host

    def submit(self, job: dict, index: int) -> str:
        job_id = self.a.submit(user_id=f"hosts-{index % 5}", prompt=f"hosts bench {index}", seed=index, **job)
        self.job_ids.append(job_id)
        return job_id

    def row(self, job_id: str):
        from jobs.models import VideoGenerationJob

        return VideoGenerationJob.objects.get(pk=job_id)

    def wait(self, condition, what: str):
        deadline = time.monotonic() + self.args.timeout
        while not (result := condition()):
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {host.name}\n{host.log[-2000:]}" for host in self.hosts)
                raise SystemExit(f"timed out waiting for {what}\n{logs}")
            time.sleep(0.1)
        return result

    def finished(self, job_ids) -> bool:
        return all(self.row(job_id).status in FINISHED for job_id in job_ids)

    def running_on(self, job_id: str, host: str) -> bool:
        row = self.row(job_id)
        return row.status == "running" and row.current_step >= 2 and row.worker.startswith(f"{host}:")

    def download(self, index: int) -> float:
        import requests

        from tests.support.jobs import FAST_JOB

        b = self.host(WorkerHost, "host-b").start()
        started = time.monotonic()
        job_id = self.submit(FAST_JOB, index)
        self.wait(lambda: self.finished([job_id]), "the job on B")
        status, headers, _ = self.a.request("GET", f"/api/v1/download/{job_id}?user_id=hosts-{index % 5}")
        video = requests.get(headers["Location"], timeout=30) if status == 302 else None
        elapsed = time.monotonic() - started
        b.stop()
        row = self.row(job_id)
        if not (row.worker.startswith("host-b:") and video is not None and video.status_code == 200
                and len(video.content) == row.file_size_bytes):
            raise SystemExit(f"download round {index}: {row.status} on {row.worker!r}, download answered {status}")
        return elapsed

    def lost(self, index: int) -> float:
        b = self.host(WorkerHost, "host-b").start()
        job_id = self.submit(LONG_JOB, index)
        self.wait(lambda: self.running_on(job_id, "host-b"), "the job to run on B")
        c = self.host(WorkerHost, "host-c").start()
        b.lose()
        lost_at = time.monotonic()
        self.wait(lambda: self.finished([job_id]), "the lost job on C")
        elapsed = time.monotonic() - lost_at
        c.stop()
        row = self.row(job_id)
        if (row.status, row.attempts, row.worker.split(":")[0]) != ("completed", 2, "host-c"):
            raise SystemExit(f"lost round {index}: {row.status}, attempt {row.attempts} on {row.worker!r}")
        return elapsed

    def stopped(self, index: int) -> float:
        b = self.host(WorkerHost, "host-b").start()
        job_ids = [self.submit(LONG_JOB, index * 100 + n) for n in range(self.args.waiting)]
        self.wait(lambda: any(self.running_on(job_id, "host-b") for job_id in job_ids), "a job to run on B")
        b.stop()
        stopped_at = time.monotonic()
        c = self.host(WorkerHost, "host-c").start()
        self.wait(lambda: self.finished(job_ids), "the waiting jobs on C")
        elapsed = time.monotonic() - stopped_at
        c.stop()
        on_c = sum(self.row(job_id).worker.startswith("host-c:") for job_id in job_ids)
        if on_c != len(job_ids):
            raise SystemExit(f"stopped round {index}: {on_c} of {len(job_ids)} jobs ran on C")
        return elapsed


def main() -> int:
    args = parse_args()
    if not os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")) \
            or not os.environ.get("REDIS_URL"):
        raise SystemExit("set DATABASE_URL (PostgreSQL) and REDIS_URL: the hosts share them")
    root = Path(tempfile.mkdtemp(prefix="videogen-hosts-"))
    setup_django(data_dir=None, VIDEOGEN_QUEUE_NAME=f"videogen-hosts-{os.getpid()}",
                 VIDEOGEN_MAX_ACTIVE_JOBS_PER_USER="1000")
    from tests.support.s3 import new_bucket, running_s3_server

    migrate()
    figures: dict[str, list[float]] = {"download": [], "lost": [], "stopped": []}
    with running_s3_server(root / "moto.log") as server:
        bucket = new_bucket(server)
        shared = {
            "DATABASE_URL": os.environ["DATABASE_URL"],
            "REDIS_URL": os.environ["REDIS_URL"],
            "VIDEOGEN_QUEUE_NAME": os.environ["VIDEOGEN_QUEUE_NAME"],
            "VIDEOGEN_MAX_ACTIVE_JOBS_PER_USER": "1000",
            "VIDEOGEN_SECRET_KEY": "the-fleet-shares-this-secret-key",
            **bucket.env,
        }
        bench = Bench(args, root, shared, bucket)
        try:
            for index in range(args.rounds):
                for scenario, seconds in figures.items():
                    seconds.append(getattr(bench, scenario)(len(bench.job_ids)))
                    print(f"{scenario} round {index + 1}: {seconds[-1]:.1f} s", file=sys.stderr)
        finally:
            for host in bench.hosts:
                host.stop()
        rows = {job_id: bench.row(job_id) for job_id in bench.job_ids}
        runs = completions(*bench.hosts)
        run_twice = [job_id for job_id in rows if runs[job_id] > 1]
        stuck = [job_id for job_id, row in rows.items() if row.status not in FINISHED]
        completed = [job_id for job_id, row in rows.items() if row.status == "completed"]
        keys = set(bucket.keys())
        orphans = sorted(keys - set(expected_objects(completed))) + bucket.multipart_uploads()
        missing = sorted(set(expected_objects(completed)) - keys)
        local_files = [f"{host.name}: {name}" for host in bench.hosts for name in host.files()]

    print(f"3 hosts (API on gunicorn, 2 one-worker qclusters), PostgreSQL + Redis + S3 (moto), "
          f"VIDEOGEN_HEARTBEAT_TIMEOUT={args.heartbeat_timeout:g}, {args.rounds} rounds")
    print(f"{'scenario':<10}{'rounds':>7}{'median s':>10}{'max s':>8}")
    for scenario, seconds in figures.items():
        print(f"{scenario:<10}{len(seconds):>7}{statistics.median(seconds):>10.1f}{max(seconds):>8.1f}")
    print(f"jobs: {len(rows)}, completed: {len(completed)}, stuck: {len(stuck)}, run twice: {len(run_twice)}, "
          f"orphaned objects: {len(orphans)} {orphans[:3] or ''}, missing objects: {len(missing)}, "
          f"files on a host's own disk: {len(local_files)} {local_files[:3] or ''}")
    shutil.rmtree(root, ignore_errors=True)
    return 0 if not (stuck or run_twice or orphans or missing or local_files) and len(completed) == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
