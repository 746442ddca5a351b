"""
A worker killed between storing a job's files in the bucket and the job's
final write leaves no object behind: the files an attempt writes are
recorded before it writes them, and the reaper removes those of any
attempt that did not complete, never a completed job's own.
"""

import os
import signal

import pytest

from jobs.models import PendingFile, Status, VideoGenerationJob
from jobs.services.recovery import parse_worker_name, sweep_unfinished_files
from tests.support.cluster import running_qcluster, wait_for, wait_until_finished
from tests.support.jobs import FAST_JOB, gradient_frames
from tests.support.s3 import bucket, s3_server  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.broker, pytest.mark.django_db(transaction=True)]


def own_keys(job: VideoGenerationJob) -> list[str]:
    job.refresh_from_db()
    return sorted([job.video.name, job.poster.name, job.preview.name])


@pytest.mark.slow
@pytest.mark.parametrize("attempts", [2, 1], ids=["completed on a second attempt", "failed as worker_lost"])
def test_a_worker_killed_after_storing_leaves_no_orphaned_object(api, bucket, tmp_path, media_root, attempts):
    pause = tmp_path / "pause"
    pause.touch()
    with running_qcluster(tmp_path / "q.log", media_root, **bucket.env, VIDEOGEN_MAX_ATTEMPTS=str(attempts),
                          VIDEOGEN_TEST_PAUSE_AFTER_STORING=str(pause), VIDEOGEN_REAPER_INTERVAL="1") as cluster:
        response = api.post("/api/v1/generate", {"user_id": "a", "prompt": "a fox", **FAST_JOB}, format="json")
        job = VideoGenerationJob.objects.get(pk=response.json()["job_id"])
        wait_for(lambda: "paused after storing" in cluster.log, "the worker to store the files", cluster)
        first_run = bucket.keys()
        assert len(first_run) == 3, first_run

        job.refresh_from_db()
        os.kill(parse_worker_name(job.worker)[1], signal.SIGKILL)
        pause.unlink()
        wait_until_finished([job], cluster)
        job.refresh_from_db()
        expected = own_keys(job) if job.status == Status.COMPLETED else []
        wait_for(lambda: bucket.keys() == expected, f"the bucket to hold only {expected}", cluster, timeout=30)

    assert job.status == (Status.COMPLETED if attempts == 2 else Status.FAILED), job.error_message
    # The first run's three objects were removed (the second run may then reuse their names).
    assert cluster.log.count("left by an unfinished attempt") == 3, cluster.log[-3000:]
    assert PendingFile.objects.count() == 0


def test_the_sweep_keeps_a_completed_jobs_files_and_a_running_attempts(make_job, bucket):
    from generation.runner import _store_outputs

    done, running = make_job(), make_job()
    frames = gradient_frames(done.num_frames, done.height, done.width)
    VideoGenerationJob.objects.filter(pk=running.pk).update(status=Status.RUNNING, worker="h:1 slot 0 cpu")
    running.refresh_from_db()
    running_files, _ = _store_outputs(running, frames)
    done_files, _ = _store_outputs(done, frames)
    # Killed after its completing write, before it forgot its records.
    VideoGenerationJob.objects.filter(pk=done.pk).update(
        status=Status.COMPLETED, video=done_files[0], poster=done_files[1], preview=done_files[2])

    assert sweep_unfinished_files() == 0

    assert bucket.keys() == sorted(running_files + done_files)
    assert sorted(PendingFile.objects.values_list("name", flat=True)) == sorted(running_files)
