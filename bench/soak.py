"""
Soak under chaos: N jobs through gunicorn (as `make run` starts it) and a
real django-q2 cluster while a chaos loop SIGKILLs busy worker processes at
random (and once kills the whole cluster and starts it again). Every job
must end completed, failed with a reason, or cancelled: none stuck, none run
twice.

    .venv/bin/python -m bench.soak                      # 40 jobs, 12 kills
    .venv/bin/python -m bench.soak --jobs 100 --kills 30

The production shape: PostgreSQL in DATABASE_URL, Redis in REDIS_URL (its
own queue name is chosen here), and --s3 for an S3 server (moto's, started
here, as in the tests) instead of files on disk:

    DATABASE_URL=postgres://... REDIS_URL=redis://127.0.0.1:6379/N \
        .venv/bin/python -m bench.soak --s3 --jobs 40 --kills 12

Prints jobs submitted, completed, failed by class, stuck (must be 0),
duplicates (must be 0) and orphaned objects (stored files of no completed
job, or unfinished multipart uploads: must be 0), and exits non-zero if any
is not. Uses a throwaway data directory (SQLite), or the database in
DATABASE_URL.
"""

import argparse
import contextlib
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from bench.common import (
    FINISHED, gunicorn, migrate, request_json, setup_django, start_qcluster, stop_process,
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--kills", type=int, default=12, help="worker processes to SIGKILL (default 12)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for every job to finish")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--s3", action="store_true", help="store into a bucket of a local S3 server (moto)")
    parser.add_argument("--kill-after-step", type=int, default=0,
                        help="kill only workers whose job is past this step (default 0: any busy worker, loading or not)")
    parser.add_argument("--checkpoint-seconds", default=None,
                        help="VIDEOGEN_CHECKPOINT_SECONDS for the workers (a number, or off; default: the setting's)")
    return parser.parse_args()


def children(pid: int) -> list[int]:
    try:
        return [int(child) for task in Path(f"/proc/{pid}/task").iterdir()
                for child in (task / "children").read_text().split()]
    except FileNotFoundError:
        return []


def busy_workers(cluster_pid: int, after_step: int = 0) -> list[int]:
    """Worker processes of this cluster that are running a job (past after_step), as the job table says."""
    from jobs.models import Status, VideoGenerationJob
    from jobs.services.recovery import parse_worker_name

    workers = {pid for sentinel in children(cluster_pid) for pid in children(sentinel)}
    running = VideoGenerationJob.objects.filter(status=Status.RUNNING, current_step__gte=after_step).values_list(
        "worker", flat=True
    )
    return [parsed[1] for parsed in map(parse_worker_name, running) if parsed and parsed[1] in workers]


def service_env(args, data_dir: Path, storage_env: dict[str, str]) -> dict[str, str]:
    """The settings of the server, the cluster and this process (which reads the job table)."""
    env = {
        **storage_env,
        # Its own queue, should REDIS_URL name a Redis that others use.
        "VIDEOGEN_QUEUE_NAME": f"videogen-soak-{os.getpid()}",
        "VIDEOGEN_DATA_DIR": str(data_dir),
        "VIDEOGEN_WORKERS": str(args.workers),
        "VIDEOGEN_TORCH_THREADS": "1",
        "VIDEOGEN_HEARTBEAT_INTERVAL": "1",
        "VIDEOGEN_HEARTBEAT_TIMEOUT": "10",
        "VIDEOGEN_MAX_ATTEMPTS": "3",
        "VIDEOGEN_MAX_ACTIVE_JOBS_PER_USER": str(args.jobs),
        "VIDEOGEN_QUEUE_POLL": "0.1",
        # Tasks prefetched by a killed cluster come back after this many seconds.
        "VIDEOGEN_QUEUE_RETRY": "20",
        # current_step close to the real step, for the work each kill loses.
        "VIDEOGEN_PROGRESS_INTERVAL": "0.1",
    }
    if args.checkpoint_seconds is not None:
        env["VIDEOGEN_CHECKPOINT_SECONDS"] = args.checkpoint_seconds
    return env


class Cluster:
    """The qcluster the chaos kills, in a session of its own; its output (each job's completion) into log_path."""

    def __init__(self, log_path: Path):
        self.log_path = log_path
        self.log = open(log_path, "a")
        self.process = start_qcluster(self.log)

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def restart(self) -> None:
        self.process = start_qcluster(self.log)

    def stop(self) -> None:
        stop_process(self.process)
        self.log.close()


def work_lost(worker_pids: list[int]) -> list[tuple[int, float]]:
    """
    For each job these workers run, the steps a kill now throws away (those
    done since its checkpoint, or all of them without one) and their
    seconds at the job's own step rate.
    """
    from jobs.models import Status, VideoGenerationJob
    from jobs.services.recovery import parse_worker_name

    lost = []
    rows = VideoGenerationJob.objects.filter(status=Status.RUNNING).values_list(
        "worker", "current_step", "checkpoint", "checkpoint_step", "first_step_at", "stepped_at"
    )
    for worker, step, checkpoint, checkpoint_step, first_step_at, stepped_at in rows:
        parsed = parse_worker_name(worker)
        if not parsed or parsed[1] not in worker_pids:
            continue
        steps = max(step - (checkpoint_step if checkpoint else 0), 0)
        per_step = 0.0
        if step >= 2 and first_step_at and stepped_at:
            per_step = (stepped_at - first_step_at).total_seconds() / (step - 1)
        lost.append((steps, steps * per_step))
    return lost


def chaos(cluster: Cluster, kills: int, kill_after_step: int, done: threading.Event, rng: random.Random,
          record: Counter, losses: list) -> None:
    cluster_killed = False
    while record["worker kills"] < kills and not done.is_set():
        time.sleep(rng.uniform(0.5, 3.0))
        if not cluster_killed and record["worker kills"] >= kills // 2:
            losses.extend(work_lost(busy_workers(cluster.process.pid)))
            cluster.kill()
            record["cluster kills"] += 1
            time.sleep(2)
            cluster.restart()
            cluster_killed = True
            continue
        busy = busy_workers(cluster.process.pid, kill_after_step)
        if busy:
            victim = rng.choice(busy)
            losses.extend(work_lost([victim]))
            os.kill(victim, signal.SIGKILL)
            record["worker kills"] += 1


def stored_names(data_dir: Path, bucket) -> list[str]:
    """Everything the service stored: the bucket's keys and unfinished uploads, or the files under its media root."""
    if bucket is not None:
        return bucket.keys() + [f"(unfinished upload) {key}" for key in bucket.multipart_uploads()]
    media = data_dir / "media"
    return sorted(str(path.relative_to(media)) for path in media.rglob("*") if path.is_file()) \
        if media.exists() else []


def main() -> None:
    args = parse_args()
    rng = random.Random(args.seed)
    data_dir = Path(tempfile.mkdtemp(prefix="videogen-soak-"))
    with contextlib.ExitStack() as stack:
        bucket = None
        if args.s3:
            from tests.support.s3 import new_bucket, running_s3_server

            bucket = new_bucket(stack.enter_context(running_s3_server(data_dir / "moto.log")))
        soak(args, rng, data_dir, bucket)


def soak(args, rng: random.Random, data_dir: Path, bucket) -> None:
    # This process reads the job table (to find busy workers) with the service's settings.
    setup_django(data_dir=None, **service_env(args, data_dir, bucket.env if bucket is not None else {}))
    migrate()
    record: Counter = Counter()
    losses: list[tuple[int, float]] = []
    done = threading.Event()
    started = time.monotonic()
    with gunicorn({}, data_dir / "gunicorn.log") as (port, _group):
        base = f"http://127.0.0.1:{port}/api/v1"
        cluster = Cluster(data_dir / "service.log")
        try:
            job_ids = []
            for index in range(args.jobs):
                body = {
                    "user_id": f"soak-{index % 5}", "prompt": f"soak job {index}", "seed": index,
                    "width": rng.choice([64, 96, 128]), "height": rng.choice([64, 96]),
                    "num_frames": rng.choice([5, 9, 13, 17]), "num_inference_steps": rng.choice([10, 30, 60, 100]),
                }
                job_ids.append(request_json(f"{base}/generate", body)["job_id"])
            chaos_thread = threading.Thread(
                target=chaos, args=(cluster, args.kills, args.kill_after_step, done, rng, record, losses), daemon=True)
            chaos_thread.start()
            states: dict[str, dict] = {}
            while time.monotonic() - started < args.timeout:
                states = {job_id: request_json(f"{base}/job/{job_id}") for job_id in job_ids}
                if all(state["status"] in FINISHED for state in states.values()):
                    break
                time.sleep(1)
            done.set()
            chaos_thread.join()
        finally:
            cluster.stop()

    log = cluster.log_path.read_text()
    completions = Counter(re.findall(r"job=([0-9a-f-]{36}) user_id=\S+ completed in", log))
    stored = stored_names(data_dir, bucket)
    videos = Counter(Path(name).name.split(".")[0].split("_")[0] for name in stored if name.startswith("videos/"))
    duplicates = sorted({job for job, count in completions.items() if count > 1}
                        | {job for job, count in videos.items() if count > 1})
    # An orphan is an object no job points at. Every job in the database
    # counts: with a DATABASE_URL that outlives runs, the reaper may finish an
    # earlier run's leftover jobs here too.
    from jobs.models import VideoGenerationJob

    pointed_at = {name for row in VideoGenerationJob.objects.values_list("video", "poster", "preview", "checkpoint")
                  for name in row if name}
    # Every job has finished: none may keep a checkpoint, named or not.
    checkpoints_left = sorted(name for name in stored if name.startswith("checkpoints/"))
    orphans = sorted(set(stored) - pointed_at)
    # Each of this run's completed jobs has its three, under the names a single run gives them.
    missing = sorted({f"{folder}/{job_id}.{ext}" for job_id, state in states.items() if state["status"] == "completed"
                      for folder, ext in [("videos", "mp4"), ("posters", "jpg"), ("previews", "webp")]} - set(stored))
    statuses = Counter(state["status"] for state in states.values())
    failed_by_class = Counter(state["error_code"] for state in states.values() if state["status"] == "failed")
    stuck = [job_id for job_id, state in states.items() if state["status"] not in FINISHED]
    attempts = Counter(state["attempts"] for state in states.values())

    print(f"jobs submitted: {args.jobs} ({args.workers} workers) in {time.monotonic() - started:.0f} s")
    print(f"chaos: {record['worker kills']} busy workers SIGKILLed, {record['cluster kills']} whole-cluster kill")
    print(f"completed: {statuses['completed']}")
    print(f"failed: {statuses['failed']} {dict(failed_by_class) or ''}")
    print(f"cancelled: {statuses['cancelled']}")
    print(f"attempts per job: {dict(sorted(attempts.items()))}")
    print(f"stuck: {len(stuck)} {[(job_id, states[job_id]['status'], states[job_id]['attempts']) for job_id in stuck[:5]]}")
    print(f"duplicates: {len(duplicates)} {duplicates[:5] or ''}")
    print(f"storage: {'S3 (moto)' if bucket is not None else 'files'}, {len(stored)} stored; "
          f"orphaned: {len(orphans)} {orphans[:5] or ''}; missing: {len(missing)} {missing[:5] or ''}")
    steps_lost = [steps for steps, _ in losses]
    seconds_lost = [seconds for _, seconds in losses]
    print(f"checkpoints: every {args.checkpoint_seconds or 'default (the setting)'} s; left after the run: "
          f"{len(checkpoints_left)} {checkpoints_left[:5] or ''}")
    if losses:
        print(f"work lost to kills ({len(losses)} running jobs killed): steps recomputed {sum(steps_lost)} in all, "
              f"per kill mean {sum(steps_lost) / len(losses):.1f} max {max(steps_lost)}; seconds per kill mean "
              f"{sum(seconds_lost) / len(losses):.2f} max {max(seconds_lost):.2f}")
    shutil.rmtree(data_dir, ignore_errors=True)
    if stuck or duplicates or orphans or missing or checkpoints_left:
        sys.exit(1)


if __name__ == "__main__":
    main()
