"""`manage.py rerun_failed_jobs`, and the bulk re-run it shares with the admin."""

import datetime
import io
import os
import re
import subprocess
import sys

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django_q.models import OrmQ

from jobs.models import ErrorCode, Status, VideoGenerationJob
from jobs.services.operations import jobs_rerun
from tests.support.cluster import test_database_url


def at(moment: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(moment).replace(tzinfo=datetime.timezone.utc)


@pytest.fixture
def make_failed(make_job):
    def make(**fields) -> VideoGenerationJob:
        values = {
            "status": Status.FAILED,
            "error_code": ErrorCode.INTERNAL,
            "error_message": "Generation failed: boom",
            "completed_at": at("2025-03-10T12:00"),
            **fields,
        }
        return make_job(**values)

    return make


@pytest.fixture
def rerun(django_capture_on_commit_callbacks):
    """Run the command as an operator would; queued tasks are written as on commit."""

    def run(*args: str) -> tuple[str, str]:
        stdout, stderr = io.StringIO(), io.StringIO()
        with django_capture_on_commit_callbacks(execute=True):
            call_command("rerun_failed_jobs", *args, stdout=stdout, stderr=stderr)
        return stdout.getvalue(), stderr.getvalue()

    return run


def queued_job_ids() -> list[str]:
    return sorted(task.task["args"][0] for task in OrmQ.objects.all())


def statuses(*jobs: VideoGenerationJob) -> list[str]:
    return [VideoGenerationJob.objects.get(pk=job.pk).status for job in jobs]


def test_it_reruns_every_failed_job_once_with_one_more_attempt(rerun, make_failed):
    jobs = [make_failed(attempts=1, current_step=1, run_info={"model": "tiny-random"}), make_failed(attempts=3)]

    out, _ = rerun()

    assert statuses(*jobs) == [Status.PENDING, Status.PENDING]
    assert [VideoGenerationJob.objects.get(pk=job.pk).attempts for job in jobs] == [2, 4]
    for job in jobs:
        job.refresh_from_db()
        assert {name: getattr(job, name) for name in job.REQUEUE_RESETS} == job.REQUEUE_RESETS
    assert queued_job_ids() == sorted(str(job.pk) for job in jobs)
    assert "Re-ran 2 jobs: pending again and queued." in out


def test_it_leaves_jobs_that_are_not_failed_alone(rerun, make_job):
    not_failed = (Status.PENDING, Status.RUNNING, Status.COMPLETED, Status.CANCELLED)
    others = [make_job(status=status) for status in not_failed]

    out, _ = rerun()

    assert statuses(*others) == [Status.PENDING, Status.RUNNING, Status.COMPLETED, Status.CANCELLED]
    assert OrmQ.objects.count() == 0
    assert out == "No failed jobs match.\n"


def test_it_lists_each_job_before_rerunning_it(rerun, make_failed):
    job = make_failed(user_id="dora", error_code=ErrorCode.OUT_OF_MEMORY, error_message="CUDA out of memory\nmore")

    out, _ = rerun()

    assert "1 failed job to re-run:" in out
    assert (
        f"  {job.pk}  user=dora  model=tiny-random  attempts=1  failed=2025-03-10T12:00:00+00:00  "
        "[out_of_memory] CUDA out of memory\n"
    ) in out


def test_it_lists_the_first_fifty_and_counts_the_rest(rerun, make_failed):
    for _ in range(52):
        make_failed()

    out, _ = rerun("--dry-run")

    assert out.count("user=alice") == 50
    assert "... and 2 more (-v 2 lists them all)" in out


def test_user_id_reruns_only_that_users_jobs(rerun, make_failed):
    alice, bob = make_failed(user_id="alice"), make_failed(user_id="bob")

    rerun("--user-id", "alice")

    assert statuses(alice, bob) == [Status.PENDING, Status.FAILED]


def test_job_id_reruns_only_the_jobs_named(rerun, make_failed):
    first, second, third = make_failed(), make_failed(), make_failed()

    rerun("--job-id", str(first.pk), "--job-id", str(third.pk))

    assert statuses(first, second, third) == [Status.PENDING, Status.FAILED, Status.PENDING]


def test_since_reruns_jobs_that_failed_on_or_after_that_day(rerun, make_failed):
    before = make_failed(completed_at=at("2025-03-09T23:59"))
    on_the_day = make_failed(completed_at=at("2025-03-10T00:00"))

    rerun("--since", "2025-03-10")

    assert statuses(before, on_the_day) == [Status.FAILED, Status.PENDING]


def test_until_reruns_jobs_that_failed_up_to_the_end_of_that_day(rerun, make_failed):
    late_on_the_day = make_failed(completed_at=at("2025-03-10T23:59"))
    after = make_failed(completed_at=at("2025-03-11T00:00"))

    rerun("--until", "2025-03-10")

    assert statuses(late_on_the_day, after) == [Status.PENDING, Status.FAILED]


def test_since_and_until_take_instants_too(rerun, make_failed):
    early = make_failed(completed_at=at("2025-03-10T13:59"))
    inside = make_failed(completed_at=at("2025-03-10T14:30"))
    late = make_failed(completed_at=at("2025-03-10T15:00"))

    rerun("--since", "2025-03-10T14:00", "--until", "2025-03-10T15:00")

    assert statuses(early, inside, late) == [Status.FAILED, Status.PENDING, Status.FAILED]


def test_error_code_reruns_one_failure_class(rerun, make_failed):
    oom = make_failed(error_code=ErrorCode.OUT_OF_MEMORY)
    timeout = make_failed(error_code=ErrorCode.TIMEOUT)

    rerun("--error-code", "out_of_memory")

    assert statuses(oom, timeout) == [Status.PENDING, Status.FAILED]


def test_error_code_reruns_jobs_the_broker_refused(rerun, make_job):
    refused = make_job(status=Status.PENDING)
    make_job(status=Status.FAILED, error_code=ErrorCode.INTERNAL)
    refused.fail(ErrorCode.ENQUEUE_FAILED, "The job could not be queued: broker down", from_={Status.PENDING})

    out, _ = rerun("--error-code", "enqueue_failed")

    assert statuses(refused) == [Status.PENDING]
    assert "Re-ran 1 job:" in out


def test_error_contains_reruns_failures_whose_message_matches_in_any_case(rerun, make_failed):
    oom = make_failed(error_message="Generation failed: CUDA out of memory")
    other = make_failed(error_message="Generation failed: bad frame")

    rerun("--error-contains", "cuda OUT")

    assert statuses(oom, other) == [Status.PENDING, Status.FAILED]


def test_limit_reruns_at_most_that_many_oldest_first(rerun, make_failed):
    oldest = make_failed(submitted_at=at("2025-03-01T00:00"))
    newest = make_failed(submitted_at=at("2025-03-03T00:00"))
    middle = make_failed(submitted_at=at("2025-03-02T00:00"))

    rerun("--limit", "2")

    assert statuses(oldest, middle, newest) == [Status.PENDING, Status.PENDING, Status.FAILED]


def test_a_dry_run_lists_the_jobs_and_changes_nothing(rerun, make_failed):
    job = make_failed(attempts=1)

    out, _ = rerun("--dry-run")

    assert str(job.pk) in out
    assert "Dry run: 1 job would be re-run; nothing was changed." in out
    job.refresh_from_db()
    assert (job.status, job.attempts, job.error_message) == (Status.FAILED, 1, "Generation failed: boom")
    assert OrmQ.objects.count() == 0


def test_many_jobs_get_a_progress_bar(rerun, make_failed):
    for _ in range(25):
        make_failed()

    _, err = rerun()

    assert "Re-running [------------------------------]   0% 0/25" in err
    assert err.endswith("Re-running [##############################] 100% 25/25\n")


def test_a_few_jobs_get_no_progress_bar(rerun, make_failed):
    make_failed()

    _, err = rerun()

    assert err == ""


def test_a_job_rerun_by_someone_else_after_it_was_selected_is_skipped(make_failed, django_capture_on_commit_callbacks):
    job = make_failed()
    selected = list(VideoGenerationJob.objects.filter(pk=job.pk))
    with django_capture_on_commit_callbacks(execute=True):
        jobs_rerun(VideoGenerationJob.objects.filter(pk=job.pk))

        outcome = jobs_rerun(selected)

    assert outcome.changed == []
    assert outcome.describe_skipped() == "1 changed by another process meanwhile"
    assert OrmQ.objects.count() == 1
    job.refresh_from_db()
    assert job.attempts == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["--job-id", "nope"], "'nope' is not a job id"),
        (["--since", "2025-02-30"], "'2025-02-30' is not a date"),
        (["--until", "yesterday"], "'yesterday' is not a date"),
        (["--since", "2025-03-02", "--until", "2025-03-01"], "--since (2025-03-02) must be before --until"),
        (["--limit", "0"], "must be at least 1"),
        (["--limit", "ten"], "'ten' is not a whole number"),
        (["--error-code", "gremlins"], "invalid choice: 'gremlins'"),
        (["--error-code", "timeout", "--error-contains", "x"], "not allowed with argument"),
        (["--error-contains", " "], "--error-contains must not be blank"),
        (["--user-id", " "], "--user-id must not be blank"),
    ],
)
def test_bad_arguments_are_refused_with_the_reason(db, args, message):
    with pytest.raises(CommandError) as refused:
        call_command("rerun_failed_jobs", *args)

    assert message in str(refused.value)


# --- Real processes


def run_command(*args: str, **popen) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "manage.py", "rerun_failed_jobs", *args],
        cwd=settings.BASE_DIR,
        env={**os.environ, "DATABASE_URL": test_database_url()},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


@pytest.mark.slow
def test_bad_arguments_exit_non_zero_with_a_clear_message(db):
    process = run_command("--since", "someday")
    out, err = process.communicate(timeout=60)

    assert process.returncode != 0
    assert "--since: 'someday' is not a date (YYYY-MM-DD) or an ISO 8601 date and time" in err


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_two_runs_at_once_queue_each_job_once(make_failed):
    # Spread over users, each below VIDEOGEN_MAX_ACTIVE_JOBS_PER_USER once re-run.
    jobs = [make_failed(user_id=f"user-{index % 10}") for index in range(150)]

    processes = [run_command(), run_command()]
    outputs = [process.communicate(timeout=120) for process in processes]

    assert [process.returncode for process in processes] == [0, 0], outputs
    assert queued_job_ids() == sorted(str(job.pk) for job in jobs)
    assert set(VideoGenerationJob.objects.values_list("status", "attempts")) == {(Status.PENDING, 2)}
    # Between them the two runs re-ran every job exactly once. (A run that
    # starts after the other has finished finds nothing: "No failed jobs match.")
    reran = [int(match.group(1)) if (match := re.search(r"Re-ran (\d+) job", out)) else 0 for out, _ in outputs]
    assert sum(reran) == len(jobs), outputs
