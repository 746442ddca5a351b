"""
Checkpoints of jobs run by the django-q2 task in this process: saved through
the job's storage, resumed from after a hand-back with the uninterrupted
run's frames, discarded with a reason when unusable, and removed when the
job ends, is cancelled, deleted or expires. Real pipeline, MP4s, database.
"""

import io
import itertools
import os
from datetime import timedelta

import numpy as np
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.utils import timezone
from PIL import Image

from generation.denoise import state_from_bytes
from generation.tasks import generate_video
from jobs.services.checkpoints import checkpoint_name
from jobs.services.files import put_replacing
from jobs.services.lifecycle import job_cancel, job_delete
from jobs.models import Status, VideoGenerationJob
from jobs.services.recovery import reap_lost_jobs
from jobs.services.retention import expire_outputs
from tests.support.decode import decode_mp4
from videogen.settings import envseconds_or_off

STEPS = 6


@pytest.fixture
def checkpoints_every_step(settings):
    settings.VIDEOGEN_CHECKPOINT_SECONDS = 0.0
    settings.VIDEOGEN_PROGRESS_INTERVAL = 0


def stop_after_step(monkeypatch, step: int) -> None:
    """The worker is asked to stop (as SIGTERM asks it) while the job is at `step`."""
    calls = itertools.count(1)
    monkeypatch.setattr("generation.runner.should_yield", lambda: next(calls) >= step)


def run(job) -> VideoGenerationJob:
    generate_video(str(job.id), job.user_id)
    job.refresh_from_db()
    return job


def frames_of(job, media_root) -> np.ndarray:
    return decode_mp4(media_root / job.video.name)[1]


def test_a_handed_back_job_keeps_the_state_of_the_step_it_stopped_at(make_job, media_root, monkeypatch, settings):
    settings.VIDEOGEN_CHECKPOINT_SECONDS = 3600.0
    job = make_job(num_inference_steps=STEPS)
    with monkeypatch.context() as patch:
        stop_after_step(patch, 3)
        run(job)

    assert (job.status, job.attempts, job.checkpoint.name, job.checkpoint_step) == (
        Status.PENDING, 1, f"checkpoints/{job.id}.pt", 3
    )
    state = state_from_bytes((media_root / job.checkpoint.name).read_bytes())
    assert state["step"] == 3
    assert state["identity"]["model"]["name"] == "tiny-random"


@pytest.mark.parametrize("model", ["tiny-random", "tiny-random-wan"])
def test_a_handed_back_job_resumes_and_its_video_equals_an_uninterrupted_runs(
    model, make_job, media_root, monkeypatch, settings
):
    settings.VIDEOGEN_CHECKPOINT_SECONDS = 3600.0
    uninterrupted = run(make_job(model_name=model, num_inference_steps=STEPS, seed=7))
    job = make_job(model_name=model, num_inference_steps=STEPS, seed=7)
    with monkeypatch.context() as patch:
        stop_after_step(patch, 4)
        run(job)

    run(job)

    assert job.status == Status.COMPLETED
    assert job.run_info["resumed_from_step"] == 4
    assert "checkpoint_discarded" not in job.run_info
    assert np.array_equal(frames_of(job, media_root), frames_of(uninterrupted, media_root))
    assert (media_root / job.video.name).read_bytes() == (media_root / uninterrupted.video.name).read_bytes()
    assert (job.checkpoint.name, job.checkpoint_step) == ("", 0)
    assert not (media_root / checkpoint_name(job)).exists()


def test_an_image_job_resumes_with_the_uninterrupted_runs_frames(make_job, media_root, monkeypatch, settings):
    settings.VIDEOGEN_CHECKPOINT_SECONDS = 3600.0
    picture = Image.fromarray(np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    stored = default_storage.save("inputs/first.png", ContentFile(buffer.getvalue()))

    def image_job():
        return make_job(model_name="tiny-random-i2v", mode="image-to-video", image=stored, num_inference_steps=STEPS,
                        seed=9)

    uninterrupted = run(image_job())
    job = image_job()
    with monkeypatch.context() as patch:
        stop_after_step(patch, 2)
        run(job)
    run(job)

    assert (job.status, job.run_info["resumed_from_step"]) == (Status.COMPLETED, 2)
    assert np.array_equal(frames_of(job, media_root), frames_of(uninterrupted, media_root))


def test_a_running_job_saves_checkpoints_and_removes_the_last_when_it_completes(
    make_job, media_root, checkpoints_every_step
):
    job = make_job(num_inference_steps=STEPS)
    seen = []
    real_update = VideoGenerationJob.set_progress

    def watch(self, value, **fields):
        path = media_root / checkpoint_name(job)
        seen.append(path.exists())
        return real_update(self, value, **fields)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(VideoGenerationJob, "set_progress", watch)
        run(job)

    assert job.status == Status.COMPLETED
    # Saved after each step but the last, before progress is written.
    assert seen[1:STEPS - 1] == [True] * (STEPS - 2)
    assert (job.checkpoint.name, job.checkpoint_step) == ("", 0)
    assert list((media_root / "checkpoints").iterdir()) == []


@pytest.mark.parametrize(
    "stored,reason",
    [
        (b"garbage, not a checkpoint", "unreadable"),
        (None, "could not be read"),
    ],
    ids=["corrupt", "missing"],
)
def test_an_unusable_checkpoint_is_not_fatal_the_job_starts_over_and_says_why(
    stored, reason, make_job, media_root, settings
):
    settings.VIDEOGEN_CHECKPOINT_SECONDS = 3600.0
    uninterrupted = run(make_job(num_inference_steps=STEPS))
    job = make_job(num_inference_steps=STEPS)
    VideoGenerationJob.objects.filter(pk=job.pk).update(checkpoint=checkpoint_name(job), checkpoint_step=3)
    if stored is not None:
        put_replacing(checkpoint_name(job), stored)
    job.refresh_from_db()

    run(job)

    assert job.status == Status.COMPLETED
    assert reason in job.run_info["checkpoint_discarded"]
    assert "resumed_from_step" not in job.run_info
    assert np.array_equal(frames_of(job, media_root), frames_of(uninterrupted, media_root))
    assert not (media_root / checkpoint_name(job)).exists()


def test_a_checkpoint_of_another_job_with_other_parameters_starts_over(make_job, media_root, monkeypatch, settings):
    settings.VIDEOGEN_CHECKPOINT_SECONDS = 3600.0
    other = make_job(num_inference_steps=STEPS, seed=1)
    with monkeypatch.context() as patch:
        stop_after_step(patch, 2)
        run(other)
    saved = (media_root / other.checkpoint.name).read_bytes()
    # Out of the queue, so the next claim is the job below.
    job_cancel(other)
    job = make_job(num_inference_steps=STEPS, seed=2)
    put_replacing(checkpoint_name(job), saved)
    VideoGenerationJob.objects.filter(pk=job.pk).update(checkpoint=checkpoint_name(job))
    job.refresh_from_db()

    run(job)

    assert job.run_info["checkpoint_discarded"] == "made for other parameters or input images"


def test_with_checkpoints_off_a_hand_back_saves_nothing_and_a_stored_one_is_ignored(
    make_job, media_root, monkeypatch, settings
):
    settings.VIDEOGEN_CHECKPOINT_SECONDS = None
    job = make_job(num_inference_steps=STEPS)
    with monkeypatch.context() as patch:
        stop_after_step(patch, 2)
        run(job)

    assert (job.status, job.checkpoint.name) == (Status.PENDING, "")
    assert not (media_root / "checkpoints").exists()


def handed_back(make_job, monkeypatch, **fields) -> VideoGenerationJob:
    job = make_job(num_inference_steps=STEPS, **fields)
    with monkeypatch.context() as patch:
        stop_after_step(patch, 2)
        run(job)
    assert job.checkpoint
    return job


def test_cancelling_a_waiting_job_removes_its_checkpoint(make_job, media_root, monkeypatch, settings):
    settings.VIDEOGEN_CHECKPOINT_SECONDS = 3600.0
    job = handed_back(make_job, monkeypatch)

    assert job_cancel(job)

    job.refresh_from_db()
    assert (job.status, job.checkpoint.name) == (Status.CANCELLED, "")
    assert not (media_root / checkpoint_name(job)).exists()


def test_deleting_a_job_removes_its_checkpoint(make_job, media_root, monkeypatch, settings):
    settings.VIDEOGEN_CHECKPOINT_SECONDS = 3600.0
    job = handed_back(make_job, monkeypatch)

    job_delete(job)

    assert not VideoGenerationJob.objects.filter(pk=job.pk).exists()
    assert not (media_root / checkpoint_name(job)).exists()


def test_retention_removes_a_checkpoint_left_on_a_finished_job(make_job, media_root, settings):
    settings.VIDEOGEN_RETENTION_DAYS = 1
    job = make_job(status=Status.FAILED, completed_at=timezone.now() - timedelta(days=2))
    put_replacing(checkpoint_name(job), b"left behind by a storage outage")
    VideoGenerationJob.objects.filter(pk=job.pk).update(checkpoint=checkpoint_name(job))

    assert [expired.pk for expired in expire_outputs()] == [job.pk]

    job.refresh_from_db()
    assert job.checkpoint.name == ""
    assert not (media_root / checkpoint_name(job)).exists()


def test_a_save_replaces_the_last_in_one_rename_and_leaves_no_temporary_file(media_root):
    put_replacing("checkpoints/x.pt", b"first")
    put_replacing("checkpoints/x.pt", b"second")

    assert (media_root / "checkpoints/x.pt").read_bytes() == b"second"
    assert os.listdir(media_root / "checkpoints") == ["x.pt"]


@pytest.mark.parametrize("raw,value", [("", 60.0), ("off", None), ("OFF", None), ("0.5", 0.5), ("0", 0.0)])
def test_the_checkpoint_interval_setting(raw, value, monkeypatch):
    monkeypatch.setenv("VIDEOGEN_CHECKPOINT_SECONDS", raw)

    assert envseconds_or_off("VIDEOGEN_CHECKPOINT_SECONDS", 60.0) == value


@pytest.mark.parametrize("raw", ["soon", "-1"])
def test_a_bad_checkpoint_interval_is_refused_naming_the_setting(raw, monkeypatch):
    monkeypatch.setenv("VIDEOGEN_CHECKPOINT_SECONDS", raw)

    with pytest.raises(ImproperlyConfigured, match="VIDEOGEN_CHECKPOINT_SECONDS"):
        envseconds_or_off("VIDEOGEN_CHECKPOINT_SECONDS", 60.0)


def lost(make_job, attempts: int) -> VideoGenerationJob:
    """A running job whose worker on another host stopped beating, with a stored checkpoint."""
    job = make_job(status=Status.RUNNING, worker="some-other-host:4242", attempts=attempts,
                   heartbeat_at=timezone.now() - timedelta(hours=1))
    put_replacing(checkpoint_name(job), b"a state")
    VideoGenerationJob.objects.filter(pk=job.pk).update(checkpoint=checkpoint_name(job), checkpoint_step=4)
    return job


def test_a_lost_job_is_requeued_with_its_checkpoint(make_job, media_root, settings):
    settings.VIDEOGEN_MAX_ATTEMPTS = 2
    job = lost(make_job, attempts=1)

    assert reap_lost_jobs()["requeued"] == 1

    job.refresh_from_db()
    assert (job.status, job.checkpoint.name, job.checkpoint_step) == (Status.PENDING, checkpoint_name(job), 4)
    assert (media_root / checkpoint_name(job)).exists()


def test_a_lost_job_failed_as_worker_lost_loses_its_checkpoint(make_job, media_root, settings):
    settings.VIDEOGEN_MAX_ATTEMPTS = 2
    job = lost(make_job, attempts=2)

    assert reap_lost_jobs()["failed"] == 1

    job.refresh_from_db()
    assert (job.status, job.checkpoint.name) == (Status.FAILED, "")
    assert not (media_root / checkpoint_name(job)).exists()
