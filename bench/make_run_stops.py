"""
Ctrl-C on `make run`, many times: SIGINT to the whole foreground group, as a
terminal sends it, at two moments:

  start   as soon as the first qcluster logs "starting" (the webhook
          cluster and gunicorn usually still starting) on odd rounds, and as
          soon as /health answers on even ones;
  job     after a job has run (submitted over HTTP, completed).

A stop is in time when no process of the group is left within --limit
seconds (default 3).

    .venv/bin/python -m bench.make_run_stops              # 20 stops at each moment
    .venv/bin/python -m bench.make_run_stops --rounds 3 --moment job

Prints, for each moment: stops, in time, the slowest and the median stop in
seconds. Exits non-zero unless every stop was in time. Each `make run` has
its own throwaway data directory (SQLite) and port.
"""

import argparse
import shutil
import signal
import statistics
import sys
import tempfile
from pathlib import Path

from bench.common import setup_django


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20, help="stops at each moment (default 20)")
    parser.add_argument("--moment", action="append", choices=["start", "job"], help="default both")
    parser.add_argument("--limit", type=float, default=3.0, help="seconds a stop may take (default 3)")
    return parser.parse_args()


def one_stop(moment: str, round_number: int, directory: Path, limit: float) -> float:
    """One `make run`, stopped with Ctrl-C at the moment; the seconds the stop took."""
    from tests.support.processes import wait_until
    from tests.support.server import START_TIMEOUT, start_make_run, stop_group

    server = start_make_run(directory)
    try:
        if moment == "start" and round_number % 2:
            wait_until(lambda: b"starting." in server.log, "a qcluster to start", timeout=START_TIMEOUT,
                       gone=lambda: server.process.poll() is not None, interval=0.01)
        else:
            server.wait_until_up("make run", healthy_only=True)
            if moment == "job":
                job = server.run_tiny_job()
                assert job["status"] == "completed", job
        return server.stop_seconds(limit=limit + 30)
    finally:
        stop_group(server.process, signal.SIGKILL, timeout=5)


def main() -> int:
    args = parse_args()
    setup_django(data_dir=None)
    moments = args.moment or ["start", "job"]
    failed = False
    print(f"make run, Ctrl-C (SIGINT to the group), {args.rounds} rounds, in time: <= {args.limit:g} s")
    print(f"{'moment':8} {'stops':>5} {'in time':>7} {'slowest s':>9} {'median s':>8}")
    for moment in moments:
        seconds = []
        for round_number in range(args.rounds):
            directory = Path(tempfile.mkdtemp(prefix="videogen-make-run-stops-"))
            try:
                took = one_stop(moment, round_number, directory, args.limit)
            except Exception:
                print((directory / "make-run.log").read_text(errors="replace")[-3000:], file=sys.stderr)
                raise
            seconds.append(took)
            print(f"  {moment} round {round_number + 1}: {took:.2f} s", file=sys.stderr, flush=True)
            if took > args.limit:
                print(f"  {moment} round {round_number}: {took:.2f} s; the log's end:", file=sys.stderr)
                print((directory / "make-run.log").read_text(errors="replace")[-3000:], file=sys.stderr)
            shutil.rmtree(directory, ignore_errors=True)
        in_time = sum(took <= args.limit for took in seconds)
        failed |= in_time < len(seconds)
        print(f"{moment:8} {len(seconds):5d} {in_time:7d} {max(seconds):9.2f} {statistics.median(seconds):8.2f}",
              flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
