"""
Image jobs through a real qcluster and the real tiny pipelines: image to
video, first and last frame, and an extend whose MP4 is its source followed
by the new frames, each decoded back from the stored MP4.
"""

import base64

import numpy as np
import pytest
from django.core.files.storage import default_storage

from jobs.models import ErrorCode, Mode, Status, VideoGenerationJob
from tests.support.cluster import running_qcluster, wait_until_finished
from tests.support.decode import decode_mp4
from tests.support.images import FLF, I2V, png

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SMALL = {"width": 64, "height": 64, "num_inference_steps": 2, "fps": 8}
MODELS = f"tiny-random,{I2V},{FLF}"


@pytest.fixture(autouse=True)
def image_models(settings):
    settings.VIDEOGEN_MODELS = MODELS.split(",")


def submitted(api, **fields) -> VideoGenerationJob:
    response = api.post("/api/v1/generate", {"user_id": "alice", "prompt": "a cat", **fields}, format="json")
    assert response.status_code == 202, response.json()
    return VideoGenerationJob.objects.get(pk=response.json()["job_id"])


def data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def stored_frames(job: VideoGenerationJob) -> np.ndarray:
    _, frames = decode_mp4(default_storage.path(job.video.name))
    return frames


def test_image_and_first_last_frame_jobs_make_videos_of_the_frames_asked_for(api, tmp_path, media_root):
    image_job = submitted(api, model=I2V, image=data_uri(png(seed=1)), num_frames=9, image_fit="pad", **SMALL)
    flf_job = submitted(api, model=FLF, image=data_uri(png(seed=1)), last_image=data_uri(png(seed=2)), num_frames=5,
                        **SMALL)

    with running_qcluster(tmp_path / "q.log", media_root, VIDEOGEN_MODELS=MODELS) as cluster:
        wait_until_finished([image_job, flf_job], cluster)

    for job, frames in ((image_job, 9), (flf_job, 5)):
        job.refresh_from_db()
        assert job.status == Status.COMPLETED, job.error_message
        assert stored_frames(job).shape == (frames, 64, 64, 3)
    assert (image_job.mode, flf_job.mode) == (Mode.IMAGE_TO_VIDEO, Mode.FIRST_LAST_FRAME)
    # Logs carry the mode.
    assert f"running {I2V} image-to-video:" in (tmp_path / "q.log").read_text()


def test_an_extend_is_its_source_video_then_the_new_frames(api, tmp_path, media_root):
    source = submitted(api, model=I2V, image=data_uri(png(seed=1)), num_frames=9, **SMALL)
    with running_qcluster(tmp_path / "q.log", media_root, VIDEOGEN_MODELS=MODELS) as cluster:
        wait_until_finished([source], cluster)
        source.refresh_from_db()
        assert source.status == Status.COMPLETED, source.error_message
        extend = submitted(api, extend_job_id=str(source.id), num_frames=4, num_inference_steps=2)
        wait_until_finished([extend], cluster)

    extend.refresh_from_db()
    assert extend.status == Status.COMPLETED, extend.error_message
    before, after = stored_frames(source), stored_frames(extend)
    assert after.shape == (9 + 4, 64, 64, 3)
    # The source's frames come first, re-encoded once more (H.264 is lossy, so close, not equal).
    assert np.abs(after[:9].astype(int) - before.astype(int)).mean() < 8
    assert extend.video_duration_seconds == pytest.approx(13 / 8)


def test_an_extend_whose_source_was_deleted_meanwhile_fails_saying_so(api, make_completed_job, tmp_path, media_root):
    source = make_completed_job(model_name=I2V, width=64, height=64, num_frames=9, fps=8)
    extend = submitted(api, extend_job_id=str(source.id), num_frames=4, num_inference_steps=2)
    assert api.delete(f"/api/v1/job/{source.id}?user_id=alice").status_code == 204

    with running_qcluster(tmp_path / "q.log", media_root, VIDEOGEN_MODELS=MODELS) as cluster:
        wait_until_finished([extend], cluster)

    extend.refresh_from_db()
    assert (extend.status, extend.error_code) == (Status.FAILED, ErrorCode.INVALID_INPUT)
    assert "extend_job_id" in extend.error_message and "no longer stored" in extend.error_message
