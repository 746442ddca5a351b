"""The django-q2 task run in this process: real pipeline, real MP4, real database."""

import logging

import pytest
from django_q.exceptions import TimeoutException
from django_q.timeout import TimeoutHandler

from generation import pipelines
from generation.registry import get_spec
from generation.tasks import generate_video
from jobs.models import Status, VideoGenerationJob
from tests.decode import decode_mp4


def test_a_job_ends_completed_with_a_decodable_mp4_of_the_requested_shape(make_job, media_root):
    job = make_job(num_frames=6, width=64, height=48, fps=8)

    generate_video(str(job.id), job.user_id)

    job.refresh_from_db()
    assert job.status == Status.COMPLETED
    assert (job.progress, job.attempts, job.error_message) == (100, 1, "")
    assert job.started_at <= job.completed_at
    meta, frames = decode_mp4(media_root / job.video.name)
    assert frames.shape == (6, 48, 64, 3)
    assert meta["fps"] == 8
    assert job.file_size_bytes == (media_root / job.video.name).stat().st_size
    assert job.video_duration_seconds == 6 / 8
    assert (media_root / job.poster.name).read_bytes()[:3] == b"\xff\xd8\xff"


def test_progress_is_written_while_denoising_but_not_once_per_step(make_job, settings, monkeypatch):
    settings.VIDEOGEN_PROGRESS_INTERVAL = 3600
    job = make_job(num_inference_steps=12)
    written = []
    real_set_progress = VideoGenerationJob.set_progress
    monkeypatch.setattr(
        VideoGenerationJob,
        "set_progress",
        lambda self, value, **fields: written.append(value) or real_set_progress(self, value, **fields),
    )

    generate_video(str(job.id), job.user_id)

    # The first step and the last (90: denoising done), nothing between.
    assert written == [7, 90]


def test_a_second_delivery_of_a_finished_job_does_nothing(make_job, media_root):
    job = make_job()
    generate_video(str(job.id), job.user_id)
    job.refresh_from_db()
    video_bytes = (media_root / job.video.name).read_bytes()

    generate_video(str(job.id), job.user_id)

    again = VideoGenerationJob.objects.get(pk=job.pk)
    assert (again.status, again.attempts, again.video.name) == (Status.COMPLETED, 1, job.video.name)
    assert (media_root / job.video.name).read_bytes() == video_bytes
    assert sorted(p.name for p in (media_root / "videos").iterdir()) == [f"{job.id}.mp4"]


def test_a_job_another_worker_has_claimed_is_left_alone(make_job):
    job = make_job(status=Status.RUNNING, attempts=1)

    generate_video(str(job.id), job.user_id)

    job.refresh_from_db()
    assert (job.status, job.attempts, job.video.name) == (Status.RUNNING, 1, "")


def test_a_cancelled_job_is_not_run(make_job):
    job = make_job(status=Status.CANCELLED)

    generate_video(str(job.id), job.user_id)

    job.refresh_from_db()
    assert (job.status, job.started_at) == (Status.CANCELLED, None)


def test_a_missing_job_is_logged_and_skipped(db, caplog):
    with caplog.at_level(logging.INFO):
        generate_video("00000000-0000-0000-0000-000000000000", "alice")

    assert "no such job" in caplog.text


def test_a_model_that_cannot_load_fails_the_job_with_a_readable_reason(make_job, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("VIDEOGEN_MODEL_SOURCE_COGVIDEOX_2B", str(tmp_path / "no-weights-here"))
    job = make_job(model_name="cogvideox-2b")

    generate_video(str(job.id), job.user_id)

    job.refresh_from_db()
    assert job.status == Status.FAILED
    assert job.error_message.startswith("Generation failed: could not load model 'cogvideox-2b'")
    assert "no-weights-here" in job.error_message
    assert job.completed_at is not None
    assert not job.video


def test_a_storage_failure_fails_the_job_and_leaves_no_file(make_job, media_root):
    media_root.mkdir(parents=True)
    (media_root / "videos").write_text("a file where the videos directory should be")
    job = make_job()

    generate_video(str(job.id), job.user_id)

    job.refresh_from_db()
    assert (job.status, job.error_code) == (Status.FAILED, "encode")
    assert job.error_message.startswith("Generation failed while writing the video:")
    assert not (media_root / "posters").exists() or list((media_root / "posters").iterdir()) == []


def test_django_q2s_timeout_fails_the_job_instead_of_leaving_it_running(make_job):
    # Far longer than a second, so the real SIGALRM of django-q2's TimeoutHandler lands mid-job.
    job = make_job(width=256, height=256, num_frames=49, num_inference_steps=200)
    pipelines.load_pipeline(get_spec("tiny-random"))

    with pytest.raises(TimeoutException), TimeoutHandler(1):
        generate_video(str(job.id), job.user_id)

    job.refresh_from_db()
    assert job.status == Status.FAILED
    assert job.error_message.startswith("Generation timed out")
    assert job.started_at is not None and job.completed_at is not None


def test_every_log_line_of_a_generation_carries_job_and_user(make_job, caplog):
    job = make_job(user_id="carol")

    with caplog.at_level(logging.INFO, logger="generation"):
        generate_video(str(job.id), job.user_id)

    lines = [record.getMessage() for record in caplog.records if record.name.startswith("generation")]
    assert len(lines) >= 3
    assert all(f"job={job.id}" in line and "user_id=carol" in line for line in lines)
