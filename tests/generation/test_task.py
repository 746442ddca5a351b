"""The django-q2 task run in this process: real pipeline, real MP4, real database."""

import json
import logging

import pytest
import torch
from django_q.exceptions import TimeoutException
from django_q.timeout import TimeoutHandler

from generation import pipelines
from generation.registry import get_spec
from generation.tasks import generate_video
from jobs.models import Status, VideoGenerationJob
from tests.support.decode import decode_mp4
from videogen.logformat import JsonFormatter, TextFormatter


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


def test_a_worker_asked_to_stop_hands_its_job_back_pending_with_nothing_of_the_run_left(make_job, monkeypatch):
    # What SIGTERM (or the qcluster's stop signal) sets in a worker process.
    monkeypatch.setattr("generation.worker._shutdown_requested", True)
    job = make_job(attempts=1)

    generate_video(str(job.id), job.user_id)

    job.refresh_from_db()
    assert (job.status, job.attempts) == (Status.PENDING, 1)
    assert {name: getattr(job, name) for name in job.REQUEUE_RESETS} == job.REQUEUE_RESETS


def test_a_task_delivered_twice_runs_the_job_once(make_job, media_root, caplog):
    job = make_job()
    with caplog.at_level(logging.INFO, logger="generation"):
        generate_video(str(job.id), job.user_id)
        job.refresh_from_db()
        video_bytes = (media_root / job.video.name).read_bytes()

        generate_video(str(job.id), job.user_id)

    again = VideoGenerationJob.objects.get(pk=job.pk)
    assert (again.status, again.attempts, again.video.name) == (Status.COMPLETED, 1, job.video.name)
    assert (media_root / job.video.name).read_bytes() == video_bytes
    assert sorted(p.name for p in (media_root / "videos").iterdir()) == [f"{job.id}.mp4"]
    assert caplog.text.count("running tiny-random") == 1
    # The second delivery is a wake-up that finds nothing left to claim.
    assert "nothing pending" in caplog.text


def test_a_job_another_worker_has_claimed_is_left_alone(make_job):
    job = make_job(status=Status.RUNNING, attempts=1)

    generate_video(str(job.id), job.user_id)

    job.refresh_from_db()
    assert (job.status, job.attempts, job.video.name) == (Status.RUNNING, 1, "")


def test_a_wake_up_for_a_missing_job_with_nothing_pending_is_logged_and_does_nothing(db, caplog):
    # Tasks name the job whose submit sent them, but only wake a worker up.
    with caplog.at_level(logging.INFO):
        generate_video("00000000-0000-0000-0000-000000000000", "alice")

    assert "nothing pending" in caplog.text
    assert not VideoGenerationJob.objects.exists()


def test_a_model_that_cannot_load_fails_the_job_with_a_readable_reason(make_job, monkeypatch, settings, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    settings.VIDEOGEN_MODEL_SOURCES = {"COGVIDEOX_2B": str(tmp_path / "no-weights-here")}
    job = make_job(model_name="cogvideox-2b")

    generate_video(str(job.id), job.user_id)

    job.refresh_from_db()
    assert job.status == Status.FAILED
    assert job.error_message.startswith("Generation failed: could not load model 'cogvideox-2b'")
    # The path is the operator's to see (the admin shows run_info whole), not the client's.
    assert "no-weights-here" not in job.error_message
    assert "no-weights-here" in job.run_info["error_detail"]
    assert job.completed_at is not None
    assert not job.video


def test_a_storage_failure_fails_the_job_and_leaves_no_file(make_job, media_root):
    media_root.mkdir(parents=True)
    (media_root / "videos").write_text("a file where the videos directory should be")
    job = make_job()

    generate_video(str(job.id), job.user_id)

    job.refresh_from_db()
    assert (job.status, job.error_code) == (Status.FAILED, "encode")
    assert job.error_message.startswith("Generation failed while writing the video")
    assert str(media_root) not in job.error_message
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

    # The adapter's lines (the engine, generation.pipelines, knows nothing of jobs).
    records = [record for record in caplog.records if record.name in ("generation.tasks", "generation.runner")]
    text, as_json = TextFormatter(), JsonFormatter()
    assert len(records) >= 3
    assert all(f'job={job.id} user_id="carol" ' in text.format(record) for record in records)
    assert all(
        {key: json.loads(as_json.format(record))[key] for key in ("job_id", "user_id")}
        == {"job_id": str(job.id), "user_id": "carol"}
        for record in records
    )
    assert {json.loads(as_json.format(record))["model"] for record in records if record.name == "generation.runner"} == {
        "tiny-random"
    }


def test_a_completed_job_records_how_it_was_made_and_keeps_a_preview(make_job, media_root):
    from PIL import Image

    job = make_job(num_frames=9, num_inference_steps=3)

    generate_video(str(job.id), job.user_id)

    job.refresh_from_db()
    assert job.current_step == 3
    assert job.run_info["model"] == "tiny-random"
    assert (job.run_info["dtype"], job.run_info["device"]) == ("float32", "cpu")
    assert job.run_info["versions"]["diffusers"]
    with Image.open(media_root / job.preview.name) as preview:
        assert preview.format == "WEBP"
        assert preview.n_frames == 9


def test_a_wan_job_ends_completed_with_the_frames_asked_for(make_job, media_root, settings):
    settings.VIDEOGEN_MODELS = ["tiny-random", "tiny-random-wan"]
    job = make_job(model_name="tiny-random-wan", num_frames=6, width=64, height=32, fps=10)

    generate_video(str(job.id), job.user_id)

    job.refresh_from_db()
    assert job.status == Status.COMPLETED, job.error_message
    meta, frames = decode_mp4(media_root / job.video.name)
    assert (frames.shape, meta["fps"]) == ((6, 32, 64, 3), 10)
    assert job.run_info["pipeline"] == "WanPipeline"


def test_out_of_memory_fails_the_job_with_its_class_and_the_engines_message(make_job):
    # That the pipeline keeps serving after it: tests/generation/test_engine.py.
    pipeline = pipelines.load_pipeline(get_spec("tiny-random"))

    def run_out_of_memory(module, args, kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 12.50 GiB.")

    hook = pipeline.transformer.register_forward_pre_hook(run_out_of_memory, with_kwargs=True)
    big = make_job()
    try:
        generate_video(str(big.id), big.user_id)
    finally:
        hook.remove()

    big.refresh_from_db()
    assert (big.status, big.error_code, big.attempts) == (Status.FAILED, "out_of_memory", 1)
    assert "Tried to allocate 12.50 GiB" in big.error_message
    assert "9 frames at 64x64" in big.error_message
    assert big.completed_at is not None and not big.video


def test_a_job_cancelled_while_it_runs_stops_at_the_next_step_and_keeps_no_video(make_job, media_root, settings):
    settings.VIDEOGEN_PROGRESS_INTERVAL = 0
    job = make_job(num_inference_steps=30)
    steps_run = []
    real_set_progress = VideoGenerationJob.set_progress

    def cancel_at_step_three(self, value, **fields):
        steps_run.append(fields["current_step"])
        if fields["current_step"] == 3:
            VideoGenerationJob.objects.filter(pk=self.pk).update(status=Status.CANCELLED)
        return real_set_progress(self, value, **fields)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(VideoGenerationJob, "set_progress", cancel_at_step_three)
        generate_video(str(job.id), job.user_id)

    job.refresh_from_db()
    assert job.status == Status.CANCELLED
    assert steps_run == [1, 2, 3]
    assert not job.video
    assert not (media_root / "videos").exists()


def test_a_worker_whose_job_was_given_to_another_stops_and_leaves_it_alone(make_job, media_root, settings):
    settings.VIDEOGEN_PROGRESS_INTERVAL = 0
    job = make_job(num_inference_steps=30)
    real_set_progress = VideoGenerationJob.set_progress

    def taken_over_at_step_three(self, value, **fields):
        if fields["current_step"] == 3:
            # The reaper thought this worker dead and another worker claimed the job.
            VideoGenerationJob.objects.filter(pk=self.pk).update(worker="elsewhere:1")
        return real_set_progress(self, value, **fields)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(VideoGenerationJob, "set_progress", taken_over_at_step_three)
        generate_video(str(job.id), job.user_id)

    job.refresh_from_db()
    assert (job.status, job.worker, job.current_step) == (Status.RUNNING, "elsewhere:1", 2)
    assert not (media_root / "videos").exists()
