"""
`Prefer: wait=N` on GET /job and POST /generate, in process: what is
applied and when nothing changes. Waiting on a running job through a real
server and cluster is in tests/test_events.py.
"""

import pytest

from jobs.models import Status

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def max_wait(settings):
    settings.VIDEOGEN_MAX_WAIT = 30


def test_a_finished_job_is_answered_at_once_with_the_wait_applied(api, make_job):
    job = make_job(status=Status.COMPLETED)
    response = api.get(f"/api/v1/job/{job.id}?user_id=alice", HTTP_PREFER="wait=10")
    assert response.status_code == 200 and response.json()["status"] == "completed"
    assert response["Preference-Applied"] == "wait=10"


def test_the_wait_is_capped_by_videogen_max_wait(api, make_job):
    job = make_job(status=Status.CANCELLED)
    response = api.get(f"/api/v1/job/{job.id}", HTTP_PREFER="respond-async, wait=100000")
    assert response["Preference-Applied"] == "wait=30"


def test_a_wait_of_zero_answers_at_once(api, make_job):
    job = make_job()
    response = api.get(f"/api/v1/job/{job.id}", HTTP_PREFER="wait=0")
    assert response.status_code == 200 and response.json()["status"] == "pending"
    assert response["Preference-Applied"] == "wait=0"


@pytest.mark.parametrize("prefer", ["return=minimal", "wait=soon", "wait=-1", "wait"])
def test_a_preference_not_understood_is_ignored(api, make_job, prefer):
    job = make_job(status=Status.COMPLETED)
    response = api.get(f"/api/v1/job/{job.id}", HTTP_PREFER=prefer)
    assert response.status_code == 200 and "Preference-Applied" not in response


def test_a_foreign_job_is_a_404_whatever_the_wait(api, make_job):
    job = make_job(user_id="bob")
    response = api.get(f"/api/v1/job/{job.id}?user_id=alice", HTTP_PREFER="wait=5")
    assert response.status_code == 404 and response.json() == {"detail": "No such job."}


def test_without_the_header_get_job_has_no_preference_applied(api, make_job):
    job = make_job()
    assert "Preference-Applied" not in api.get(f"/api/v1/job/{job.id}")


def test_get_job_has_live_preview_url_only_while_running_past_the_first_preview(api, make_job, settings):
    settings.VIDEOGEN_PREVIEW_EVERY = 5
    early = make_job(status=Status.RUNNING, current_step=4)
    late = make_job(status=Status.RUNNING, current_step=5)
    done = make_job(status=Status.COMPLETED, current_step=20)
    assert api.get(f"/api/v1/job/{early.id}").json()["live_preview_url"] is None
    assert api.get(f"/api/v1/job/{late.id}").json()["live_preview_url"] == f"http://testserver/api/v1/live-preview/{late.id}"
    assert api.get(f"/api/v1/job/{done.id}").json()["live_preview_url"] is None
    settings.VIDEOGEN_PREVIEW_EVERY = 0
    assert api.get(f"/api/v1/job/{late.id}").json()["live_preview_url"] is None
