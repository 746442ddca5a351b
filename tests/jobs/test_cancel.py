import uuid

import pytest

from jobs.models import Status


@pytest.mark.parametrize("status", [Status.PENDING, Status.RUNNING])
def test_an_active_job_is_cancelled(api, make_job, status):
    job = make_job(status=status)

    response = api.post(f"/api/v1/job/{job.id}/cancel?user_id=alice")

    assert response.status_code == 200
    assert (response.json()["status"], response.json()["message"]) == ("cancelled", "Job was cancelled")
    job.refresh_from_db()
    assert job.status == Status.CANCELLED


@pytest.mark.parametrize("status", [Status.COMPLETED, Status.FAILED, Status.CANCELLED])
def test_a_finished_job_answers_409(api, make_job, status):
    job = make_job(status=status)

    response = api.post(f"/api/v1/job/{job.id}/cancel")

    assert response.status_code == 409
    assert response.json()["status"] == status
    job.refresh_from_db()
    assert job.status == status


def test_another_users_job_cannot_be_cancelled_and_looks_missing(api, make_job):
    job = make_job(user_id="bob")

    foreign = api.post(f"/api/v1/job/{job.id}/cancel?user_id=alice")
    missing = api.post(f"/api/v1/job/{uuid.uuid4()}/cancel?user_id=alice")

    assert foreign.status_code == missing.status_code == 404
    assert foreign.json() == missing.json()
    job.refresh_from_db()
    assert job.status == Status.PENDING
