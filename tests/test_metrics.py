"""
GET /metrics after a real cluster ran jobs, served by two gunicorn
processes: whichever process answers, the totals are the same and right.
And the submit counts each process keeps in memory: written by its writer
thread, kept when the database refuses them, written at exit.
"""

import json
import os
import subprocess
import sys

import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from prometheus_client.parser import text_string_to_metric_families

from jobs.metrics.series import label_text, record_submitted, render_jobs
from jobs.models import FINISHED, MetricSeries, VideoGenerationJob, WorkerGpu
from tests.support.cluster import running_qcluster, test_database_url, wait_for
from tests.support.jobs import FAST_JOB
from tests.support.processes import wait_until
from tests.support.server import gunicorn

TOKEN = "s3cret-scrape-token"
READS = 20

pytestmark = pytest.mark.django_db(transaction=True)


def samples(text: str) -> dict[tuple, float]:
    """Every sample as {(name, sorted labels): value}; the parser also proves the format."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(server) -> dict[tuple, float]:
    response, body = server.request("GET", "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status == 200
    assert response.getheader("Content-Type").startswith("text/plain; version=0.0.4")
    return samples(body.decode())


@pytest.mark.slow
def test_metrics_count_jobs_and_requests_across_two_web_processes_and_a_cluster(tmp_path, media_root):
    env = {
        "DATABASE_URL": test_database_url(),
        "VIDEOGEN_METRICS": "true",
        "VIDEOGEN_METRICS_TOKEN": TOKEN,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus"),
        "VIDEOGEN_MEDIA_ROOT": str(media_root),
        "REDIS_URL": settings.REDIS_URL,
        "VIDEOGEN_QUEUE_NAME": settings.Q_CLUSTER["name"],
    }
    (tmp_path / "prometheus").mkdir()
    headers = {"Content-Type": "application/json"}
    with gunicorn(tmp_path / "gunicorn.log", env, workers=2) as server:
        ids = []
        for _ in range(3):
            body = json.dumps({"user_id": "alice", "prompt": "a red fox", **FAST_JOB})
            response, answer = server.request("POST", "/api/v1/generate", body=body, headers=headers)
            assert response.status == 202
            ids.append(json.loads(answer)["job_id"])
        assert server.request("POST", f"/api/v1/job/{ids[2]}/cancel")[0].status == 200

        before = scrape(server)
        assert before[("videogen_jobs_pending", (("model", "tiny-random"),))] == 2
        assert before[("videogen_jobs_running", (("model", "tiny-random"),))] == 0

        with running_qcluster(tmp_path / "qcluster.log", media_root, VIDEOGEN_REAPER_INTERVAL="0.5") as cluster:
            wait_for(lambda: VideoGenerationJob.objects.filter(pk__in=ids, status__in=FINISHED).count() == 3,
                     "the jobs to finish", cluster)
            wait_for(lambda: scrape(server).get(("videogen_workers_alive", (("host", settings.VIDEOGEN_WORKER_HOST),))) == 1,
                     "the cluster's workers to be counted", cluster)
            for _ in range(READS):
                assert server.request("GET", f"/api/v1/job/{ids[0]}")[0].status == 200
            # Several scrapes, so both gunicorn processes answer some: all agree.
            scrapes = [scrape(server) for _ in range(6)]

        # A stopped cluster takes its workers with it.
        after_stop = scrape(server)

    model = (("model", "tiny-random"),)
    first = scrapes[0]
    assert first[("videogen_jobs_submitted_total", model)] == 3
    finished = lambda status: first[  # noqa: E731
        ("videogen_jobs_finished_total", (("error_code", ""), ("model", "tiny-random"), ("status", status)))
    ]
    assert (finished("completed"), finished("cancelled")) == (2, 1)
    assert first[("videogen_job_duration_seconds_count", model)] == 2
    assert first[("videogen_job_wait_seconds_count", model)] == 2
    assert first[("videogen_job_duration_seconds_bucket", (("le", "+Inf"), *model))] == 2
    assert first[("videogen_jobs_pending", model)] == 0 and first[("videogen_jobs_running", model)] == 0
    job_reads = ("videogen_http_requests_total", (("method", "GET"), ("status", "200"), ("view", "job")))
    submits = ("videogen_http_requests_total", (("method", "POST"), ("status", "202"), ("view", "generate")))
    assert first[job_reads] == READS and first[submits] == 3
    assert first[("videogen_http_request_duration_seconds_count", (("method", "GET"), ("view", "job")))] == READS
    for later in scrapes[1:]:
        assert {key: value for key, value in later.items() if "metrics" not in str(key)} == {
            key: value for key, value in first.items() if "metrics" not in str(key)
        }
    # (Its row is gone: the host has no series left, unless another cluster runs there.)
    assert after_stop.get(("videogen_workers_alive", (("host", settings.VIDEOGEN_WORKER_HOST),)), 0) == 0


@pytest.mark.slow
def test_metrics_need_the_token_when_one_is_set_and_are_absent_unless_enabled(tmp_path):
    env = {"DATABASE_URL": test_database_url(), "VIDEOGEN_METRICS": "true", "VIDEOGEN_METRICS_TOKEN": TOKEN,
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    with gunicorn(tmp_path / "on.log", env, workers=1) as server:
        for authorization in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            response, body = server.request("GET", "/metrics", headers=authorization)
            assert response.status == 401
            assert response.getheader("WWW-Authenticate") == 'Bearer realm="videogen-metrics"'
        assert server.request("GET", "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})[0].status == 200
    with gunicorn(tmp_path / "off.log", {"DATABASE_URL": test_database_url()}, workers=1) as server:
        assert server.request("GET", "/metrics")[0].status == 404


def test_gpu_memory_is_summed_per_device_and_label_values_are_escaped():
    from django.utils import timezone

    for worker, used in (("h:1 slot 0 cuda:0", 5), ("h:2 slot 1 cuda:0", 7), ("h:3 slot 2 cuda:1", 11)):
        WorkerGpu.objects.create(worker=worker, host="h", device=worker.rsplit(" ", 1)[1], used_bytes=used,
                                 peak_bytes=used * 2, updated_at=timezone.now())
    MetricSeries.objects.create(name="videogen_jobs_submitted_total", labels=label_text(model='we"ird\nmodel'), value=1)
    parsed = samples(render_jobs())
    assert parsed[("videogen_gpu_memory_used_bytes", (("device", "cuda:0"), ("host", "h")))] == 12
    assert parsed[("videogen_gpu_memory_peak_bytes", (("device", "cuda:1"), ("host", "h")))] == 22
    assert parsed[("videogen_jobs_submitted_total", (("model", 'we"ird\nmodel'),))] == 1


def submitted(model: str = "tiny-random") -> float | None:
    return (
        MetricSeries.objects.filter(name="videogen_jobs_submitted_total", labels=label_text(model=model))
        .values_list("value", flat=True)
        .first()
    )


def test_a_burst_of_submits_is_written_by_the_writer_thread_not_by_each_submit(submits_counted_in_memory):
    submits_counted_in_memory(written_every=0.2)
    with CaptureQueriesContext(connection) as queries:
        for _ in range(50):
            record_submitted("tiny-random")

    assert queries.captured_queries == []
    wait_until(lambda: submitted() == 50, "the writer thread to write the burst's count", timeout=10)


def test_counts_the_database_refuses_are_written_at_the_next_write(submits_counted_in_memory):
    submit_counts = submits_counted_in_memory()
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE videogen_metric_series RENAME TO videogen_metric_series_away")
    try:
        for _ in range(3):
            record_submitted("tiny-random")
        submit_counts.write()
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE videogen_metric_series_away RENAME TO videogen_metric_series")
    assert submitted() is None

    record_submitted("tiny-random")
    submit_counts.write()

    assert submitted() == 4


def test_a_process_writes_its_last_counts_as_it_exits():
    script = (
        "import django; django.setup()\n"
        "from jobs.metrics.series import record_submitted\n"
        "for _ in range(5): record_submitted('tiny-random')\n"
    )
    env = {**os.environ, "DATABASE_URL": test_database_url(), "DJANGO_SETTINGS_MODULE": "videogen.settings"}

    subprocess.run([sys.executable, "-c", script], env=env, cwd=settings.BASE_DIR, check=True, timeout=60)

    assert submitted() == 5


def test_a_scrape_includes_its_own_processs_counts_not_yet_written(submits_counted_in_memory):
    submits_counted_in_memory()
    for _ in range(2):
        record_submitted("tiny-random")

    assert samples(render_jobs())[("videogen_jobs_submitted_total", (("model", "tiny-random"),))] == 2
