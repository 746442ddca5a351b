import uuid

import pytest

from jobs.models import Status

ORIGINAL_FIELDS = {"job_id", "status", "message", "result"}


def test_the_owner_sees_status_progress_and_parameters(api, make_job):
    job = make_job(status=Status.RUNNING, progress=40)

    body = api.get(f"/api/v1/job/{job.id}?user_id=alice").json()

    assert ORIGINAL_FIELDS <= set(body)
    assert body["job_id"] == str(job.id)
    assert (body["status"], body["message"], body["result"]) == ("running", "Job is running", None)
    assert (body["progress"], body["user_id"], body["seed"]) == (40, "alice", 42)
    assert (body["width"], body["height"], body["num_frames"], body["model"]) == (64, 64, 9, "tiny-random")


def test_without_user_id_any_job_is_visible(api, make_job):
    job = make_job(user_id="bob")

    assert api.get(f"/api/v1/job/{job.id}").status_code == 200


def test_another_users_job_is_a_404_exactly_like_a_missing_one(api, make_job):
    job = make_job(user_id="bob")

    foreign = api.get(f"/api/v1/job/{job.id}?user_id=alice")
    missing = api.get(f"/api/v1/job/{uuid.uuid4()}?user_id=alice")

    assert foreign.status_code == missing.status_code == 404
    assert foreign.json() == missing.json() == {"detail": "No such job."}


@pytest.mark.parametrize("job_id", ["not-a-uuid", "1", "abc123", "%00", "' OR 1=1 --"])
def test_a_job_id_that_is_not_a_uuid_is_a_404(api, db, job_id):
    response = api.get(f"/api/v1/job/{job_id}")

    assert response.status_code == 404
    assert response.json() == {"detail": "No such job."}


def test_the_user_id_query_is_stripped_like_at_submit(api, make_job):
    job = make_job(user_id="alice")

    assert api.get(f"/api/v1/job/{job.id}", {"user_id": " alice "}).status_code == 200


def test_a_blank_user_id_query_is_a_400_not_a_view_of_everything(api, make_job):
    job = make_job()

    response = api.get(f"/api/v1/job/{job.id}?user_id=")

    assert response.status_code == 400
    assert "user_id" in response.json()["errors"]


def test_a_failed_job_says_why(api, make_job):
    job = make_job(status=Status.FAILED, error_message="Generation failed: out of memory")

    body = api.get(f"/api/v1/job/{job.id}").json()

    assert body["status"] == "failed"
    assert body["message"] == "Job failed: Generation failed: out of memory"
    assert body["error_message"] == "Generation failed: out of memory"


def test_a_completed_job_links_its_video_and_poster(api, make_completed_job):
    job = make_completed_job()

    body = api.get(f"/api/v1/job/{job.id}?user_id=alice").json()

    assert body["result"] == body["video_url"] == f"http://testserver/api/v1/download/{job.id}"
    assert body["poster_url"] == f"http://testserver/api/v1/poster/{job.id}"
    assert body["file_size_bytes"] > 0
