"""
What the hot paths' statements cost PostgreSQL, prepared and not: a status
poll's read (the compiled `visible()` query) and a submit's INSERT of a job
(the compiled INSERT), each run N times on one connection, with the CPU of
that connection's server process read from /proc (so the database must run
on this machine) and this process's own CPU clock. The baseline, run
alongside, is `SELECT 1`: a round trip that asks the database for nothing.

Ways of sending each statement:
- client: parameters written into the SQL by psycopg, as Django's own cursors do;
- server: parameters sent apart, parsed and planned each time;
- prepared: parsed and planned once (videogen.postgresql's prepared_cursor()).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/videogen_statements .venv/bin/python -m bench.statements
    DATABASE_URL=... .venv/bin/python -m bench.statements --runs 5000 --rounds 3

Builds Django's throwaway test database for DATABASE_URL (bench.common's
seed_jobs: 2,000 jobs), drops it at the end. Medians of alternating rounds.
"""

import argparse
import os
import statistics
import time
import uuid

from bench.common import bench_database, process_cpu, seed_jobs, setup_django


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3000, help="executions per row and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        raise SystemExit("DATABASE_URL must name a PostgreSQL database on this machine")

    setup_django()
    import psycopg
    from django.db import connection

    from jobs.models import VideoGenerationJob, _job_insert, _visible_to_user

    with bench_database():
        job_ids, _key = seed_jobs(1000)
        poll_sql, slots, _names, _converters = _visible_to_user.compiled(connection.alias)
        poll_values = {"user": "alice", "job": uuid.UUID(job_ids["job"])}
        poll_params = [poll_values[slot] for slot in slots]
        insert_sql, fields = _job_insert.compiled(connection.alias)

        def insert_params():
            job = VideoGenerationJob(user_id="bench", prompt="a cat", model_name="tiny-random", num_frames=9,
                                     width=64, height=64, num_inference_steps=2, guidance_scale=4.5, seed=1)
            return [field.get_db_prep_save(field.pre_save(job, True), connection) for field in fields]

        # (label, SQL, parameters, autocommit): a poll runs alone, a submit's INSERT inside its transaction.
        statements = [
            ("SELECT 1", "SELECT 1", lambda: [], True),
            ("status poll's read", poll_sql, lambda: poll_params, True),
            ("submit's INSERT", insert_sql, insert_params, False),
        ]
        ways = ["client", "server", "prepared"]
        params = connection.get_connection_params()
        dsn = {key: value for key, value in params.items() if key in ("host", "port", "user", "password", "dbname")}
        figures = {(label, way): [] for label, *_ in statements for way in ways}
        for _ in range(args.rounds):
            for label, sql, make_params, autocommit in statements:
                for way in ways:
                    if label == "SELECT 1" and way != "client":
                        continue
                    figures[(label, way)].append(_measure(psycopg, dsn, way, sql, make_params, autocommit, args.runs))

    print(f"PostgreSQL, one connection, {args.rounds} rounds of {args.runs} executions, µs per execution (medians)")
    print(f"{'statement':22} {'sent':10} {'database':>9} {'client':>8}")
    for (label, way), runs in figures.items():
        if runs:
            database = statistics.median(run[0] for run in runs)
            client = statistics.median(run[1] for run in runs)
            print(f"{label:22} {way:10} {database:9.0f} {client:8.0f}")


def _measure(psycopg, dsn: dict, way: str, sql: str, make_params, autocommit: bool, runs: int) -> tuple[float, float]:
    """(database µs, client µs) per execution; without autocommit, the rows are rolled back at the end."""
    options = {"cursor_factory": psycopg.ClientCursor} if way == "client" else {
        "prepare_threshold": 0 if way == "prepared" else None
    }
    with psycopg.connect(**dsn, autocommit=autocommit, **options) as conn:
        server = conn.info.backend_pid
        cursor = conn.cursor()
        for _ in range(50):
            cursor.execute(sql, make_params())
        all_params = [make_params() for _ in range(runs)]
        database, client = process_cpu(server)[1], time.process_time()
        for params in all_params:
            cursor.execute(sql, params)
        database, client = process_cpu(server)[1] - database, time.process_time() - client
        if not autocommit:
            conn.rollback()
    return database / runs * 1e6, client / runs * 1e6


if __name__ == "__main__":
    main()
