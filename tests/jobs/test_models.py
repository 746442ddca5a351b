from django.db.models import F

from jobs.models import Status, VideoGenerationJob


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
