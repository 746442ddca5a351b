"""
Soak under chaos: N jobs through a real server and a real django-q2 cluster
while a chaos loop SIGKILLs busy worker processes at random (and once kills
the whole cluster and starts it again). Every job must end completed, failed
with a reason, or cancelled: none stuck, none run twice.

    .venv/bin/python bench/soak.py                      # 40 jobs, 12 kills
    .venv/bin/python bench/soak.py --jobs 100 --kills 30

The production shape: PostgreSQL in DATABASE_URL, Redis in REDIS_URL (its
own queue name is chosen here), and --s3 for an S3 server (moto's, started
here, as in the tests) instead of files on disk:

    DATABASE_URL=postgres://... REDIS_URL=redis://127.0.0.1:6379/N \
        .venv/bin/python bench/soak.py --s3 --jobs 40 --kills 12

Prints jobs submitted, completed, failed by class, stuck (must be 0),
duplicates (must be 0) and orphaned objects (stored files of no completed
job, or unfinished multipart uploads: must be 0), and exits non-zero if any
is not. Uses a throwaway data directory (SQLite), or the database in
DATABASE_URL.
"""

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FINISHED = {"completed", "failed", "cancelled"}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--kills", type=int, default=12, help="worker processes to SIGKILL (default 12)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--port", type=int, default=0, help="the server's port (default: a free one)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for every job to finish")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--s3", action="store_true", help="store into a bucket of a local S3 server (moto)")
    return parser.parse_args()


def request_json(url: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    for attempt in range(10):
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.load(response)
        except urllib.error.HTTPError as error:
            # The API's answer while the database refuses connections (a
            # shared server at max_connections): ask again, as a client would.
            if error.code != 503 or attempt == 9:
                raise
            time.sleep(1)


def children(pid: int) -> list[int]:
    try:
        return [int(child) for task in Path(f"/proc/{pid}/task").iterdir()
                for child in (task / "children").read_text().split()]
    except FileNotFoundError:
        return []


def busy_workers(cluster_pid: int) -> list[int]:
    """Worker processes of this cluster that are running a job, as the job table says."""
    from jobs.models import Status, VideoGenerationJob
    from jobs.recovery import parse_worker_name

    workers = {pid for sentinel in children(cluster_pid) for pid in children(sentinel)}
    running = VideoGenerationJob.objects.filter(status=Status.RUNNING).values_list("worker", flat=True)
    return [parsed[1] for parsed in map(parse_worker_name, running) if parsed and parsed[1] in workers]


class Service:
    def __init__(self, args, data_dir: Path, storage_env: dict[str, str]):
        self.args = args
        self.env = {
            **os.environ,
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
            # runserver serves each request in a new thread: persistent
            # connections would pile up on PostgreSQL until it refuses more.
            "VIDEOGEN_DB_CONN_MAX_AGE": "0",
            # Tasks prefetched by a killed cluster come back after this many seconds.
            "VIDEOGEN_QUEUE_RETRY": "20",
        }
        self.log = open(data_dir / "service.log", "a")
        self.log_path = data_dir / "service.log"
        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=self.env,
                       check=True)
        self.server = self.spawn("runserver", "--noreload", f"127.0.0.1:{args.port}")
        self.cluster = self.spawn("qcluster")

    def spawn(self, *command: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "manage.py", *command], cwd=ROOT, env=self.env, stdout=self.log,
                                stderr=subprocess.STDOUT, start_new_session=True)

    def kill_cluster(self) -> None:
        os.killpg(self.cluster.pid, signal.SIGKILL)
        self.cluster.wait()

    def restart_cluster(self) -> None:
        self.cluster = self.spawn("qcluster")

    def stop(self) -> None:
        for process in (self.server, self.cluster):
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        for process in (self.server, self.cluster):
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def chaos(service: Service, kills: int, done: threading.Event, rng: random.Random, record: Counter) -> None:
    cluster_killed = False
    while record["worker kills"] < kills and not done.is_set():
        time.sleep(rng.uniform(0.5, 3.0))
        if not cluster_killed and record["worker kills"] >= kills // 2:
            service.kill_cluster()
            record["cluster kills"] += 1
            time.sleep(2)
            service.restart_cluster()
            cluster_killed = True
            continue
        busy = busy_workers(service.cluster.pid)
        if busy:
            os.kill(rng.choice(busy), signal.SIGKILL)
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
    if not args.port:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            args.port = sock.getsockname()[1]
    rng = random.Random(args.seed)
    data_dir = Path(tempfile.mkdtemp(prefix="videogen-soak-"))
    with contextlib.ExitStack() as stack:
        bucket = None
        if args.s3:
            sys.path.insert(0, str(ROOT))
            from tests.s3 import new_bucket, running_s3_server

            bucket = new_bucket(stack.enter_context(running_s3_server(data_dir / "moto.log")))
        soak(args, rng, data_dir, bucket)


def soak(args, rng: random.Random, data_dir: Path, bucket) -> None:
    service = Service(args, data_dir, bucket.env if bucket is not None else {})
    # This process reads the job table (to find busy workers) with the service's settings.
    os.environ.update(service.env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "videogen.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    base = f"http://127.0.0.1:{args.port}/api/v1"
    record: Counter = Counter()
    done = threading.Event()
    started = time.monotonic()
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                request_json(f"{base}/health")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("the server did not start")
                time.sleep(0.3)
        job_ids = []
        for index in range(args.jobs):
            body = {
                "user_id": f"soak-{index % 5}", "prompt": f"soak job {index}", "seed": index,
                "width": rng.choice([64, 96, 128]), "height": rng.choice([64, 96]),
                "num_frames": rng.choice([5, 9, 13, 17]), "num_inference_steps": rng.choice([10, 30, 60, 100]),
            }
            job_ids.append(request_json(f"{base}/generate", body)["job_id"])
        chaos_thread = threading.Thread(target=chaos, args=(service, args.kills, done, rng, record), daemon=True)
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
        service.stop()

    log = service.log_path.read_text()
    completions = Counter(re.findall(r"job=([0-9a-f-]{36}) user_id=\S+ completed in", log))
    stored = stored_names(data_dir, bucket)
    videos = Counter(Path(name).name.split(".")[0].split("_")[0] for name in stored if name.startswith("videos/"))
    duplicates = sorted({job for job, count in completions.items() if count > 1}
                        | {job for job, count in videos.items() if count > 1})
    # An orphan is an object no job points at. Every job in the database
    # counts: with a DATABASE_URL that outlives runs, the reaper may finish an
    # earlier run's leftover jobs here too.
    from jobs.models import VideoGenerationJob

    pointed_at = {name for row in VideoGenerationJob.objects.values_list("video", "poster", "preview")
                  for name in row if name}
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
    shutil.rmtree(data_dir, ignore_errors=True)
    if stuck or duplicates or orphans or missing:
        sys.exit(1)


if __name__ == "__main__":
    main()
