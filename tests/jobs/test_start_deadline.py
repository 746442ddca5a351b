"""
start_within: a job that has not started by its deadline is
cancelled with error_code deadline_exceeded, by the claim or the reaper, and
never runs, not even for a step; one that started is no longer bound by it.
"""

from datetime import timedelta

import pytest
from django.utils import timezone

from jobs.models import ErrorCode, Status, VideoGenerationJob, WebhookEvent
from jobs.scheduling.queue import job_claim_next
from jobs.services.recovery import reap_lost_jobs
from tests.support.cluster import running_qcluster, wait_for, wait_until_finished
from tests.support.jobs import FAST_JOB
from tests.support.receiver import SECRET


@pytest.mark.parametrize("value", [0, 86401, "soon", True, 1.5])
def test_a_start_within_out_of_bounds_is_a_400_naming_it(submit, value):
    response = submit({"user_id": "alice", "prompt": "a cat", "start_within": value, **FAST_JOB})

    assert response.status_code == 400
    assert list(response.json()["errors"]) == ["start_within"]


def test_the_deadline_is_shown_until_the_job_starts(submit, api):
    body = submit({"user_id": "alice", "prompt": "a cat", "start_within": 600, **FAST_JOB}).json()
    job = VideoGenerationJob.objects.get(pk=body["job_id"])

    assert job.start_deadline_at - job.submitted_at == timedelta(seconds=600)
    assert api.get(f"/api/v1/job/{job.pk}?user_id=alice").json()["start_deadline_at"] is not None

    claimed = job_claim_next(queue=None, worker="w")

    assert claimed.pk == job.pk
    assert api.get(f"/api/v1/job/{job.pk}?user_id=alice").json()["start_deadline_at"] is None


def test_a_job_without_start_within_has_no_deadline(submit):
    body = submit({"user_id": "alice", "prompt": "a cat", **FAST_JOB}).json()

    assert body["start_deadline_at"] is None


def past_deadline(make_job, **fields) -> VideoGenerationJob:
    return make_job(start_deadline_at=timezone.now() - timedelta(seconds=1), **fields)


def test_the_claim_cancels_a_job_past_its_deadline_and_runs_the_next(make_job, settings):
    settings.VIDEOGEN_WEBHOOK_SECRET = SECRET
    late = past_deadline(make_job, webhook_url="https://example.com/hook", webhook_events=["cancelled", "running"],
                         submitted_at=timezone.now() - timedelta(minutes=5))
    next_one = make_job(user_id="bob")

    claimed = job_claim_next(queue=None, worker="w")

    late.refresh_from_db()
    assert claimed.pk == next_one.pk
    assert (late.status, late.error_code, late.started_at) == (Status.CANCELLED, ErrorCode.DEADLINE_EXCEEDED, None)
    assert "start deadline" in late.error_message
    # Its webhooks fire as for any cancel, and it never ran.
    assert list(WebhookEvent.objects.filter(job=late).values_list("type", flat=True)) == ["job.cancelled"]


def test_a_claim_with_only_late_jobs_runs_nothing(make_job):
    late = past_deadline(make_job)

    assert job_claim_next(queue=None, worker="w") is None
    late.refresh_from_db()
    assert late.status == Status.CANCELLED


def test_the_reaper_cancels_waiting_jobs_past_their_deadline(make_job):
    late, in_time = past_deadline(make_job), make_job(start_deadline_at=timezone.now() + timedelta(hours=1))

    counts = reap_lost_jobs()

    late.refresh_from_db()
    in_time.refresh_from_db()
    assert counts["cancelled past their start deadline"] == 1
    assert (late.status, in_time.status) == (Status.CANCELLED, Status.PENDING)


def test_a_job_that_started_is_not_bound_by_its_deadline_when_it_is_handed_back(make_job):
    job = make_job(start_deadline_at=timezone.now() + timedelta(seconds=30))
    assert job_claim_next(queue=None, worker="w").pk == job.pk
    job.refresh_from_db()
    assert job.requeue(from_={Status.RUNNING}, count_attempt=False)

    assert reap_lost_jobs()["cancelled past their start deadline"] == 0
    assert job_claim_next(queue=None, worker="w2").pk == job.pk


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_real_cluster_never_runs_a_job_whose_deadline_passed_while_it_waited(api, tmp_path, media_root):
    busy = api.post("/api/v1/generate", {"user_id": "alice", "prompt": "long", **FAST_JOB,
                                         "num_inference_steps": 60}, format="json").json()
    waiting = api.post("/api/v1/generate", {"user_id": "bob", "prompt": "urgent", "start_within": 2, **FAST_JOB},
                       format="json").json()

    with running_qcluster(tmp_path / "q.log", media_root, VIDEOGEN_REAPER_INTERVAL="1") as cluster:
        wait_for(lambda: VideoGenerationJob.objects.filter(pk=waiting["job_id"], status=Status.CANCELLED).exists(),
                 "the waiting job to pass its deadline", cluster, timeout=180)
        wait_until_finished(list(VideoGenerationJob.objects.filter(pk=busy["job_id"])), cluster)

    late = VideoGenerationJob.objects.get(pk=waiting["job_id"])
    assert (late.error_code, late.started_at, late.worker) == (ErrorCode.DEADLINE_EXCEEDED, None, "")
    assert VideoGenerationJob.objects.get(pk=busy["job_id"]).status == Status.COMPLETED
