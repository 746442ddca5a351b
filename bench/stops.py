"""
Stopping a real cluster with a running job, the three ways hosts stop it,
each many times: SIGTERM to the whole process group (systemd's
KillMode=control-group), SIGTERM to the parent only (docker), SIGINT to the
whole foreground group (Ctrl-C). A stop is in time when every process has
exited within VIDEOGEN_SHUTDOWN_TIMEOUT + 10 s; the job is handed back when
it is pending again with its attempt not counted.

    .venv/bin/python -m bench.stops              # 20 stops each way
    .venv/bin/python -m bench.stops --rounds 5

Prints, for each way: stops, stopped in time, hung (killed with SIGKILL
after the deadline), jobs handed back. Exits non-zero unless every stop was
in time and handed its job back. Uses a throwaway data directory (SQLite),
or the database in DATABASE_URL (and REDIS_URL, if set).
"""

import argparse
import os
import shutil
import signal
import sys
import time
from collections import Counter

from bench.common import migrate, setup_django, start_qcluster

WAYS = {
    "SIGTERM to the process group (systemd)": lambda pid: os.killpg(pid, signal.SIGTERM),
    "SIGTERM to the parent only (docker)": lambda pid: os.kill(pid, signal.SIGTERM),
    "SIGINT to the process group (Ctrl-C)": lambda pid: os.killpg(pid, signal.SIGINT),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20, help="stops per way (default 20)")
    parser.add_argument("--shutdown-timeout", type=float, default=10, help="VIDEOGEN_SHUTDOWN_TIMEOUT (default 10)")
    return parser.parse_args()


def group_alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    return True


def main() -> int:
    args = parse_args()
    data_dir = setup_django(data_dir="videogen-stops-", VIDEOGEN_QUEUE_NAME=f"videogen-stops-{os.getpid()}")
    from jobs.models import Status, VideoGenerationJob
    from jobs.services.lifecycle import job_cancel, job_enqueue

    migrate()
    env = {
        "VIDEOGEN_WORKERS": "1",
        "VIDEOGEN_SHUTDOWN_TIMEOUT": str(args.shutdown_timeout),
        "VIDEOGEN_QUEUE_POLL": "0.05",
        "VIDEOGEN_PROGRESS_INTERVAL": "0.05",
    }
    deadline = args.shutdown_timeout + 10
    log = open(data_dir / "qcluster.log", "a")
    results: dict[str, Counter] = {}
    try:
        for way, send in WAYS.items():
            counts = results[way] = Counter()
            for _ in range(args.rounds):
                job = VideoGenerationJob.objects.create(
                    user_id="bench", prompt="stop me", model_name="tiny-random", fps=8, num_frames=17,
                    width=128, height=128, num_inference_steps=200, guidance_scale=4.5, seed=1,
                )
                job_enqueue(job)
                cluster = start_qcluster(log, env)
                started = time.monotonic()
                while not VideoGenerationJob.objects.filter(pk=job.pk, status=Status.RUNNING,
                                                            current_step__gte=2).exists():
                    if time.monotonic() - started > 300 or cluster.poll() is not None:
                        raise SystemExit(f"the job never ran; see {data_dir / 'qcluster.log'}")
                    time.sleep(0.05)
                send(cluster.pid)
                stopping = time.monotonic()
                while group_alive(cluster.pid) and time.monotonic() - stopping < deadline:
                    cluster.poll()
                    time.sleep(0.05)
                counts["stops"] += 1
                if group_alive(cluster.pid):
                    counts["hung"] += 1
                    os.killpg(cluster.pid, signal.SIGKILL)
                else:
                    counts["in time"] += 1
                cluster.wait()
                job.refresh_from_db()
                if (job.status, job.attempts, job.worker) == (Status.PENDING, 1, ""):
                    counts["handed back"] += 1
                job_cancel(job)
                print(f"{way}: stop {counts['stops']} in {time.monotonic() - stopping:.1f}s", file=sys.stderr)
    finally:
        log.close()
    print(f"{args.rounds} stops each way, VIDEOGEN_SHUTDOWN_TIMEOUT={args.shutdown_timeout:g}, deadline {deadline:g} s")
    print(f"{'way':<42}{'stops':>6}{'in time':>9}{'hung':>6}{'handed back':>13}")
    ok = True
    for way, counts in results.items():
        print(f"{way:<42}{counts['stops']:>6}{counts['in time']:>9}{counts['hung']:>6}{counts['handed back']:>13}")
        ok = ok and counts["in time"] == counts["handed back"] == counts["stops"] == args.rounds
    shutil.rmtree(data_dir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
