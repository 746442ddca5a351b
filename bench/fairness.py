"""
Fair share, queue positions and estimates, measured.

    .venv/bin/python -m bench.fairness                       # abc, eta, poll (SQLite)
    .venv/bin/python -m bench.fairness --parts abc --rounds 2
    DATABASE_URL=postgres://... .venv/bin/python -m bench.fairness --parts claims,poll

Parts:

- abc: one real worker (a qcluster, tiny-random). User A submits 20 jobs;
  once A's first runs, B and C submit one each. For B and C: how many jobs
  started between their submit and their own start, and how many of those
  were A's (goal: at most 1). Total throughput (jobs/min, first submit to
  last completion) under the fair policy and under FIFO, alternating, in
  the same run (goal: within 3%). FIFO is the same code with the claim order
  replaced by oldest-job-first (the qcluster is started through this file).
- eta: one worker; 3 users submit at random (Poisson, about 80% load) for
  --eta-seconds. Each job's estimated_start_at is read as GET /job answers
  it right after submit, from a snapshot that holds the job (built inline
  here, tests/support/estimates.py; in service a poll gets it from the
  background rebuild within about a second); error = |estimated - actual
  start| / actual wait, for jobs that waited at least 1 s (goal: median
  <= 25%). Also: the errors of jobs that a later-submitted job overtook
  (fair share let another user's later job go first, which no estimate at
  submit can know) apart from the others, and the run times' spread.
- claims: two processes claim from 10,000 pending jobs (500 users x 20)
  until none is left, with the fair claim and, alongside, a plain FIFO
  claim (oldest row, FOR UPDATE SKIP LOCKED). Claims per second, double
  claims (goal: none), and EXPLAIN of the claim's queries. PostgreSQL only.
- build: the CPU one snapshot of 10,000 waiting jobs costs (what a web
  process spends on a rebuild, in the background but for its first), with
  every user submitting within estimates.ARRIVAL_WINDOW, so new work counts:
  500 users with 20 waiting jobs each, then one user's 10,000 behind 500
  users who each had a job run (each of the 10,000 can be overtaken by
  all 500: the most work the estimate of new work does).
- poll: GET /job (the whole Django stack, test client) on random pending
  jobs among 10,000, today's response (JobSerializer) against the new one
  with queue_position and estimates, alternating rounds (goal: within 10%).
  Each round starts without a snapshot, so it pays the one inline build a
  process makes in its life; --poll-steady leaves that out of the timing.

Uses a throwaway SQLite data directory, or the database in DATABASE_URL
(whose jobs table it empties: give it a bench database).
"""

import argparse
import multiprocessing
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from bench.common import (
    JOB, clear_jobs, migrate, setup_django, start_qcluster, stop_process, submit, wait_finished, warm_up,
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="abc,eta,poll", help="comma-separated: abc, eta, claims, build, poll")
    parser.add_argument("--rounds", type=int, default=2, help="abc runs per policy (default 2)")
    parser.add_argument("--eta-seconds", type=float, default=180, help="how long users submit in eta (default 180)")
    parser.add_argument("--eta-csv", help="eta: also write every job's times to this CSV file")
    parser.add_argument("--polls", type=int, default=2000, help="GET /job per round in poll (default 2000)")
    parser.add_argument("--poll-rounds", type=int, default=3, help="rounds of each in poll (default 3)")
    parser.add_argument("--poll-steady", action="store_true",
                        help="poll: leave each round's first poll (which builds the snapshot inline) out of the timing")
    parser.add_argument("--qcluster-fifo", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


def setup() -> Path | None:
    os.environ.setdefault("VIDEOGEN_QUEUE_NAME", f"videogen-fairness-{os.getpid()}")
    data_dir = setup_django(data_dir=None if os.environ.get("DATABASE_URL") else "videogen-fairness-")
    migrate()
    return data_dir


def fifo_order(queue, now):
    """The baseline: every user's jobs in one line, oldest first."""
    from django.db.models import Min

    from jobs.scheduling.queue import pending_for

    # (priority, user_id) pairs, as jobs.scheduling.queue.users_in_claim_order gives them; every job here is normal.
    rows = pending_for(queue).order_by().values_list("priority", "user_id").annotate(oldest=Min("submitted_at"))
    oldest = {(priority, user_id): at for priority, user_id, at in rows}
    return sorted(oldest, key=oldest.get)


def run_fifo_qcluster() -> None:
    """A qcluster whose claims are FIFO: the patch is made before the workers fork."""
    setup_django(data_dir=None)
    import jobs.scheduling.queue

    jobs.scheduling.queue.users_in_claim_order = fifo_order
    from django.core.management import call_command

    call_command("qcluster")


def start_cluster(log, fifo: bool = False, env: dict[str, str] | None = None) -> subprocess.Popen:
    env = {"VIDEOGEN_WORKERS": "1", "VIDEOGEN_QUEUE_POLL": "0.05", "VIDEOGEN_REAPER_INTERVAL": "5",
           **(env or {})}
    command = [sys.executable, "-m", "bench.fairness", "--qcluster-fifo"] if fifo else None
    return start_qcluster(log, env, command)


# --- abc ------------------------------------------------------------------------------


def abc_once(log, fifo: bool) -> dict:
    from jobs.models import VideoGenerationJob

    cluster = start_cluster(log, fifo=fifo)
    try:
        warm_up(cluster)
        clear_jobs()
        backlog = [submit("a") for _ in range(20)]
        while not VideoGenerationJob.objects.filter(pk=backlog[0].pk, started_at__isnull=False).exists():
            time.sleep(0.02)
        b, c = submit("b"), submit("c")
        wait_finished(cluster)
        jobs = list(VideoGenerationJob.objects.all())
        elapsed = max(job.completed_at for job in jobs) - min(job.submitted_at for job in jobs)
    finally:
        stop_process(cluster)
    order = sorted(jobs, key=lambda job: job.started_at)
    result = {"jobs_per_min": len(jobs) / elapsed.total_seconds() * 60}
    for name, late in (("b", b), ("c", c)):
        late = next(job for job in jobs if job.pk == late.pk)
        before = [job for job in order if late.submitted_at <= job.started_at < late.started_at]
        result[name] = (len(before), sum(job.user_id == "a" for job in before))
    result["failed"] = sum(job.status != "completed" for job in jobs)
    return result


def bench_abc(args, data_log: Path) -> None:
    results = {"fair": [], "fifo": []}
    with open(data_log, "a") as log:
        for _ in range(args.rounds):
            for policy in ("fifo", "fair"):
                results[policy].append(abc_once(log, fifo=policy == "fifo"))
                print(policy, results[policy][-1], file=sys.stderr)
    print(f"\n== abc: one worker, A submits 20, then B and C one each (tiny-random {JOB['width']}x{JOB['height']}, "
          f"{JOB['num_frames']} frames, {JOB['num_inference_steps']} steps), {args.rounds} runs each, alternating")
    print(f"{'policy':<8}{'run':>4}{'B: started before (A)':>24}{'C: started before (A)':>24}{'jobs/min':>10}{'failed':>8}")
    for policy, runs in results.items():
        for index, run in enumerate(runs, 1):
            b, c = "%d (%d)" % run["b"], "%d (%d)" % run["c"]
            print(f"{policy:<8}{index:>4}{b:>24}{c:>24}{run['jobs_per_min']:>10.1f}{run['failed']:>8}")
    fair = statistics.median(run["jobs_per_min"] for run in results["fair"])
    fifo = statistics.median(run["jobs_per_min"] for run in results["fifo"])
    print(f"throughput, median: fair {fair:.1f} jobs/min, FIFO {fifo:.1f} jobs/min, fair/FIFO {fair / fifo:.3f}")


# --- eta ------------------------------------------------------------------------------


def bench_eta(args, data_log: Path) -> None:
    from jobs.api.serializers import JobStatusSerializer
    from jobs.models import VideoGenerationJob
    from jobs.scheduling import estimates
    from jobs.scheduling.estimates import forget_snapshots
    from tests.support.estimates import InlineRebuilds

    rng = random.Random(9)
    estimates.rebuilds = InlineRebuilds()
    with open(data_log, "a") as log:
        cluster = start_cluster(log)
        try:
            clear_jobs()
            # History for the estimates, and the service time for the load.
            warm_up(cluster, 4)
            done = list(VideoGenerationJob.objects.order_by("completed_at"))[1:]
            service = statistics.median((job.completed_at - job.started_at).total_seconds() for job in done)
            mean_gap = 3 * service / 0.8  # each of 3 users: a third of 80% load
            estimated = {}
            next_at = {user: time.monotonic() + rng.expovariate(1 / mean_gap) for user in ("u1", "u2", "u3")}
            end = time.monotonic() + args.eta_seconds
            while time.monotonic() < end:
                user = min(next_at, key=next_at.get)
                time.sleep(max(next_at[user] - time.monotonic(), 0))
                steps = rng.choice([4, 8, 12])
                if VideoGenerationJob.objects.for_user(user).active().count() < 20:
                    job = submit(user, num_inference_steps=steps)
                    job.refresh_from_db()
                    estimated[job.pk] = JobStatusSerializer(job).data["estimated_start_at"]
                next_at[user] = time.monotonic() + rng.expovariate(1 / mean_gap)
            wait_finished(cluster)
        finally:
            stop_process(cluster)
            forget_snapshots()
            estimates.rebuilds = estimates.Rebuilds()
    from django.utils.dateparse import parse_datetime

    errors, nulls, short = [], 0, 0
    alone, overtaken = [], []
    measured = list(VideoGenerationJob.objects.filter(pk__in=estimated))
    for job in measured:
        wait = (job.started_at - job.submitted_at).total_seconds()
        if wait < 1:  # (often started before the estimate was read: then null)
            short += 1
        elif estimated[job.pk] is None:
            nulls += 1
        else:
            errors.append(abs((parse_datetime(estimated[job.pk]) - job.started_at).total_seconds()) / wait)
            later_first = any(job.submitted_at < other.submitted_at and other.started_at < job.started_at
                              for other in measured)
            (overtaken if later_first else alone).append(errors[-1])
    if args.eta_csv:
        write_timings(args.eta_csv, estimated)
    runs = sorted((job.completed_at - job.started_at).total_seconds() for job in measured)
    errors.sort()
    print(f"\n== eta: 3 users at random for {args.eta_seconds:g} s, one worker, median service {service:.2f} s, "
          f"steps 4/8/12 at random")
    print(f"jobs {len(estimated)}, measured {len(errors)}, waited < 1 s {short}, no estimate {nulls}")
    if errors:
        print(f"|estimated start - actual| / actual wait: median {statistics.median(errors):.1%}, "
              f"p75 {errors[int(len(errors) * 0.75)]:.1%}, p90 {errors[int(len(errors) * 0.9)]:.1%}")
    for label, part in (("not overtaken", alone), ("overtaken by a later job", overtaken)):
        if part:
            print(f"  {label}: {len(part)} jobs, median {statistics.median(part):.1%}")
    print(f"run times (claim to completion): p10 {runs[len(runs) // 10]:.2f} s, median {statistics.median(runs):.2f} s, "
          f"p90 {runs[len(runs) * 9 // 10]:.2f} s")


def write_timings(path: str, estimates: dict) -> None:
    """Every job's times, for a look at where the estimates go wrong."""
    import csv

    from jobs.models import VideoGenerationJob

    def iso(value) -> str:
        return "" if value is None else str(value.isoformat())

    with open(path, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["user", "steps", "current_step", "submitted", "estimated_start", "started", "first_step",
                         "stepped", "completed"])
        for job in VideoGenerationJob.objects.order_by("submitted_at"):
            writer.writerow([job.user_id, job.num_inference_steps, job.current_step, iso(job.submitted_at),
                             estimates.get(job.pk) or "", iso(job.started_at), iso(job.first_step_at),
                             iso(job.stepped_at), iso(job.completed_at)])


# --- claims ----------------------------------------------------------------------------


def make_pending(count: int = 10_000, users: int = 500) -> None:
    from django.utils import timezone

    from jobs.models import VideoGenerationJob

    start = timezone.now() - timedelta(hours=1)
    VideoGenerationJob.objects.bulk_create(
        [
            VideoGenerationJob(user_id=f"user{index % users}", prompt="p", model_name="tiny-random", seed=1,
                               submitted_at=start + timedelta(milliseconds=index), **JOB)
            for index in range(count)
        ],
        batch_size=1000,
    )


def fifo_claim(worker: str):
    from django.db import transaction
    from django.utils import timezone

    from jobs.models import Status, VideoGenerationJob

    with transaction.atomic():
        job = (VideoGenerationJob.objects.filter(status=Status.PENDING).order_by("submitted_at", "id")
               .select_for_update(skip_locked=True).first())
        if job is not None and job.transition(Status.RUNNING, from_={Status.PENDING}, started_at=timezone.now(),
                                              worker=worker):
            return job
    return None


def claimer(name: str, fifo: bool, results) -> None:
    from django.db import connection
    from django.utils import timezone

    from jobs.models import Status
    from jobs.scheduling.queue import job_claim_next

    connection.close()
    claimed = []
    while True:
        job = fifo_claim(name) if fifo else job_claim_next(queue=None, worker=name)
        if job is None:
            break
        # Done at once: its (tiny) worker time counts toward its user's share.
        job.transition(Status.COMPLETED, from_={Status.RUNNING}, completed_at=timezone.now())
        claimed.append(str(job.pk))
    results.put(claimed)
    connection.close()


def bench_claims(args) -> None:
    from django.db import connection

    from jobs.models import VideoGenerationJob

    if connection.vendor != "postgresql":
        print("\n== claims: PostgreSQL only (set DATABASE_URL); skipped")
        return
    print("\n== claims: two processes claiming from 10,000 pending jobs (500 users x 20), PostgreSQL")
    explain(connection)
    context = multiprocessing.get_context("fork")
    for label, fifo in (("FIFO (baseline)", True), ("fair", False), ("FIFO (baseline)", True), ("fair", False)):
        clear_jobs()
        make_pending()
        connection.close()
        results = context.Queue()
        started = time.monotonic()
        processes = [context.Process(target=claimer, args=(f"w{n}", fifo, results)) for n in range(2)]
        for process in processes:
            process.start()
        claims = [results.get() for _ in processes]
        for process in processes:
            process.join()
        elapsed = time.monotonic() - started
        every = [pk for mine in claims for pk in mine]
        double = len(every) - len(set(every))
        left = VideoGenerationJob.objects.filter(status="pending").count()
        print(f"{label:<16} {len(every)} claims in {elapsed:.1f} s: {len(every) / elapsed:.0f} claims/s "
              f"(per process {', '.join(str(len(mine)) for mine in claims)}), double claims {double}, left {left}")


def explain(connection) -> None:
    from django.utils import timezone

    from jobs.scheduling.queue import pending_for, worker_time_query

    from django.db import transaction

    from jobs.models import VideoGenerationJob

    make_pending()
    # A table with history, as in service: the queue is a small part of it.
    VideoGenerationJob.objects.bulk_create(
        [VideoGenerationJob(user_id=f"old{index % 2000}", prompt="p", model_name="tiny-random", seed=1,
                            status="completed", started_at=_ago(7200), completed_at=_ago(7100), **JOB)
         for index in range(100_000)],
        batch_size=5000,
    )
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE video_generation_jobs")
    from django.db.models import Min

    users = pending_for(None).order_by().values_list("user_id").annotate(oldest=Min("submitted_at"))
    head = pending_for(None).filter(user_id="user7").order_by("submitted_at", "id").select_for_update(skip_locked=True)
    print("EXPLAIN the users waiting, with their oldest job:")
    print(users.explain())
    print("EXPLAIN one user's oldest pending job, locked:")
    with transaction.atomic(), connection.cursor() as cursor:
        sql, params = head[:1].query.sql_with_params()
        cursor.execute("EXPLAIN " + sql, params)
        print("\n".join(row[0] for row in cursor.fetchall()))
    print("EXPLAIN the worker time each user used over the window:")
    print(worker_time_query(timezone.now()).explain())
    clear_jobs()


# --- poll -------------------------------------------------------------------------------


def bench_build(args) -> None:
    from django.db import connection
    from django.utils import timezone

    from jobs.scheduling.estimates import cluster_beat, forget_snapshots, take_snapshot
    from jobs.models import VideoGenerationJob

    def ran(user_id: str, ago: float) -> VideoGenerationJob:
        return VideoGenerationJob(user_id=user_id, prompt="p", model_name="tiny-random", seed=1, status="completed",
                                  submitted_at=_ago(ago + 100), started_at=_ago(ago + 10), first_step_at=_ago(ago + 9),
                                  stepped_at=_ago(ago + 1), completed_at=_ago(ago), current_step=8, **JOB)

    def waiting(users: list[str]) -> list[VideoGenerationJob]:
        start = timezone.now() - timedelta(minutes=5)
        return [VideoGenerationJob(user_id=users[index % len(users)], prompt="p", model_name="tiny-random", seed=1,
                                   submitted_at=start + timedelta(milliseconds=20 * index), **JOB)
                for index in range(10_000)]

    shapes = {
        "500 users x 20 waiting": lambda: [*waiting([f"user{n}" for n in range(500)]),
                                           *(ran(f"user{n}", 60 + n) for n in range(20))],
        "1 user x 10,000 waiting, 500 others ran one": lambda: [*waiting(["big"]),
                                                               *(ran(f"user{n}", 60 + n / 10) for n in range(500))],
    }
    print(f"\n== build: one snapshot of 10,000 waiting jobs ({connection.vendor}), CPU seconds, 5 builds each")
    for label, jobs in shapes.items():
        clear_jobs()
        VideoGenerationJob.objects.bulk_create(jobs(), batch_size=1000)
        cluster_beat("bench:1", None, 1)
        forget_snapshots()
        take_snapshot(None)  # the first loads what a process loads once (numpy among them)
        builds = []
        for _ in range(5):
            forget_snapshots()
            started = time.process_time()
            snapshot = take_snapshot(None)
            builds.append(time.process_time() - started)
        estimated = sum(start is not None for _, start in snapshot.standing.values())
        print(f"{label:<44} {', '.join(f'{build:.3f}' for build in builds)} s, median {statistics.median(builds):.3f} "
              f"({estimated} starts estimated)")
    clear_jobs()


def bench_poll(args) -> None:
    from django.db import connection
    from django.test import Client

    import jobs.api.views
    from jobs.scheduling.estimates import cluster_beat, forget_snapshots, take_snapshot
    from jobs.models import VideoGenerationJob
    from jobs.api.serializers import JobSerializer, JobStatusSerializer

    clear_jobs()
    make_pending()
    # History and a live worker, so the estimates are computed, not null.
    for _ in range(20):
        VideoGenerationJob.objects.create(user_id="history", prompt="p", model_name="tiny-random", seed=1,
                                          status="completed", started_at=_ago(60), first_step_at=_ago(59),
                                          stepped_at=_ago(51), completed_at=_ago(50), current_step=8, **JOB)
    cluster_beat("bench:1", None, 1)
    ids = list(VideoGenerationJob.objects.filter(status="pending").values_list("pk", flat=True))
    rng = random.Random(1)
    client = Client(HTTP_HOST="127.0.0.1")
    rates = {"today (JobSerializer)": [], "with queue_position and estimates": []}
    # CPU per poll, every thread of the process (the background rebuilds too): moves less than req/s here.
    cpu = {label: [] for label in rates}
    for _ in range(args.poll_rounds):
        for label, serializer in (("today (JobSerializer)", JobSerializer),
                                  ("with queue_position and estimates", JobStatusSerializer)):
            jobs.api.views.JobStatusSerializer = serializer
            cluster_beat("bench:1", None, 1)  # a beat older than a minute is a dead cluster's
            forget_snapshots()
            picks = [rng.choice(ids) for _ in range(args.polls)]
            if args.poll_steady:
                client.get(f"/api/v1/job/{picks[0]}")  # the process's one inline build, untimed
            started, started_cpu = time.monotonic(), time.process_time()
            for pk in picks:
                response = client.get(f"/api/v1/job/{pk}")
                assert response.status_code == 200, response.content
            rates[label].append(args.polls / (time.monotonic() - started))
            cpu[label].append((time.process_time() - started_cpu) / args.polls * 1e6)
            if serializer is JobStatusSerializer:
                assert "queue_position" in response.json() and response.json()["estimated_start_at"]
    jobs.api.views.JobStatusSerializer = JobStatusSerializer
    builds = []
    for _ in range(3):
        forget_snapshots()
        started = time.monotonic()
        take_snapshot(None)
        builds.append(time.monotonic() - started)
    start = ("the first poll, which builds it inline, untimed" if args.poll_steady
             else "the first poll builds it inline, timed")
    print(f"\n== poll: GET /job on random pending jobs among 10,000 ({connection.vendor}), {args.polls} per round, "
          f"{args.poll_rounds} rounds alternating; each new round starts with no snapshot ({start})")
    for label, values in rates.items():
        print(f"{label:<36} {', '.join(f'{value:.0f}' for value in values)} req/s, median {statistics.median(values):.0f}")
    today, new = (statistics.median(values) for values in rates.values())
    print(f"new/today: {new / today:.3f}")
    for label, values in cpu.items():
        print(f"{label:<36} {', '.join(f'{value:.0f}' for value in values)} us CPU per poll, "
              f"median {statistics.median(values):.0f}")
    today_cpu, new_cpu = (statistics.median(values) for values in cpu.values())
    print(f"CPU today/new: {today_cpu / new_cpu:.3f}")
    print(f"one snapshot of the 10,000 (what a rebuild costs, in the background but for a process's first): "
          f"{', '.join(f'{build:.2f}' for build in builds)} s")
    clear_jobs()


def _ago(seconds: float):
    from django.utils import timezone

    return timezone.now() - timedelta(seconds=seconds)


def main() -> int:
    args = parse_args()
    if args.qcluster_fifo:
        run_fifo_qcluster()
        return 0
    data_dir = setup()
    log = (data_dir or Path(tempfile.gettempdir())) / f"fairness-qcluster-{os.getpid()}.log"
    parts = args.parts.split(",")
    if "abc" in parts:
        bench_abc(args, log)
    if "eta" in parts:
        bench_eta(args, log)
    if "claims" in parts:
        bench_claims(args)
    if "build" in parts:
        bench_build(args)
    if "poll" in parts:
        bench_poll(args)
    if data_dir is not None:
        shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
