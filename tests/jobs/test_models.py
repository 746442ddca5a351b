from datetime import timedelta

import pytest
from django.db.models import F
from django.utils import timezone

from jobs.models import ErrorCode, Status, VideoGenerationJob
from jobs.models.signals import job_status_changed
from tests.support.jobs import a_failed_run


def test_for_user_returns_only_that_users_jobs(make_job):
    alice_job = make_job(user_id="alice")
    make_job(user_id="bob")

    assert list(VideoGenerationJob.objects.for_user("alice")) == [alice_job]


def test_for_user_without_a_user_id_returns_every_job(make_job):
    make_job(user_id="alice")
    make_job(user_id="bob")

    assert VideoGenerationJob.objects.for_user(None).count() == 2


def test_for_user_matches_exactly_not_by_prefix_or_case(make_job):
    make_job(user_id="alice")

    assert not VideoGenerationJob.objects.for_user("Alice").exists()
    assert not VideoGenerationJob.objects.for_user("ali").exists()


def test_transition_moves_a_job_that_is_in_an_allowed_state(make_job):
    job = make_job()

    assert job.transition(Status.RUNNING, from_={Status.PENDING}, progress=5)

    job.refresh_from_db()
    assert (job.status, job.progress) == (Status.RUNNING, 5)


def test_transition_refuses_when_another_process_got_there_first(make_job):
    job = make_job()
    stale_copy = VideoGenerationJob.objects.get(pk=job.pk)
    assert job.transition(Status.RUNNING, from_={Status.PENDING})

    assert not stale_copy.transition(Status.RUNNING, from_={Status.PENDING}, progress=50)

    assert stale_copy.status == Status.PENDING  # the instance is left as it was
    job.refresh_from_db()
    assert job.progress == 0


def test_transition_evaluates_expressions_in_the_database(make_job):
    job = make_job(attempts=2)

    job.transition(Status.RUNNING, from_={Status.PENDING}, attempts=F("attempts") + 1)

    assert job.attempts == 3


def test_a_status_change_is_announced_to_its_listeners_with_the_job_as_written(make_job):
    job = make_job()
    heard = []

    def listener(sender, *, job, status, **kwargs):
        heard.append((job.pk, status, job.status, job.progress))

    job_status_changed.connect(listener)
    try:
        job.transition(Status.RUNNING, from_={Status.PENDING}, progress=5)
    finally:
        job_status_changed.disconnect(listener)

    assert heard == [(job.pk, Status.RUNNING, Status.RUNNING, 5)]


def test_a_listener_that_fails_rolls_the_change_back_and_leaves_the_instance_as_it_was(make_job):
    job = make_job(attempts=2)

    def listener(sender, **kwargs):
        raise RuntimeError("a listener failed")

    job_status_changed.connect(listener)
    try:
        with pytest.raises(RuntimeError):
            job.transition(Status.RUNNING, from_={Status.PENDING}, progress=5, attempts=F("attempts") + 1)
    finally:
        job_status_changed.disconnect(listener)

    assert (job.status, job.progress, job.attempts) == (Status.PENDING, 0, 2)
    job.refresh_from_db()
    assert (job.status, job.progress, job.attempts) == (Status.PENDING, 0, 2)


def test_requeue_leaves_nothing_of_the_last_run_and_counts_an_attempt(make_job):
    job = make_job(**a_failed_run(attempts=1))
    asked = (job.seed, job.prompt, job.num_inference_steps)

    assert job.requeue(from_={Status.FAILED})

    job.refresh_from_db()
    assert (job.status, job.attempts, job.progress, job.current_step, job.worker) == (Status.PENDING, 2, 0, 0, "")
    assert (job.heartbeat_at, job.started_at, job.first_step_at, job.stepped_at, job.completed_at) == (None,) * 5
    assert (job.error_code, job.error_message, job.run_info) == ("", "", {})
    # What it was asked for stays, so it makes the same video.
    assert (job.seed, job.prompt, job.num_inference_steps) == asked


def test_requeue_can_leave_the_attempt_uncounted(make_job):
    job = make_job(**a_failed_run(status=Status.RUNNING, attempts=1))

    assert job.requeue(from_={Status.RUNNING}, count_attempt=False)

    job.refresh_from_db()
    assert (job.status, job.attempts, job.current_step) == (Status.PENDING, 1, 0)


def test_requeue_refuses_a_job_that_is_not_in_a_state_it_was_asked_from(make_job):
    job = make_job(**a_failed_run(status=Status.COMPLETED))

    assert not job.requeue(from_={Status.FAILED})

    job.refresh_from_db()
    assert (job.status, job.current_step) == (Status.COMPLETED, 7)


def test_requeued_instances_do_not_share_their_run_info(make_job):
    first, second = make_job(**a_failed_run()), make_job(**a_failed_run())
    first.requeue(from_={Status.FAILED})
    second.requeue(from_={Status.FAILED})

    first.run_info["note"] = "mine"

    assert second.run_info == {} and VideoGenerationJob.REQUEUE_RESETS["run_info"] == {}


def test_fail_records_the_code_the_message_and_when(make_job):
    job = make_job(status=Status.RUNNING)

    assert job.fail(ErrorCode.ENCODE, "Generation failed while writing the video", from_={Status.RUNNING},
                    run_info={"error_detail": "OSError: disk full"})

    job.refresh_from_db()
    assert (job.status, job.error_code, job.error_message) == (
        Status.FAILED, "encode", "Generation failed while writing the video"
    )
    assert job.completed_at is not None
    assert job.run_info == {"error_detail": "OSError: disk full"}


def test_fail_refuses_a_job_another_process_finished_first(make_job):
    job = make_job(status=Status.CANCELLED)

    assert not job.fail(ErrorCode.INTERNAL, "boom", from_={Status.PENDING, Status.RUNNING})

    job.refresh_from_db()
    assert (job.status, job.error_code) == (Status.CANCELLED, "")


def test_progress_is_not_written_once_a_job_has_left_running(make_job):
    job = make_job(status=Status.CANCELLED)

    job.set_progress(40)

    job.refresh_from_db()
    assert job.progress == 0


def test_the_table_keeps_the_original_name_and_columns():
    meta = VideoGenerationJob._meta
    assert meta.db_table == "video_generation_jobs"
    user_id = meta.get_field("user_id")
    assert (user_id.max_length, user_id.null) == (100, False)
    assert meta.get_field("video").column == "output_file_path"
    for column in ("submitted_at", "completed_at", "error_message", "file_size_bytes"):
        assert meta.get_field(column).column == column


def test_start_claims_a_pending_job_for_a_worker_from_a_fresh_run(make_job):
    now = timezone.now()
    job = make_job(progress=30, current_step=2, yield_requested_at=now, start_deadline_at=now + timedelta(hours=1))

    assert job.start(worker="w1", now=now)

    job.refresh_from_db()
    assert (job.status, job.worker, job.started_at, job.heartbeat_at) == (Status.RUNNING, "w1", now, now)
    assert {name: getattr(job, name) for name in job.RUN_RESETS} == job.RUN_RESETS
    assert job.start_deadline_at is None


def test_start_refuses_a_job_another_worker_claimed_first(make_job):
    job = make_job()
    stale_copy = VideoGenerationJob.objects.get(pk=job.pk)
    assert job.start(worker="w1", now=timezone.now())

    assert not stale_copy.start(worker="w2", now=timezone.now())

    job.refresh_from_db()
    assert job.worker == "w1"


def test_complete_records_the_files_and_a_full_run(make_job):
    job = make_job(status=Status.RUNNING, progress=80, current_step=3)

    assert job.complete(video="videos/a.mp4", poster="posters/a.jpg", preview="previews/a.webp",
                        from_={Status.RUNNING}, file_size_bytes=123)

    job.refresh_from_db()
    assert (job.status, job.video.name, job.poster.name, job.preview.name) == (
        Status.COMPLETED, "videos/a.mp4", "posters/a.jpg", "previews/a.webp"
    )
    assert (job.progress, job.current_step, job.file_size_bytes) == (100, job.num_inference_steps, 123)
    assert job.completed_at is not None


def test_complete_refuses_a_job_cancelled_meanwhile(make_job):
    job = make_job(status=Status.RUNNING)
    VideoGenerationJob.objects.filter(pk=job.pk).update(status=Status.CANCELLED)

    assert not job.complete(video="videos/a.mp4", poster="", preview="", from_={Status.RUNNING})

    job.refresh_from_db()
    assert (job.status, job.video.name) == (Status.CANCELLED, "")
