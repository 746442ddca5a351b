"""
How the jobs admin's list page holds up on a large table.

    .venv/bin/python -m bench.admin_list                      # SQLite, 100,000 jobs
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/videogen .venv/bin/python -m bench.admin_list
    .venv/bin/python -m bench.admin_list --rows 20000 --repeat 3

It builds a throwaway database (a temporary SQLite file, or PostgreSQL's
`videogen_bench`, dropped at the end), seeds it with a realistic mix of jobs
(thousands of users, every status, two models, failure classes, 90 days of
submissions), and times page loads through Django's test client as a staff
user, with the number of queries each costs. Each page is timed twice:

- `ours`: the jobs admin (jobs/admin.py) as operators use it;
- `stock`: a first-cut ModelAdmin of the same model with Django's defaults
  (full COUNTs, DISTINCT model list, facets allowed), the baseline;

plus `query`, the bare ORM query for one page of 50 rows, as the floor.
Every figure is the median of --repeat loads after one warm-up load.
"""

import argparse
import random
import statistics
import time
import uuid
from datetime import timedelta
from urllib.parse import urlencode

from bench.common import bench_database, setup_django

urlpatterns: list = []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--explain", action="store_true", help="print the plan of each page's row query")
    args = parser.parse_args()

    data_dir = setup_django(quiet=True)
    from django.conf import settings
    from django.db import connection

    settings.ROOT_URLCONF = __name__
    settings.ALLOWED_HOSTS = ["testserver"]
    _build_urls()
    name = "videogen_bench" if connection.vendor == "postgresql" else str(data_dir / "bench.sqlite3")
    with bench_database(name, serialize=False):
        run(args.rows, args.repeat, explain=args.explain)


def _build_urls() -> None:
    from django.contrib import admin
    from django.urls import include, path

    from jobs.models import VideoGenerationJob

    class StockJobAdmin(admin.ModelAdmin):
        list_display = ["id", "user_id", "status", "progress", "model_name", "prompt", "submitted_at"]
        list_filter = ["status", "model_name", "error_code"]
        date_hierarchy = "submitted_at"
        search_fields = ["user_id", "prompt"]
        ordering = ["-submitted_at"]
        list_per_page = 50

    stock_site = admin.AdminSite(name="stock")
    stock_site.register(VideoGenerationJob, StockJobAdmin)
    urlpatterns.extend(
        [
            path("admin/", admin.site.urls),
            path("stock/", stock_site.urls),
            path("api/v1/", include("jobs.api.urls")),
        ]
    )


def seed(rows: int) -> dict:
    from django.utils import timezone

    from jobs.models import ErrorCode, Status, VideoGenerationJob

    rng = random.Random(4)
    now = timezone.now()
    statuses = [Status.COMPLETED] * 70 + [Status.FAILED] * 15 + [Status.RUNNING] * 5 + [Status.PENDING] * 5 + [
        Status.CANCELLED
    ] * 5
    words = "a cat dog sunset over mountains city at night slow motion drone shot of the sea forest rain".split()
    batch = []
    for index in range(rows):
        status = rng.choice(statuses)
        submitted = now - timedelta(seconds=rng.uniform(0, 90 * 86400))
        started = submitted + timedelta(seconds=rng.uniform(1, 60)) if status != Status.PENDING else None
        finished = status in (Status.COMPLETED, Status.FAILED, Status.CANCELLED)
        job_id = uuid.UUID(int=rng.getrandbits(128), version=4)
        batch.append(
            VideoGenerationJob(
                id=job_id,
                user_id=f"user{rng.randrange(5000)}",
                prompt=" ".join(rng.choice(words) for _ in range(rng.randrange(5, 40))),
                model_name=rng.choice(["tiny-random", "cogvideox-2b"]),
                num_frames=36,
                width=720,
                height=480,
                num_inference_steps=50,
                guidance_scale=4.5,
                seed=index,
                status=status,
                progress=100 if status == Status.COMPLETED else rng.randrange(100),
                error_code=rng.choice(ErrorCode.values) if status == Status.FAILED else "",
                error_message="Generation failed: CUDA out of memory" if status == Status.FAILED else "",
                video=f"videos/{job_id}.mp4" if status == Status.COMPLETED else "",
                poster=f"posters/{job_id}.jpg" if status == Status.COMPLETED else "",
                submitted_at=submitted,
                started_at=started,
                completed_at=started + timedelta(seconds=rng.uniform(5, 600)) if started and finished else None,
            )
        )
        if len(batch) == 5000:
            VideoGenerationJob.objects.bulk_create(batch)
            batch = []
    VideoGenerationJob.objects.bulk_create(batch)
    return {"user": "user42", "month": now - timedelta(days=30)}


def median_ms(load, repeat: int, explain: bool = False) -> tuple[float, int]:
    """Median milliseconds of `repeat` loads after a warm-up, and the queries of one load."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        load()
    # Read now: the next request clears the connection's query log.
    query_count = len(queries.captured_queries)
    if explain:
        for query in queries.captured_queries:
            # The page's rows: the one query that reads the prompt column.
            if '"video_generation_jobs"."prompt",' in query["sql"]:
                print_plan(query["sql"])
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        load()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), query_count


def print_plan(sql: str) -> None:
    from django.db import connection

    prefix = "EXPLAIN QUERY PLAN " if connection.vendor == "sqlite" else "EXPLAIN "
    with connection.cursor() as cursor:
        cursor.execute(prefix + sql)
        plan = [" ".join(str(part) for part in row) for row in cursor.fetchall()]
    print("    plan: " + " | ".join(line.strip() for line in plan))


def run(rows: int, repeat: int, *, explain: bool) -> None:
    from django.contrib.auth.models import User
    from django.db import connection
    from django.test import Client
    from django.utils import timezone

    from jobs.models import VideoGenerationJob

    started = time.perf_counter()
    facts = seed(rows)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    print(f"{connection.vendor}: seeded {rows:,} jobs in {time.perf_counter() - started:.1f} s")

    staff = User.objects.create_superuser("bench", "bench@example.com", "bench")
    client = Client()
    client.force_login(staff)
    some_job = VideoGenerationJob.objects.order_by("-submitted_at").first()
    month = timezone.localtime(facts["month"]).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    next_month = (month + timedelta(days=32)).replace(day=1)
    pages = {
        "list": "",
        "page 20": "?p=20",
        "status=failed": "?status__exact=failed",
        "model": "?model_name=cogvideox-2b",
        "failure class": "?error_code__exact=out_of_memory",
        "user_id": f"?user_id={facts['user']}",
        # The date filter's range, as its links spell it, over one calendar month.
        "date (a month)": "?" + urlencode({"submitted_at__gte": str(month), "submitted_at__lt": str(next_month)}),
        "search prompt": "?q=drone",
        # Matches one user's jobs: the substring match on prompts reads every row.
        "search user_id": f"?q={facts['user']}",
    }

    def load(url: str):
        def get():
            response = client.get(url)
            assert response.status_code == 200, (url, response.status_code)

        return get

    floor_ms, _ = median_ms(lambda: list(VideoGenerationJob.objects.order_by("-submitted_at", "-id")[:50]), repeat)
    print(f"query (one page of 50 rows, bare ORM): {floor_ms:.1f} ms\n")
    print(f"{'page':<16} {'ours ms':>8} {'queries':>8} {'stock ms':>9} {'queries':>8} {'stock/ours':>10}")
    for name, query in pages.items():
        ours_ms, ours_queries = median_ms(load(f"/admin/jobs/videogenerationjob/{query}"), repeat, explain)
        if name == "user_id":
            # The stock admin has no user_id box; its way is the search.
            query = f"?q={facts['user']}"
        stock_ms, stock_queries = median_ms(load(f"/stock/jobs/videogenerationjob/{query}"), repeat)
        print(
            f"{name:<16} {ours_ms:8.1f} {ours_queries:8d} {stock_ms:9.1f} {stock_queries:8d} "
            f"{stock_ms / ours_ms:9.1f}x"
        )
    job_ms, job_queries = median_ms(load(f"/admin/jobs/videogenerationjob/{some_job.pk}/change/"), repeat)
    print(f"{'job page':<16} {job_ms:8.1f} {job_queries:8d}")
    list_ms, _ = median_ms(load("/admin/jobs/videogenerationjob/"), repeat)
    print(f"\nours, unfiltered list vs the bare query: {list_ms / floor_ms:.0f}x")


if __name__ == "__main__":
    main()
