import uuid

import pytest
from django.core.files.storage import default_storage
from django.utils import timezone

from jobs.models import Status, VideoGenerationJob, WebhookEvent

EVENT_URL = "https://hooks.example.com/videogen"


def stored_names(job) -> list[str]:
    return [name for name in (job.video.name, job.poster.name, job.preview.name) if name]


def test_deleting_a_completed_job_removes_its_files_and_row(api, make_completed_job, media_root):
    job = make_completed_job()
    names = stored_names(job)
    assert names and all((media_root / name).exists() for name in names)

    response = api.delete(f"/api/v1/job/{job.id}?user_id=alice")

    assert response.status_code == 204
    assert response.content == b""
    assert not VideoGenerationJob.objects.filter(pk=job.pk).exists()
    assert not any((media_root / name).exists() for name in names)


def test_a_second_delete_is_a_404(api, make_completed_job):
    job = make_completed_job()
    assert api.delete(f"/api/v1/job/{job.id}?user_id=alice").status_code == 204

    again = api.delete(f"/api/v1/job/{job.id}?user_id=alice")

    assert again.status_code == 404
    assert again.json() == {"detail": "No such job."}


@pytest.mark.parametrize("status", [Status.PENDING, Status.RUNNING])
def test_an_active_job_is_cancelled_then_deleted(api, make_job, status):
    job = make_job(status=status, webhook_url=EVENT_URL, webhook_events=["cancelled"])

    response = api.delete(f"/api/v1/job/{job.id}?user_id=alice")

    assert response.status_code == 204
    assert not VideoGenerationJob.objects.filter(pk=job.pk).exists()
    # The cancel recorded an event, and the delete took it with the job: nothing is left to retry.
    assert not WebhookEvent.objects.exists()


def test_another_users_job_cannot_be_deleted_and_looks_missing(api, make_completed_job, media_root):
    job = make_completed_job(user_id="bob")

    foreign = api.delete(f"/api/v1/job/{job.id}?user_id=alice")
    missing = api.delete(f"/api/v1/job/{uuid.uuid4()}?user_id=alice")
    malformed = api.delete("/api/v1/job/not-a-uuid?user_id=alice")

    assert foreign.status_code == missing.status_code == malformed.status_code == 404
    assert foreign.json() == missing.json() == malformed.json()
    assert VideoGenerationJob.objects.filter(pk=job.pk).exists()
    assert (media_root / job.video.name).exists()


def test_deleting_a_job_stops_its_webhook_retries(api, make_job):
    job = make_job(webhook_url=EVENT_URL, webhook_events=["completed"], status=Status.RUNNING)
    job.transition(Status.COMPLETED, from_={Status.RUNNING}, completed_at=timezone.now())
    assert WebhookEvent.objects.filter(job=job, state="pending").count() == 1

    assert api.delete(f"/api/v1/job/{job.id}").status_code == 204

    assert not WebhookEvent.objects.exists()


def test_when_storage_refuses_the_job_is_kept_and_the_answer_is_503(api, make_completed_job, monkeypatch):
    job = make_completed_job()

    def refuse(name):
        raise PermissionError(f"read-only file system: {name}")

    monkeypatch.setattr(default_storage, "delete", refuse)
    response = api.delete(f"/api/v1/job/{job.id}?user_id=alice")

    assert response.status_code == 503
    assert "not deleted" in response.json()["detail"]
    assert VideoGenerationJob.objects.filter(pk=job.pk).exists()


def test_a_file_already_gone_does_not_block_the_delete(api, make_completed_job, media_root):
    job = make_completed_job()
    (media_root / job.video.name).unlink()

    assert api.delete(f"/api/v1/job/{job.id}?user_id=alice").status_code == 204
    assert not (media_root / job.poster.name).exists()


def test_delete_takes_no_other_query_parameters(api, make_completed_job):
    job = make_completed_job()

    response = api.delete(f"/api/v1/job/{job.id}?USER_ID=alice")

    assert response.status_code == 400
    assert VideoGenerationJob.objects.filter(pk=job.pk).exists()
