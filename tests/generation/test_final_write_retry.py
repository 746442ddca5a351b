"""
The final COMPLETED write after a database blip: retried, it may find that
its first try landed. The files are then the job's and must stay.
"""

from django.db import OperationalError

from generation import runner
from generation.tasks import generate_video
from jobs.models import Status, VideoGenerationJob
from tests.support.decode import decode_mp4


def test_a_completed_write_that_landed_before_the_connection_dropped_keeps_the_video(
    transactional_db, make_job, media_root, monkeypatch
):
    job = make_job()
    transition = VideoGenerationJob.transition
    dropped = []

    def lands_then_loses_the_answer(self, to, **kwargs):
        done = transition(self, to, **kwargs)
        if to == Status.COMPLETED and not dropped:
            # The UPDATE committed; the acknowledgement never arrived.
            dropped.append(done)
            raise OperationalError("server closed the connection unexpectedly")
        return done

    monkeypatch.setattr(VideoGenerationJob, "transition", lands_then_loses_the_answer)
    monkeypatch.setattr(runner.time, "sleep", lambda seconds: None)

    generate_video(str(job.id), job.user_id)

    assert dropped == [True]
    job.refresh_from_db()
    assert job.status == Status.COMPLETED
    for name in (job.video.name, job.poster.name, job.preview.name):
        assert (media_root / name).exists(), name
    assert decode_mp4(media_root / job.video.name)[1].shape[0] == job.num_frames


def test_a_job_cancelled_while_encoding_still_keeps_no_video(make_job, media_root, monkeypatch):
    job = make_job()
    store = runner._store_outputs

    def cancel_then_store(job_, frames):
        VideoGenerationJob.objects.filter(pk=job_.pk).update(status=Status.CANCELLED)
        return store(job_, frames)

    monkeypatch.setattr(runner, "_store_outputs", cancel_then_store)

    generate_video(str(job.id), job.user_id)

    job.refresh_from_db()
    assert job.status == Status.CANCELLED
    assert not list((media_root / "videos").iterdir())
