"""
What a Prometheus scrape of /metrics costs with a million jobs in the table.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/videogen_keys .venv/bin/python -m bench.metrics
    .venv/bin/python -m bench.metrics --rows 100000      # SQLite, smaller

It builds a throwaway database (Django's test database for DATABASE_URL:
`test_<name>`, dropped at the end), fills the jobs table with --rows jobs in
one INSERT ... SELECT over generate_series on PostgreSQL (a recursive CTE on
SQLite): mostly completed, some failed and cancelled, 1,000 pending and 100
running, three models; records job events for ~300 metric series and a few
workers; then times GET /metrics through Django's test client (the whole
view: HTTP counters from the multiprocess files, job series, gauges).

The baseline, measured in the same run on the same database: the same scrape
with the jobs table empty. The goal is under 50 ms at 1M rows on PostgreSQL.
"""

import argparse
import os
import time

from bench.common import bench_database, percentile, setup_django

MODELS = ("tiny-random", "tiny-random-wan", "cogvideox-2b")

# The columns both fills write: every NOT NULL one.
INSERT = """
INSERT INTO video_generation_jobs (
    id, user_id, prompt, negative_prompt, model_name, fps, num_frames, width, height, num_inference_steps,
    guidance_scale, seed, status, progress, current_step, error_message, error_code, attempts, worker,
    run_info, output_file_path, poster, preview, request_fingerprint, submitted_at, started_at, completed_at,
    deployment, webhook_url, webhook_events, mode, image, last_image, image_fit, inputs, status_log, checkpoint,
    checkpoint_step, priority, preemptions)
"""

POSTGRES_FILL = INSERT + """SELECT md5(n::text)::uuid, 'user' || (n %% 5000), 'a prompt number ' || n, '',
    (ARRAY['tiny-random','tiny-random-wan','cogvideox-2b'])[1 + n %% 3], 24, 49, 720, 480, 50, 6.0, n,
    CASE WHEN n <= 1000 THEN 'pending' WHEN n <= 1100 THEN 'running' WHEN n %% 50 = 0 THEN 'failed'
         WHEN n %% 77 = 0 THEN 'cancelled' ELSE 'completed' END,
    0, 0, '', CASE WHEN n > 1100 AND n %% 50 = 0 THEN 'out_of_memory' ELSE '' END, 1, '', '{}', '', '', '', '',
    now() - (n || ' seconds')::interval, now() - (n || ' seconds')::interval, now() - (n || ' seconds')::interval,
    'videogen', '', '[]', 'text-to-video', '', '', 'crop', '{}', 'pending', '', 0, 1, 0
FROM generate_series(1, %s) AS n
"""

SQLITE_FILL = """
WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < %s)
""" + INSERT + """SELECT printf('%%032x', n), 'user' || (n %% 5000), 'a prompt number ' || n, '',
    CASE n %% 3 WHEN 0 THEN 'tiny-random' WHEN 1 THEN 'tiny-random-wan' ELSE 'cogvideox-2b' END, 24, 49, 720, 480, 50,
    6.0, n,
    CASE WHEN n <= 1000 THEN 'pending' WHEN n <= 1100 THEN 'running' WHEN n %% 50 = 0 THEN 'failed'
         WHEN n %% 77 = 0 THEN 'cancelled' ELSE 'completed' END,
    0, 0, '', CASE WHEN n > 1100 AND n %% 50 = 0 THEN 'out_of_memory' ELSE '' END, 1, '', '{}', '', '', '', '',
    datetime('now', '-' || n || ' seconds'), datetime('now', '-' || n || ' seconds'), datetime('now', '-' || n || ' seconds'),
    'videogen', '', '[]', 'text-to-video', '', '', 'crop', '{}', 'pending', '', 0, 1, 0
FROM seq
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()

    # The settings' default, under the throwaway data directory: this run's counters only.
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    setup_django(quiet=True, VIDEOGEN_METRICS="true", VIDEOGEN_MODELS=",".join(MODELS))
    from django.conf import settings
    from django.db import connection
    from django.test import Client
    from django.test.utils import setup_test_environment

    settings.ALLOWED_HOSTS = ["testserver"]
    setup_test_environment()
    with bench_database():
        _seed_series()
        client = Client()
        # Some HTTP traffic for the multiprocess counters to sum.
        for _ in range(200):
            client.get("/api/v1/models")
        empty = _time(client, args.repeat)
        started = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute((POSTGRES_FILL if connection.vendor == "postgresql" else SQLITE_FILL) % int(args.rows))
            cursor.execute("ANALYZE" if connection.vendor == "postgresql" else "ANALYZE video_generation_jobs")
        fill = time.perf_counter() - started
        full = _time(client, args.repeat)

    print(f"database: {connection.vendor}; {args.rows:,} jobs inserted in {fill:.1f} s; {args.repeat} scrapes each")
    print(f"{'':24} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for label, times in (("scrape, empty table", empty), (f"scrape, {args.rows:,} jobs", full)):
        print(f"{label:24} {percentile(times, 0.5):8.2f} {percentile(times, 0.99):8.2f} {max(times):8.2f}")
    print(f"ratio (p50, full / empty): {percentile(full, 0.5) / percentile(empty, 0.5):.2f}")


def _seed_series() -> None:
    from django.utils import timezone

    from jobs.metrics import series as metrics
    from jobs.scheduling.estimates import cluster_beat
    from jobs.models import WorkerGpu

    codes = ("", "out_of_memory", "timeout", "worker_lost", "model_load")
    for model in MODELS:
        metrics.record_submitted(model)
        for code in codes:
            for status in ("completed", "failed", "cancelled"):
                metrics._add([("videogen_jobs_finished_total",
                               metrics.label_text(model=model, status=status, error_code=code), 1.0)])
        for seconds in (0.2, 3, 40, 700):
            metrics._add(metrics._histogram("videogen_job_duration_seconds", metrics.DURATION_BUCKETS, seconds, model=model))
            metrics._add(metrics._histogram("videogen_job_wait_seconds", metrics.WAIT_BUCKETS, seconds, model=model))
    for index in range(8):
        cluster_beat(f"gpu-host:{index}", None, 1, [{"pid": index, "slot": 0, "device": f"cuda:{index}"}])
        WorkerGpu.objects.create(worker=f"gpu-host:{index} slot {index} cuda:{index}", host="gpu-host",
                                 device=f"cuda:{index}", used_bytes=10**10, peak_bytes=2 * 10**10,
                                 updated_at=timezone.now())


def _time(client, repeat: int) -> list[float]:
    client.get("/metrics")  # warm-up
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.get("/metrics")
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.content[:500]
    return times


if __name__ == "__main__":
    main()
