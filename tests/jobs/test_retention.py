from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from jobs import tasks
from jobs.models import Status, VideoGenerationJob
from jobs.services.retention import expire_outputs

DAYS = 7


@pytest.fixture
def retention(settings):
    settings.VIDEOGEN_RETENTION_DAYS = DAYS
    return settings


def finished_ago(make_completed_job, age: timedelta, now):
    job = make_completed_job()
    VideoGenerationJob.objects.filter(pk=job.pk).update(completed_at=now - age)
    job.refresh_from_db()
    return job


def test_without_retention_nothing_expires_and_nothing_says_it_will(api, make_completed_job, media_root):
    job = make_completed_job()
    VideoGenerationJob.objects.filter(pk=job.pk).update(completed_at=timezone.now() - timedelta(days=3650))

    assert expire_outputs() == []
    body = api.get(f"/api/v1/job/{job.id}").json()
    assert body["expires_at"] is None and body["expired_at"] is None
    assert (media_root / job.video.name).exists()


def test_only_jobs_past_retention_are_touched_at_the_boundary(retention, make_completed_job, media_root):
    now = timezone.now()
    older = finished_ago(make_completed_job, timedelta(days=DAYS, seconds=1), now)
    exactly = finished_ago(make_completed_job, timedelta(days=DAYS), now)
    younger = finished_ago(make_completed_job, timedelta(days=DAYS, seconds=-1), now)

    expired = expire_outputs(now=now)

    assert [job.pk for job in expired] == [older.pk]
    older.refresh_from_db()
    assert older.expired_at == now and not older.video and not older.poster and older.status == Status.COMPLETED
    assert not (media_root / "videos" / f"{older.id}.mp4").exists()
    assert not (media_root / "posters" / f"{older.id}.jpg").exists()
    for kept in (exactly, younger):
        kept.refresh_from_db()
        assert kept.expired_at is None and kept.video
        assert (media_root / kept.video.name).exists() and (media_root / kept.poster.name).exists()


def test_active_jobs_are_never_expired(retention, make_job):
    long_ago = timezone.now() - timedelta(days=DAYS * 10)
    running = make_job(status=Status.RUNNING, submitted_at=long_ago, started_at=long_ago)
    pending = make_job(submitted_at=long_ago)

    assert expire_outputs() == []
    assert VideoGenerationJob.objects.filter(pk__in=[running.pk, pending.pk], expired_at__isnull=True).count() == 2


def test_old_failed_and_cancelled_jobs_are_marked_expired_too(retention, make_job):
    long_ago = timezone.now() - timedelta(days=DAYS + 1)
    failed = make_job(status=Status.FAILED, completed_at=long_ago)
    cancelled = make_job(status=Status.CANCELLED, completed_at=long_ago)

    assert {job.pk for job in expire_outputs()} == {failed.pk, cancelled.pk}


def test_a_completed_job_says_when_it_expires(retention, api, make_completed_job):
    job = make_completed_job()

    body = api.get(f"/api/v1/job/{job.id}?user_id=alice").json()

    assert body["expires_at"] == (job.completed_at + timedelta(days=DAYS)).isoformat().replace("+00:00", "Z")
    assert body["expired_at"] is None


def test_an_unfinished_job_has_no_expiry(retention, api, make_job):
    job = make_job()
    assert api.get(f"/api/v1/job/{job.id}").json()["expires_at"] is None


def test_a_download_after_expiry_is_a_410_that_says_it_expired(retention, api, make_completed_job):
    job = finished_ago(make_completed_job, timedelta(days=DAYS + 1), timezone.now())
    expire_outputs()

    for endpoint in ("download", "poster", "preview"):
        response = api.get(f"/api/v1/{endpoint}/{job.id}?user_id=alice")
        assert response.status_code == 410
        assert "expired" in response.json()["detail"]
    body = api.get(f"/api/v1/job/{job.id}?user_id=alice").json()
    assert body["status"] == "completed" and body["video_url"] is None
    assert body["expired_at"] is not None and body["expires_at"] == body["expired_at"]


def test_a_410s_expired_at_is_written_as_get_job_writes_it(retention, api, make_completed_job):
    job = finished_ago(make_completed_job, timedelta(days=DAYS + 1), timezone.now())
    expire_outputs()

    refused = api.get(f"/api/v1/download/{job.id}?user_id=alice").json()
    shown = api.get(f"/api/v1/job/{job.id}?user_id=alice").json()

    assert refused["expired_at"] == shown["expired_at"]
    assert refused["expired_at"].endswith("Z")


def test_the_command_lists_without_changing_anything_on_a_dry_run(retention, make_completed_job, media_root):
    job = finished_ago(make_completed_job, timedelta(days=DAYS + 1), timezone.now())
    out = StringIO()

    call_command("expire_outputs", "--dry-run", stdout=out)

    assert str(job.id) in out.getvalue() and "would expire 1 job finished" in out.getvalue()
    job.refresh_from_db()
    assert job.expired_at is None and (media_root / job.video.name).exists()

    call_command("expire_outputs", stdout=out)
    job.refresh_from_db()
    assert job.expired_at is not None and not (media_root / "videos" / f"{job.id}.mp4").exists()
    assert "expired 1 job finished" in out.getvalue()


def test_the_command_refuses_to_run_without_retention():
    with pytest.raises(CommandError, match="VIDEOGEN_RETENTION_DAYS"):
        call_command("expire_outputs")


def test_the_scheduled_task_expires_and_counts(retention, make_completed_job):
    finished_ago(make_completed_job, timedelta(days=DAYS + 1), timezone.now())
    assert tasks.expire_outputs() == 1
    assert tasks.expire_outputs() == 0


@pytest.mark.django_db
def test_the_schedules_exist_after_migrating():
    from django_q.models import Schedule

    funcs = set(Schedule.objects.values_list("func", flat=True))
    assert {"jobs.tasks.expire_outputs", "jobs.tasks.send_due_webhooks"} <= funcs
