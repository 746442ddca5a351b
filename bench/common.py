"""
What the benchmarks share: Django on a throwaway data directory, a bench
database, the processes a bench starts (gunicorn as `make run` starts it,
qclusters), jobs, HTTP load and the CPU it cost, percentiles.

Every script runs from the checkout's root as `.venv/bin/python -m bench.X`
(or `.venv/bin/python -m bench.X`) and imports this module as bench.common.
Only the standard library is imported at the top: bench/gpu.py runs where
Django is not installed, and the rest is imported once Django is set up.
"""

import contextlib
import http.client
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FINISHED = {"completed", "failed", "cancelled"}


# --- Django and the database ---------------------------------------------------------


def setup_django(*, data_dir: str | None = "videogen-bench-", quiet: bool = False, **env: str) -> Path | None:
    """
    Django in this process, its settings read from the environment plus env
    (which the processes it starts inherit). data_dir: a throwaway data
    directory (SQLite, media, static) with this prefix, made
    VIDEOGEN_DATA_DIR and returned, so that a bench never writes into the
    real one; None keeps the environment's. quiet: log warnings only, unless
    VIDEOGEN_LOG_LEVEL says otherwise (a bench that reads a worker's log
    lines must not be quiet).
    """
    scratch = None
    if data_dir is not None:
        scratch = Path(tempfile.mkdtemp(prefix=data_dir))
        os.environ["VIDEOGEN_DATA_DIR"] = str(scratch)
    os.environ.update(env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "videogen.settings")
    if quiet:
        os.environ.setdefault("VIDEOGEN_LOG_LEVEL", "WARNING")
    import django

    django.setup()
    return scratch


def migrate() -> None:
    from django.core.management import call_command

    call_command("migrate", "--noinput", verbosity=0)


@contextlib.contextmanager
def bench_database(name: str | None = None, *, serialize: bool = True) -> Iterator[None]:
    """
    Django's test database for the configured one (a temporary SQLite file,
    or `test_<name>` on PostgreSQL; `name` instead if given), migrated,
    made this process's connection, and dropped on exit.
    """
    from django.db import connection

    if name:
        connection.settings_dict.setdefault("TEST", {})["NAME"] = name
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=serialize)
    try:
        yield
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)


def database_url() -> str:
    """A DATABASE_URL that points a child process at this process's database (the bench database too)."""
    from tests.support.cluster import test_database_url

    return test_database_url()


# --- jobs --------------------------------------------------------------------------------

# A small job of the tiny model: seconds on a CPU.
JOB = {"fps": 8, "num_frames": 9, "width": 128, "height": 128, "num_inference_steps": 8, "guidance_scale": 4.5}


def submit(user_id: str, priority=None, **fields):
    """A job submitted as the API submits it (job_create: the row, then the enqueue), JOB's unless fields say."""
    from generation.params import GenerationParams
    from jobs.services.lifecycle import job_create
    from jobs.models import Priority

    params = GenerationParams(prompt="a fox in the snow", negative_prompt="", seed=None, model_name="tiny-random",
                              **{**JOB, **fields})
    job, _ = job_create(user_id=user_id, params=params, priority=priority or Priority.NORMAL)
    return job


def clear_jobs() -> None:
    from jobs.scheduling.estimates import forget_snapshots
    from jobs.models import VideoGenerationJob

    VideoGenerationJob.objects.all().delete()
    forget_snapshots()


def wait_finished(cluster: subprocess.Popen, timeout: float = 900) -> None:
    """Until no job is active; stop the bench if the cluster exits or time runs out."""
    from jobs.models import ACTIVE, VideoGenerationJob

    deadline = time.monotonic() + timeout
    while VideoGenerationJob.objects.filter(status__in=ACTIVE).exists():
        if cluster.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the cluster stopped or the jobs did not finish; see its log")
        time.sleep(0.05)


def warm_up(cluster: subprocess.Popen, count: int = 1) -> None:
    """count jobs run to the end, so the worker has built its pipeline."""
    for _ in range(count):
        submit("warm-up")
    wait_finished(cluster)


# One user's jobs for the API benches (bench/api.py, handler.py, statements.py, events.py).
def seed_jobs(jobs: int) -> tuple[dict[str, str], str]:
    """
    2 x jobs jobs, alice's and bob's, a third pending; an API key of alice's.
    Returns ({"job": a completed job of alice's, "pending": a pending one}, the key).
    """
    from django.db import connection

    from jobs.models import ApiKey, Status, VideoGenerationJob

    rows = [
        VideoGenerationJob(user_id="alice" if index % 2 else "bob", prompt=f"prompt {index}", model_name="tiny-random",
                           num_frames=9, width=64, height=64, num_inference_steps=2, guidance_scale=4.5, seed=index,
                           status=Status.COMPLETED if index % 3 else Status.PENDING)
        for index in range(jobs * 2)
    ]
    VideoGenerationJob.objects.bulk_create(rows, batch_size=1000)
    _, key = ApiKey.issue(user_id="alice", name="bench")
    # As autovacuum would have: without statistics the planner may walk a
    # user's index instead of the primary key.
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE video_generation_jobs")
    return {"job": str(rows[1].id), "pending": str(rows[3].id)}, key


# A submit: a fixed small job from one of POST_USERS users at random. One
# user's submits queue behind each other (the per-user active-job cap takes
# a lock until the row is durably committed), so a single user measures
# the disk's commit latency, not the API.
POST_PATH = "/api/v1/generate"
POST_USERS = 1000
POST_BODY = json.dumps({"user_id": "USER", "prompt": "a red fox in the snow", "width": 64, "height": 64,
                        "num_frames": 9, "num_inference_steps": 2})


def post_body() -> str:
    return POST_BODY.replace("USER", f"user{random.randrange(POST_USERS)}")


# --- processes ---------------------------------------------------------------------------


def start_qcluster(log, env: dict[str, str] | None = None, command: list[str] | None = None) -> subprocess.Popen:
    """
    `manage.py qcluster` (or command) in its own session, so that
    stop_process() can kill what it leaves; its environment this process's
    plus env, its output into the open file log.
    """
    return subprocess.Popen(command or [sys.executable, "manage.py", "qcluster"], cwd=ROOT,
                            env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop_process(process: subprocess.Popen, timeout: float = 60) -> None:
    """SIGTERM, as docker stops a container; after timeout, SIGKILL to the whole session."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextlib.contextmanager
def gunicorn(env: dict[str, str], log_path: Path, extra: list[str] = ()) -> Iterator[tuple[int, int]]:
    """
    gunicorn as `make run` starts it (videogen/gunicorn.py, its workers and
    threads), on a free port, against this process's database, its access
    log off; yields (port, process group). Stopped with SIGTERM on exit.
    """
    from tests.support.server import gunicorn as serve

    env = {"DATABASE_URL": database_url(), **env}
    with serve(log_path, env, workers=None, args=["--access-logfile", "/dev/null", *extra]) as server:
        # gunicorn runs in a session of its own: its process group is its pid.
        yield server.port, server.process.pid


# --- HTTP ---------------------------------------------------------------------------------


def request_json(url: str, body: dict | None = None) -> dict:
    """GET (or POST body as JSON) and the answer's JSON; a 503 is asked again, as a client would."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    for attempt in range(10):
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.load(response)
        except urllib.error.HTTPError as error:
            # The API's answer while the database refuses connections (a
            # shared server at max_connections).
            if error.code != 503 or attempt == 9:
                raise
            time.sleep(1)


def python_load(port: int, path: str, headers: dict, connections: int, duration: float, method: str = "GET",
                make_body: Callable[[], str] | None = None) -> dict:
    """
    `connections` keep-alive clients, each in a thread, requesting path for
    `duration` seconds: {"rps", "requests", "p50", "p99"} (milliseconds).
    """
    latencies: list[float] = []
    errors: list[int] = []
    deadline = time.monotonic() + duration

    def worker():
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine = []
        while time.monotonic() < deadline:
            started = time.perf_counter()
            connection.request(method, path, body=make_body() if make_body else None, headers=headers)
            response = connection.getresponse()
            response.read()
            mine.append(time.perf_counter() - started)
            if response.status not in (200, 202):
                errors.append(response.status)
        latencies.extend(mine)
        connection.close()

    threads = [threading.Thread(target=worker) for _ in range(connections)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise SystemExit(f"{len(errors)} errors under load on {path}: {sorted(set(errors))}")
    return {"rps": len(latencies) / (time.monotonic() - started), "requests": len(latencies),
            "p50": statistics.median(latencies) * 1000, "p99": percentile(latencies, 0.99) * 1000}


# --- CPU and figures -------------------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> tuple[int, float]:
    """(its process group, the user + system CPU seconds it has used) of a process, from /proc."""
    # After "(comm)": state, ppid, pgrp, ... utime and stime are the 12th and 13th.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[2]), (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def cpu_seconds(group: int, database: str | None) -> dict[str, dict[int, float]]:
    """
    CPU seconds used so far by each process of a process group ("app") and
    each PostgreSQL backend serving `database` ("db"), by pid: a backend
    may close (a connection past its age) or open between two readings.
    """
    backends = set()
    if database:
        import psycopg
        from django.db import connection

        params = {**connection.get_connection_params(), "dbname": "postgres"}
        params.pop("cursor_factory", None)
        params.pop("context", None)
        with psycopg.connect(**params, autocommit=True) as admin:
            backends = {pid for (pid,) in admin.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", [database])}
    used: dict[str, dict[int, float]] = {"app": {}, "db": {}}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError):
            pid = int(stat.parent.name)
            process_group, seconds = process_cpu(pid)
            if process_group == group:
                used["app"][pid] = seconds
            elif pid in backends:
                used["db"][pid] = seconds
    return used


def cpu_between(before: dict[int, float], after: dict[int, float]) -> float:
    """What the processes alive at the end used since `before` (all of it for those started since)."""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


def percentile(values, fraction: float) -> float:
    """The nearest-rank percentile: fraction 0.5 is the median's rank, 0.99 the p99."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]
