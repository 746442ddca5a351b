import pytest
from django_q.models import OrmQ

from jobs.models import Status, VideoGenerationJob
from jobs.services.lifecycle import job_cancel, job_rerun


@pytest.mark.parametrize("status", [Status.PENDING, Status.RUNNING])
def test_an_active_job_can_be_cancelled(make_job, status):
    job = make_job(status=status)

    assert job_cancel(job)

    job.refresh_from_db()
    assert job.status == Status.CANCELLED
    assert job.completed_at is not None


@pytest.mark.parametrize("status", [Status.COMPLETED, Status.FAILED, Status.CANCELLED])
def test_a_finished_job_cannot_be_cancelled(make_job, status):
    job = make_job(status=status)

    assert not job_cancel(job)

    job.refresh_from_db()
    assert job.status == status


def test_a_failed_job_reruns_with_one_more_attempt_and_is_queued(make_job, django_capture_on_commit_callbacks):
    job = make_job(status=Status.FAILED, error_message="boom", error_code="internal", attempts=1, progress=40)

    with django_capture_on_commit_callbacks(execute=True):
        assert job_rerun(job)

    job.refresh_from_db()
    assert (job.status, job.attempts, job.progress) == (Status.PENDING, 2, 0)
    assert (job.error_message, job.error_code, job.completed_at) == ("", "", None)
    assert job.seed == 42
    [queued] = OrmQ.objects.all()
    assert queued.task["args"] == (str(job.id), job.user_id)


def test_a_rerun_job_waits_with_nothing_of_its_last_run_left(make_job, django_capture_on_commit_callbacks):
    from tests.support.jobs import a_failed_run

    job = make_job(**a_failed_run())

    with django_capture_on_commit_callbacks(execute=True):
        assert job_rerun(job)

    job.refresh_from_db()
    assert {name: getattr(job, name) for name in VideoGenerationJob.REQUEUE_RESETS} == VideoGenerationJob.REQUEUE_RESETS


def test_a_job_the_broker_refused_fails_as_enqueue_failed(make_job, monkeypatch):
    from jobs.models import ErrorCode
    from jobs.services.lifecycle import job_enqueue

    def refuse(*args, **kwargs):
        raise ConnectionError("broker down")

    monkeypatch.setattr("jobs.services.lifecycle.wake_up", refuse)
    job = make_job(status=Status.PENDING)

    job_enqueue(job)

    job.refresh_from_db()
    assert (job.status, job.error_code) == (Status.FAILED, ErrorCode.ENQUEUE_FAILED)
    assert job.error_message == "The job could not be queued: broker down"


@pytest.mark.parametrize("status", [Status.PENDING, Status.RUNNING, Status.COMPLETED, Status.CANCELLED])
def test_only_failed_jobs_rerun(make_job, status, django_capture_on_commit_callbacks):
    job = make_job(status=status)

    with django_capture_on_commit_callbacks(execute=True):
        assert not job_rerun(job)

    assert OrmQ.objects.count() == 0


def test_a_job_rerun_twice_from_stale_copies_is_queued_once(make_job, django_capture_on_commit_callbacks):
    job = make_job(status=Status.FAILED)
    stale = VideoGenerationJob.objects.get(pk=job.pk)

    with django_capture_on_commit_callbacks(execute=True):
        results = [job_rerun(job), job_rerun(stale)]

    assert results == [True, False]
    assert OrmQ.objects.count() == 1


def test_a_rerun_that_would_pass_the_users_active_limit_is_refused(make_job, settings):
    from jobs.services.lifecycle import ActiveJobLimitReached

    settings.VIDEOGEN_MAX_ACTIVE_JOBS_PER_USER = 1
    make_job(status=Status.RUNNING)
    failed = make_job(status=Status.FAILED)

    with pytest.raises(ActiveJobLimitReached):
        job_rerun(failed)

    failed.refresh_from_db()
    assert failed.status == Status.FAILED


def test_bulk_reruns_skip_jobs_of_users_at_their_limit_and_say_so(make_job, settings):
    from jobs.services.operations import AT_ACTIVE_LIMIT, jobs_rerun

    settings.VIDEOGEN_MAX_ACTIVE_JOBS_PER_USER = 1
    first, second = make_job(status=Status.FAILED), make_job(status=Status.FAILED)

    outcome = jobs_rerun([first, second])

    assert [job.pk for job in outcome.changed] == [first.pk]
    assert outcome.skipped == {AT_ACTIVE_LIMIT: 1}
