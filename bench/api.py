"""
HTTP throughput and latency of the API as served: gunicorn started as
`make run` starts it (videogen/gunicorn.py: gthread, 2 processes per core x 2 threads, our logger), loaded with
a fixed concurrency for a fixed time (in alternating rounds; medians), against a bare Django view on the same
settings served the same way (bench/bare.py), run alongside as the baseline.

    .venv/bin/python -m bench.api                          # GET /job, keys off and on
    .venv/bin/python -m bench.api --duration 20 --connections 16
    .venv/bin/python -m bench.api --path '/api/v1/videos?user_id=alice' --path /api/v1/models
    .venv/bin/python -m bench.api --auth none --path '/api/v1/job/{pending}?user_id=alice' --post \
        --redis redis://127.0.0.1:6379/12 --health                    # the hot-path rows
    .venv/bin/python -m bench.api --server-arg=--workers=4 --env VIDEOGEN_LOG_LEVEL=WARNING
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/videogen_keys .venv/bin/python -m bench.api

It builds a throwaway database (a temporary SQLite file, or Django's test
database `test_<name>` for DATABASE_URL, dropped at the end) holding one
user's jobs (--jobs, one of them named {job} in paths), and an API key for
that user. Each path is measured in each auth mode (--auth, default none and
api_key; with a key, user_id is dropped from the query and the key sent as a
Bearer token). The load comes from wrk when it is installed (apt-get install
wrk), else from a Python client with as many keep-alive connections. Prints
requests/s, p50 and p99 latency, and each row's throughput as a ratio of the
bare view's and of the same path with auth none.

Also the CPU each request cost the server's processes ("app") and, on
PostgreSQL, the database's backends ("db"), in microseconds, read from
/proc around each round; "bare/cpu" is the bare view's CPU per request over
the row's. On a shared 2-core box req/s swings by tens of percent between
rounds with the neighbours' load, CPU per request much less: it is the
steadier measure of what a request costs. --query-floor adds the bare
view with one `SELECT 1` (a database round trip and nothing else).
"""

import argparse
import contextlib
import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
from urllib.parse import parse_qsl, urlencode, urlsplit

from bench.common import (
    POST_BODY, POST_PATH, POST_USERS, bench_database, cpu_between, cpu_seconds, gunicorn, post_body, python_load,
    seed_jobs, setup_django,
)

DEFAULT_PATHS = ["/api/v1/job/{job}?user_id=alice"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--path", action="append",
                        help="a path to load ({job}: a completed job of alice's, {pending}: a pending one); repeatable")
    parser.add_argument("--auth", action="append", choices=["none", "api_key"], help="auth modes (default both)")
    parser.add_argument("--duration", type=float, default=10, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="measurements of each row, alternating; medians shown")
    parser.add_argument("--jobs", type=int, default=1000, help="alice's jobs in the table")
    parser.add_argument("--server-arg", action="append", default=[], help="extra gunicorn argument; repeatable")
    parser.add_argument("--env", action="append", default=[], help="NAME=value for the servers; repeatable")
    parser.add_argument("--python-client", action="store_true", help="the Python client even if wrk is installed")
    parser.add_argument("--post", action="store_true",
                        help="also POST /generate (auth none), with the ORM broker and, with --redis, with Redis")
    parser.add_argument("--redis", default="", help="a Redis URL for the --post row on Redis, e.g. redis://127.0.0.1:6379/12")
    parser.add_argument("--health", action="store_true", help="also GET /api/v1/health")
    parser.add_argument("--query-floor", action="store_true", help="also the bare view with one SELECT 1 (/bare-query)")
    args = parser.parse_args()
    paths = args.path or DEFAULT_PATHS
    modes = args.auth or ["none", "api_key"]

    data_dir = setup_django(quiet=True)
    from django.db import connection

    with bench_database():
        job_ids, key = seed_jobs(args.jobs)
        server_env = dict(item.split("=", 1) for item in args.env)
        connection.close()
        client = "wrk" if shutil.which("wrk") and not args.python_client else "python"
        bare_env = server_env | {"DJANGO_SETTINGS_MODULE": "bench.bare"}
        scenarios = [("bare view", "-", "/bare", {}, bare_env)]
        if args.query_floor:
            scenarios.append(("bare view + SELECT 1", "-", "/bare-query", {}, bare_env))
        for mode in modes:
            for template in paths:
                headers = {}
                if mode == "api_key":
                    template = _without_user_id(template)
                    headers["Authorization"] = f"Bearer {key}"
                scenarios.append((template, mode, template.format(**job_ids), headers, server_env | {"VIDEOGEN_AUTH": mode}))
        if args.health:
            scenarios.append(("/api/v1/health", "none", "/api/v1/health", {}, server_env | {"VIDEOGEN_AUTH": "none"}))
        if args.post:
            brokers = [("orm", {})] + ([("redis", {"REDIS_URL": args.redis, "VIDEOGEN_QUEUE_NAME": "bench-api"})]
                                       if args.redis else [])
            for broker, broker_env in brokers:
                scenarios.append((f"POST /api/v1/generate ({broker})", "none", POST, {}, server_env | {
                    "VIDEOGEN_AUTH": "none", "VIDEOGEN_MAX_ACTIVE_JOBS_PER_USER": "1000000000", **broker_env,
                }))
        # Every server runs at once and the rounds alternate between them, so
        # that a busy neighbour on a shared machine slows every row alike;
        # each figure is the median of the rounds.
        runs: dict[int, list[dict]] = {index: [] for index in range(len(scenarios))}
        database = connection.settings_dict["NAME"] if connection.vendor == "postgresql" else None
        with contextlib.ExitStack() as stack:
            servers = {}
            for label, mode, path, headers, env in scenarios:
                if _server_key(env) not in servers:
                    servers[_server_key(env)] = stack.enter_context(
                        gunicorn(env, data_dir / "gunicorn.log", args.server_arg))
            for _ in range(args.rounds):
                for index, (label, mode, path, headers, env) in enumerate(scenarios):
                    port, group = servers[_server_key(env)]
                    before = cpu_seconds(group, database)
                    figures = _load(client, port, path, headers, args)
                    after = cpu_seconds(group, database)
                    figures["app_us"] = cpu_between(before["app"], after["app"]) / figures["requests"] * 1e6
                    figures["db_us"] = cpu_between(before["db"], after["db"]) / figures["requests"] * 1e6
                    runs[index].append(figures)
        results = [
            (label, mode, {name: statistics.median(run[name] for run in runs[index])
                           for name in ("rps", "p50", "p99", "app_us", "db_us")})
            for index, (label, mode, *_rest) in enumerate(scenarios)
        ]

    print(f"{connection.vendor}, {args.connections} connections, {args.rounds} rounds of {args.duration:g} s, load from {client}, "
          f"gunicorn {' '.join(args.server_arg) or '(make run options)'}, {os.cpu_count()} cores")
    bare = results[0][2]["rps"]
    bare_cpu = results[0][2]["app_us"] + results[0][2]["db_us"]
    by_path_none = {_without_user_id(path): figures["rps"] for path, mode, figures in results if mode == "none"}
    print(f"{'path':52} {'auth':8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'/ bare':>7} {'/ none':>7} {'/ orig':>7}"
          f" {'app us':>7} {'db us':>7} {'bare/cpu':>8}")
    for path, mode, figures in results:
        none = by_path_none.get(_without_user_id(path))
        vs_none = f"{figures['rps'] / none:7.2f}" if none and mode != "-" else f"{'':7}"
        original = next((share for prefix, share in ORIGINAL_SHARE_OF_BARE.items() if path.startswith(prefix)), None)
        vs_original = f"{figures['rps'] / bare / original:7.2f}" if original else f"{'':7}"
        cpu = figures["app_us"] + figures["db_us"]
        print(f"{path[:52]:52} {mode:8} {figures['rps']:8.0f} {figures['p50']:8.2f} {figures['p99']:8.2f} "
              f"{figures['rps'] / bare:7.2f} {vs_none} {vs_original} {figures['app_us']:7.0f} {figures['db_us']:7.0f}"
              f" {bare_cpu / cpu if cpu else 0:8.2f}")
    print("/ orig: this row's share of the bare view against the original FastAPI service's share of its bare view, "
          "both as measured side by side on this machine (bench/history/hot-paths.md; the original's code is not in this repository).")


# The side-by-side run on this machine (bench/history/hot-paths.md): the original FastAPI + Celery
# service (model stubbed, one uvicorn process) against a bare Django view
# (gunicorn, one sync worker), medians of its two runs each. Its code is not
# in this repository, so it cannot run alongside; its throughput as a share
# of the bare view's is the yardstick that carries over to another run.
ORIGINAL_BARE = (4163 + 4391) / 2
ORIGINAL_SHARE_OF_BARE = {
    "/api/v1/job/": (1283 + 1302) / 2 / ORIGINAL_BARE,
    "POST /api/v1/generate (orm)": (487 + 515) / 2 / ORIGINAL_BARE,
    "POST /api/v1/generate (redis)": (487 + 515) / 2 / ORIGINAL_BARE,
}


# POST rows: a submit (bench.common.post_body()) sent as POST_PATH.
POST = "POST"


def _server_key(env: dict) -> tuple:
    return tuple(env.get(name) for name in ("DJANGO_SETTINGS_MODULE", "VIDEOGEN_AUTH", "REDIS_URL",
                                            "VIDEOGEN_MAX_ACTIVE_JOBS_PER_USER"))


def _without_user_id(path: str) -> str:
    parts = urlsplit(path)
    query = urlencode([(name, value) for name, value in parse_qsl(parts.query) if name != "user_id"], safe="{}")
    return parts.path + (f"?{query}" if query else "")


def _load(client: str, port: int, path: str, headers: dict, args) -> dict:
    method, body = ("POST", post_body()) if path == POST else ("GET", None)
    if path == POST:
        path, headers = POST_PATH, {**headers, "Content-Type": "application/json"}
    url = f"http://127.0.0.1:{port}{path}"
    _check(port, path, headers, method, body)
    if client == "wrk":
        command = ["wrk", f"-t{min(args.connections, 2)}", f"-c{args.connections}", f"-d{args.duration:g}s", "--latency"]
        for name, value in headers.items():
            command += ["-H", f"{name}: {value}"]
        with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
            if body is None:
                script.write(f"wrk.method = {json.dumps(method)}\n")
            else:
                head, tail = POST_BODY.split("USER")
                script.write(
                    "request = function()\n"
                    f"  local body = {json.dumps(head)} .. 'user' .. math.random(0, {POST_USERS - 1}) .. {json.dumps(tail)}\n"
                    f"  return wrk.format({json.dumps(method)}, nil, nil, body)\n"
                    "end\n"
                )
            script.flush()
            out = subprocess.run([*command, "-s", script.name, url], capture_output=True, text=True, check=True).stdout
        if "Non-2xx" in out:
            raise SystemExit(f"errors under load on {path}:\n{out}")
        return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
                "requests": int(re.search(r"(\d+) requests in", out).group(1)),
                "p50": _wrk_ms(out, "50%"), "p99": _wrk_ms(out, "99%")}
    return python_load(port, path, headers, args.connections, args.duration, method, post_body if body else None)


def _check(port: int, path: str, headers: dict, method: str = "GET", body: str | None = None) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    answer = response.read()
    connection.close()
    if response.status not in (200, 202):
        raise SystemExit(f"{method} {path} answered {response.status}: {answer[:300]!r}")


def _wrk_ms(out: str, percentile: str) -> float:
    value, unit = re.search(rf"^\s+{re.escape(percentile)}\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


if __name__ == "__main__":
    main()
