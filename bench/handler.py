"""
The CPU our code costs per request, without a server: requests go straight
through Django's WSGI handler in this process (middleware, URL routing, DRF,
the database round trips, the JSON), timed with the process's CPU clock, in
alternating rounds (medians), against the bare view of bench/bare.py in the
same process as the baseline. bench/api.py measures the served figures; this
one leaves out gunicorn, the load generator and the scheduler of a shared
box, so it moves less between runs and shows what a code change did.

    .venv/bin/python -m bench.handler
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/videogen_handler .venv/bin/python -m bench.handler --requests 2000
    .venv/bin/python -m bench.handler --profile          # also each row's top lines (cProfile, CPU clock)
    .venv/bin/python -m bench.handler --root /work/wt-old  # the code of another checkout (a worktree at an older commit)
    .venv/bin/python -m bench.handler --ladder        # also a poll built up step by step (bench/ladder.py)

Rows: the bare view, GET /job for a pending and a completed job of alice's
(auth none), and POST /generate with the ORM broker (no worker runs, so
submits pile up as pending jobs, as in bench/api.py). Builds a throwaway
database as bench/api.py does (bench.common.seed_jobs). The threads a row starts
(the submit counts' writer) are on the same CPU clock.
"""

import argparse
import contextlib
import cProfile
import io
import pstats
import statistics
import sys
import time

from bench.common import POST_PATH, ROOT, bench_database, post_body, seed_jobs, setup_django


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000, help="requests per row and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="print each row's top 25 lines by cumulative CPU")
    parser.add_argument("--ladder", action="store_true",
                        help="also the steps from the bare view to a poll, each a view of its own (bench/ladder.py)")
    parser.add_argument("--root", default=str(ROOT),
                        help="the checkout whose code to measure (default: this one)")
    args = parser.parse_args()

    # The measured code (videogen, jobs, generation) from --root; bench/ stays this checkout's.
    sys.path.insert(0, args.root)
    setup_django(quiet=True, VIDEOGEN_AUTH="none", VIDEOGEN_MAX_ACTIVE_JOBS_PER_USER="1000000000")
    from django.db import connection
    from django.core.handlers.wsgi import WSGIHandler
    from django.test import override_settings

    with bench_database():
        job_ids, _key = seed_jobs(1000)
        handler = WSGIHandler()
        rows = [
            ("bare view", "GET", "/bare", "", "bench.bare"),
            *([
                ("ladder: SELECT 1", "GET", "/ladder/select-1", "", "bench.ladder"),
                ("ladder: the compiled read, no model", "GET", f"/ladder/read/{job_ids['job']}", "user_id=alice",
                 "bench.ladder"),
                ("ladder: + the model instance", "GET", f"/ladder/model/{job_ids['job']}", "user_id=alice",
                 "bench.ladder"),
                ("ladder: + serializer, plain view", "GET", f"/ladder/plain/{job_ids['job']}", "user_id=alice",
                 "bench.ladder"),
                ("ladder: + DRF APIView", "GET", f"/ladder/apiview/{job_ids['job']}", "user_id=alice", "bench.ladder"),
            ] if args.ladder else []),
            ("GET /api/v1/job/{pending}?user_id=alice", "GET", f"/api/v1/job/{job_ids['pending']}", "user_id=alice", None),
            ("GET /api/v1/job/{job}?user_id=alice", "GET", f"/api/v1/job/{job_ids['job']}", "user_id=alice", None),
            ("POST /api/v1/generate (orm)", "POST", POST_PATH, "", None),
        ]
        per_request = {label: [] for label, *_ in rows}
        profiles = {label: cProfile.Profile(time.process_time) for label, *_ in rows}
        for _ in range(args.rounds):
            for label, method, path, query, urlconf in rows:
                with override_settings(ROOT_URLCONF=urlconf) if urlconf else contextlib.nullcontext():
                    _call(handler, method, path, query)  # warm: compiled queries, snapshots
                    started = time.process_time()
                    for _ in range(args.requests):
                        _call(handler, method, path, query)
                    per_request[label].append((time.process_time() - started) / args.requests * 1e6)
        if args.profile:
            for label, method, path, query, urlconf in rows:
                if urlconf:
                    continue  # the bare view and the ladder: the API's rows only
                profiles[label].enable()
                for _ in range(args.requests):
                    _call(handler, method, path, query)
                profiles[label].disable()
        # This process's submit counts (jobs.metrics), written before their database goes, not at exit.
        from jobs.metrics import series as metrics

        if hasattr(metrics, "submit_counts"):
            metrics.submit_counts.write()

    print(f"{connection.vendor}, in-process through Django's WSGI handler, {args.rounds} rounds of "
          f"{args.requests} requests, code from {args.root}")
    bare = statistics.median(per_request["bare view"])
    print(f"{'row':48} {'CPU us':>8} {'range':>13} {'/ bare':>7}")
    for label, figures in per_request.items():
        median = statistics.median(figures)
        print(f"{label:48} {median:8.0f} {min(figures):6.0f}-{max(figures):<6.0f} {median / bare:7.2f}")
    if args.profile:
        for label, profile in profiles.items():
            if not profile.getstats():
                continue
            out = io.StringIO()
            pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(25)
            print(f"\n--- {label}\n{out.getvalue()}")


def _call(handler, method: str, path: str, query: str) -> None:
    body = post_body().encode() if method == "POST" else b""
    environ = {
        "REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query, "SERVER_NAME": "localhost",
        "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_HOST": "localhost:8000", "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body), "wsgi.errors": sys.stderr, "CONTENT_LENGTH": str(len(body)),
        "CONTENT_TYPE": "application/json",
    }
    statuses = []
    b"".join(handler(environ, lambda status, headers, exc_info=None: statuses.append(status)))
    if not statuses[0].startswith(("200", "202")):
        raise SystemExit(f"{method} {path}?{query} answered {statuses[0]}")


if __name__ == "__main__":
    main()
