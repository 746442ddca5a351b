"""
Webhook delivery through real processes: a generation cluster (one worker),
the webhook cluster on its own queue, and a receiver on 127.0.0.1 that
verifies every signature (tests/support/receiver.py).

1. Latency: 20 jobs with a webhook for `completed`; for each, the time from
   the job's completed_at (written by the worker) to the receiver sending
   its 200. Prints p50, p90 and max.
2. Interference: 20 jobs whose webhook receiver takes 5 s per delivery and
   20 without a webhook, alternating in one queue (side by side, so other
   load on the machine falls on both alike); prints the mean and median
   generation time per job (started_at to completed_at) of each and their
   ratio. The goal is within 2%.

    .venv/bin/python -m bench.webhooks                                   # ORM broker, throwaway SQLite
    REDIS_URL=redis://127.0.0.1:6379/6 .venv/bin/python -m bench.webhooks  # Redis broker

Uses a throwaway data directory (SQLite), or the database in DATABASE_URL.
"""

import argparse
import os
import shutil
import statistics
import sys
import time

from bench.common import migrate, percentile, setup_django, start_qcluster, stop_process

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
JOB = {"fps": 8, "num_frames": 9, "width": 64, "height": 64, "num_inference_steps": 20, "guidance_scale": 4.5}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=20, help="jobs per run (default 20)")
    parser.add_argument("--slow", type=float, default=5.0, help="seconds the slow receiver takes (default 5)")
    parser.add_argument("--skip-interference", action="store_true", help="measure latency only")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    data_dir = setup_django(
        data_dir="videogen-webhooks-",
        VIDEOGEN_QUEUE_NAME=f"videogen-bench-{os.getpid()}",
        VIDEOGEN_WEBHOOK_QUEUE=f"videogen-bench-hooks-{os.getpid()}",
        VIDEOGEN_WEBHOOK_SECRET=SECRET,
        VIDEOGEN_WEBHOOK_ALLOWED_HOSTS="127.0.0.1",
    )
    from django.conf import settings

    from generation.params import GenerationParams
    from jobs.models import FINISHED, VideoGenerationJob
    from jobs.services.lifecycle import job_create
    from tests.support.receiver import running_receiver

    migrate()
    log = open(data_dir / "clusters.log", "a")
    clusters = [
        start_qcluster(log, {"VIDEOGEN_WORKERS": "1"}),
        start_qcluster(log, {"VIDEOGEN_WORKERS": "1", "Q_CLUSTER_NAME": settings.VIDEOGEN_WEBHOOK_QUEUE}),
    ]

    def run(urls: list[str | None], label: str) -> list[VideoGenerationJob]:
        """One job per entry of urls (None: no webhook), submitted in that order; waits for all."""
        jobs = []
        for index, url in enumerate(urls):
            params = GenerationParams(prompt="a lighthouse at night", negative_prompt="", seed=index,
                                      model_name="tiny-random", **JOB)
            job, _ = job_create(user_id=f"bench-{label}-{index % 10}", params=params,
                                webhook_url=url or "", webhook_events=["completed"] if url else None)
            jobs.append(job)
        deadline = time.monotonic() + 60 * 30
        while VideoGenerationJob.objects.filter(pk__in=[j.pk for j in jobs]).exclude(status__in=FINISHED).exists():
            if time.monotonic() > deadline or any(c.poll() is not None for c in clusters):
                raise SystemExit(f"jobs did not finish; see {data_dir / 'clusters.log'}")
            time.sleep(0.1)
        return list(VideoGenerationJob.objects.filter(pk__in=[j.pk for j in jobs]).order_by("started_at"))

    def mean_run_time(jobs) -> float:
        return statistics.mean((job.completed_at - job.started_at).total_seconds() for job in jobs)

    broker = "Redis" if settings.REDIS_URL else "ORM"
    try:
        with running_receiver(slow_seconds=args.slow) as receiver:
            # Warm-up: the worker's first pipeline build is not a generation to compare.
            run([None] * 2, "warmup")
            finished = run([receiver.url + "/ok"] * args.jobs, "latency")
            received = receiver.wait_for(len(finished), timeout=120)
            completed_at = {str(job.pk): job.completed_at.timestamp() for job in finished}
            latencies = [item.at - completed_at[item.body["data"]["job_id"]] for item in received]
            assert not receiver.rejected, receiver.rejected
            print(f"broker {broker}: webhook latency, completion -> receiver's 200, {len(latencies)} jobs")
            print(f"  p50 {percentile(latencies, 0.5) * 1000:.0f} ms   p90 {percentile(latencies, 0.9) * 1000:.0f} ms"
                  f"   max {max(latencies) * 1000:.0f} ms")
            if not args.skip_interference:
                # Side by side: jobs with a slow receiver and jobs without
                # alternate in one queue, so whatever else loads the machine
                # falls on both alike.
                slow_url = receiver.url + "/slow"
                jobs = run([slow_url if index % 2 else None for index in range(2 * args.jobs)], "mixed")
                slow = [(j.completed_at - j.started_at).total_seconds() for j in jobs if j.webhook_url]
                plain = [(j.completed_at - j.started_at).total_seconds() for j in jobs if not j.webhook_url]
                receiver.wait_for(args.jobs, path="/slow", timeout=args.jobs * args.slow + 120)
                print(f"broker {broker}: generation time per job, {args.jobs} jobs with a receiver taking"
                      f" {args.slow:g} s per delivery and {args.jobs} without, alternating")
                for name, values in (("without webhook", plain), ("slow receiver", slow)):
                    print(f"  {name:<16} mean {statistics.mean(values):.3f} s   median {statistics.median(values):.3f} s")
                print(f"  slow / without: mean {statistics.mean(slow) / statistics.mean(plain):.3f}"
                      f"   median {statistics.median(slow) / statistics.median(plain):.3f}")
    finally:
        for cluster in clusters:
            stop_process(cluster)
        log.close()
        if settings.REDIS_URL:
            import redis

            client = redis.Redis.from_url(settings.REDIS_URL)
            client.delete(settings.Q_CLUSTER["name"], settings.VIDEOGEN_WEBHOOK_QUEUE)
        shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
