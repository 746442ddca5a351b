"""
Webhooks through real processes: a generation cluster, a webhook cluster on
its own queue (Q_CLUSTER_NAME=VIDEOGEN_WEBHOOK_QUEUE, as `make run` starts
it), and a real receiver that verifies every signature.

The clusters are started once for the module, as each test first needs
them (their start and the generation worker's torch import were most of a
test's time); each test waits until its jobs and deliveries are done, so
the next finds them idle. The test with no generation cluster comes first,
before one is started.
"""

import pytest
from django.conf import settings as django_settings

from jobs.models import VideoGenerationJob
from tests.support.cluster import running_qcluster, wait_for
from tests.support.jobs import FAST_JOB
from tests.support.receiver import SECRET, event_types, running_receiver

pytestmark = [pytest.mark.broker, pytest.mark.slow]

WEBHOOK_ENV = {
    "VIDEOGEN_WEBHOOK_SECRET": SECRET,
    "VIDEOGEN_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
    "VIDEOGEN_WEBHOOK_RETRY_BASE": "0.1",
}


def files_in(directory) -> set:
    return {path for path in directory.rglob("*") if path.is_file()}


@pytest.fixture(autouse=True)
def webhook_settings(settings):
    settings.VIDEOGEN_WEBHOOK_SECRET = SECRET
    settings.VIDEOGEN_WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """The clusters' media root (each test's own media_root is this process's)."""
    return tmp_path_factory.mktemp("webhook-clusters") / "media"


@pytest.fixture(scope="module")
def webhook_cluster(django_db_setup, media):
    with running_qcluster(
        media.parent / "webhooks.log", media, Q_CLUSTER_NAME=django_settings.VIDEOGEN_WEBHOOK_QUEUE, **WEBHOOK_ENV
    ) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def generation_cluster(django_db_setup, media):
    with running_qcluster(media.parent / "qcluster.log", media, **WEBHOOK_ENV) as cluster:
        yield cluster


@pytest.mark.django_db(transaction=True)
def test_deliveries_have_a_queue_of_their_own(api, make_job, webhook_cluster):
    # No generation cluster at all (none is started yet): the webhook cluster alone delivers.
    job = make_job(webhook_url="", webhook_events=[])
    with running_receiver() as receiver:
        VideoGenerationJob.objects.filter(pk=job.pk).update(
            webhook_url=receiver.url + "/flaky", webhook_events=["cancelled"]
        )
        assert api.post(f"/api/v1/job/{job.pk}/cancel?user_id=alice").status_code == 200
        received = receiver.wait_for(1, path="/flaky", timeout=60)

    assert event_types(received) == ["job.cancelled"]
    assert receiver.attempts[("/flaky", received[0].headers["webhook-id"])] == 3


@pytest.mark.django_db(transaction=True)
def test_a_generated_job_calls_its_webhook_when_it_runs_and_completes(api, webhook_cluster, generation_cluster):
    with running_receiver() as receiver:
        response = api.post(
            "/api/v1/generate",
            {"user_id": "alice", "prompt": "a cat", **FAST_JOB, "webhook_url": receiver.url + "/ok",
             "webhook_events": ["running", "completed"]},
            format="json",
        )
        assert response.status_code == 202, response.json()
        received = receiver.wait_for(2, timeout=120)

    assert not receiver.rejected  # every signature verified
    assert event_types(received) == ["job.running", "job.completed"]
    assert received[0].headers["webhook-id"] != received[1].headers["webhook-id"]
    completed = received[1].body["data"]
    assert completed["job_id"] == response.json()["job_id"]
    assert completed["status"] == "completed" and completed["progress"] == 100
    assert completed["video_url"].endswith(f"/api/v1/download/{completed['job_id']}")


@pytest.mark.django_db(transaction=True)
def test_a_running_job_that_is_deleted_stops_and_stores_nothing(api, generation_cluster, media):
    before = len(generation_cluster.log)
    files_before = files_in(media)
    response = api.post(
        "/api/v1/generate",
        {"user_id": "alice", "prompt": "a cat", **FAST_JOB, "width": 128, "height": 128, "num_inference_steps": 200},
        format="json",
    )
    job_id = response.json()["job_id"]
    wait_for(
        lambda: VideoGenerationJob.objects.filter(pk=job_id, status="running", current_step__gt=0).exists(),
        "the job to run", generation_cluster,
    )
    assert api.delete(f"/api/v1/job/{job_id}?user_id=alice").status_code == 204
    wait_for(lambda: "no video kept" in generation_cluster.log[before:], "the worker to stop", generation_cluster)
    assert api.get(f"/api/v1/job/{job_id}").status_code == 404

    assert not VideoGenerationJob.objects.filter(pk=job_id).exists()
    assert files_in(media) == files_before
