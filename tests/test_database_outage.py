"""
PostgreSQL going away and coming back, for real: the API answers 503 while it
is down and recovers by itself; a job running through a restart completes.
Runs on the PostgreSQL leg of CI, which sets VIDEOGEN_TEST_RESTART_POSTGRES=1
(it restarts the server, so never against one that matters).
"""

import os
import subprocess

import pytest
from django.db import connection

from jobs.models import Status, VideoGenerationJob
from jobs.services.lifecycle import job_enqueue
from tests.support.cluster import running_qcluster, wait_for, wait_until_finished
from tests.support.processes import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def postgres_control():
    if connection.vendor != "postgresql" or os.environ.get("VIDEOGEN_TEST_RESTART_POSTGRES") != "1":
        pytest.skip("needs a PostgreSQL server this test may restart (VIDEOGEN_TEST_RESTART_POSTGRES=1)")
    version = sorted(os.listdir("/etc/postgresql"))[0]

    def control(action: str) -> None:
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action],
            check=True, timeout=120, capture_output=True,
        )
        # This process's connection died with the server.
        connection.close()

    yield control
    # Whatever happened in the test, leave the server running.
    if subprocess.run(["pg_isready", "-h", "127.0.0.1", "-q"]).returncode != 0:
        control("start")


def test_the_api_answers_503_while_the_database_is_down_and_recovers_by_itself(api, postgres_control):
    assert api.get("/api/v1/health").status_code == 200

    postgres_control("stop")
    health = api.get("/api/v1/health")
    submit = api.post("/api/v1/generate", {"user_id": "u", "prompt": "p"}, format="json")
    status = api.get("/api/v1/videos")
    postgres_control("start")

    def healthy():
        answer = api.get("/api/v1/health")
        return answer if answer.status_code == 200 else None

    # By itself (nothing restarted but the database), within a bound only a hang would miss.
    recovered = wait_until(healthy, "the API to answer 200 again", timeout=30)

    assert health.status_code == 503
    assert health.json()["checks"]["database"].startswith("unavailable")
    assert submit.status_code == status.status_code == 503
    assert submit.json()["detail"] == "The database is unavailable; try again shortly."
    assert recovered.status_code == 200


def test_a_job_running_through_a_database_restart_completes_and_the_worker_goes_on(
    make_job, tmp_path, media_root, postgres_control
):
    job = make_job(width=128, height=128, num_frames=17, num_inference_steps=120)
    job_enqueue(job)
    with running_qcluster(tmp_path / "q.log", media_root) as cluster:
        wait_for(lambda: VideoGenerationJob.objects.filter(pk=job.pk, current_step__gte=5).exists(), "step 5", cluster)
        postgres_control("restart")
        wait_until_finished([job], cluster)
        # Submitted after the restart: the cluster's queue reader reconnects too.
        later = make_job(width=64, height=64, num_frames=5, num_inference_steps=2)
        job_enqueue(later)
        wait_until_finished([later], cluster)

    job.refresh_from_db()
    later.refresh_from_db()
    assert job.status == Status.COMPLETED, job.error_message
    assert later.status == Status.COMPLETED, later.error_message
