"""
Resume through real processes: a qcluster whose worker is SIGKILLed
mid-job, or which is stopped with SIGTERM, leaves a checkpoint; the job's
next run, in another worker process, goes on from it and its MP4 is the one
an uninterrupted run makes, frame for frame. On S3 too.
"""

import os
import re
import signal

import numpy as np
import pytest

from generation.denoise import state_from_bytes
from jobs.services.checkpoints import checkpoint_name
from jobs.services.lifecycle import job_enqueue
from jobs.models import Priority, Status, VideoGenerationJob
from tests.support.cluster import running_qcluster, running_worker_pid, wait_for, wait_until_finished
from tests.support.decode import decode_mp4
from tests.support.s3 import bucket, s3_server  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# About 0.1 s a step on this box, so a kill or stop lands with steps to come.
JOB = {"width": 256, "height": 256, "num_frames": 9, "num_inference_steps": 40, "seed": 17}


def submit(make_job, **fields) -> VideoGenerationJob:
    job = make_job(**{**JOB, **fields})
    job_enqueue(job)
    return job


def checkpointed(job: VideoGenerationJob, cluster, step: int) -> None:
    wait_for(
        lambda: VideoGenerationJob.objects.filter(pk=job.pk, status=Status.RUNNING, checkpoint_step__gte=step).exists(),
        f"a checkpoint after step {step}",
        cluster,
    )


def test_a_job_whose_worker_is_sigkilled_resumes_from_its_checkpoint_with_identical_frames(
    make_job, tmp_path, media_root
):
    with running_qcluster(
        tmp_path / "q.log", media_root, VIDEOGEN_CHECKPOINT_SECONDS="0.2", VIDEOGEN_MAX_ATTEMPTS="2"
    ) as cluster:
        job = submit(make_job)
        pid = running_worker_pid(job, cluster)
        checkpointed(job, cluster, 5)
        os.kill(pid, signal.SIGKILL)
        wait_until_finished([job], cluster)
        uninterrupted = submit(make_job)
        wait_until_finished([uninterrupted], cluster)

    job.refresh_from_db()
    uninterrupted.refresh_from_db()
    assert (job.status, job.attempts) == (Status.COMPLETED, 2), job.error_message
    assert job.run_info["resumed_from_step"] >= 5
    assert "resumed_from_step" not in uninterrupted.run_info
    assert np.array_equal(decode_mp4(media_root / job.video.name)[1], decode_mp4(media_root / uninterrupted.video.name)[1])
    assert (media_root / job.video.name).read_bytes() == (media_root / uninterrupted.video.name).read_bytes()
    assert (job.checkpoint.name, uninterrupted.checkpoint.name) == ("", "")
    assert list((media_root / "checkpoints").iterdir()) == []


def test_a_job_handed_back_on_sigterm_saves_its_step_and_resumes_from_it_on_another_cluster(
    make_job, tmp_path, media_root
):
    # No periodic saves: the checkpoint is the hand-back's own.
    with running_qcluster(tmp_path / "q.log", media_root, VIDEOGEN_CHECKPOINT_SECONDS="3600") as cluster:
        job = submit(make_job)
        running_worker_pid(job, cluster, after_step=3)
        cluster.process.send_signal(signal.SIGTERM)
        cluster.process.wait(timeout=30)

    # The last hand-back: a stopping cluster may claim the job again and hand it back a step later.
    stopped_at = int(re.findall(r"handed back after step (\d+) of 40", cluster.log)[-1])
    job.refresh_from_db()
    assert (job.status, job.attempts, job.checkpoint_step) == (Status.PENDING, 1, stopped_at)
    assert state_from_bytes((media_root / checkpoint_name(job)).read_bytes())["step"] == stopped_at

    with running_qcluster(tmp_path / "q2.log", media_root, VIDEOGEN_CHECKPOINT_SECONDS="3600") as restarted:
        wait_until_finished([job], restarted)
        uninterrupted = submit(make_job)
        wait_until_finished([uninterrupted], restarted)

    job.refresh_from_db()
    uninterrupted.refresh_from_db()
    assert (job.status, job.attempts, job.run_info["resumed_from_step"]) == (Status.COMPLETED, 1, stopped_at)
    assert (media_root / job.video.name).read_bytes() == (media_root / uninterrupted.video.name).read_bytes()
    assert not (media_root / checkpoint_name(job)).exists()


def test_checkpoints_on_s3_are_written_replaced_and_deleted(make_job, tmp_path, media_root, bucket):  # noqa: F811
    with running_qcluster(
        tmp_path / "q.log", media_root, VIDEOGEN_CHECKPOINT_SECONDS="0.2", **bucket.env
    ) as cluster:
        job = submit(make_job)
        key = checkpoint_name(job)
        checkpointed(job, cluster, 3)
        first = state_from_bytes(bucket.get(key))["step"]
        checkpointed(job, cluster, first + 3)
        cluster.process.send_signal(signal.SIGTERM)
        cluster.process.wait(timeout=30)

    # The last hand-back: a stopping cluster may claim the job again and hand it back a step later.
    stopped_at = int(re.findall(r"handed back after step (\d+) of 40", cluster.log)[-1])
    # One object under one key, replaced by each save: the last is the hand-back's.
    assert [name for name in bucket.keys() if name.startswith("checkpoints/")] == [key]
    assert state_from_bytes(bucket.get(key))["step"] == stopped_at > first
    assert bucket.multipart_uploads() == []

    with running_qcluster(tmp_path / "q2.log", media_root, VIDEOGEN_CHECKPOINT_SECONDS="0.2", **bucket.env) as again:
        wait_until_finished([job], again)

    job.refresh_from_db()
    assert (job.status, job.run_info["resumed_from_step"]) == (Status.COMPLETED, stopped_at)
    assert key not in bucket.keys()
    assert sorted(bucket.keys()) == sorted([job.video.name, job.poster.name, job.preview.name])


def test_a_high_job_preempts_a_low_one_on_a_one_worker_cluster_and_both_complete(make_job, tmp_path, media_root):
    with running_qcluster(
        tmp_path / "q.log", media_root, VIDEOGEN_CHECKPOINT_SECONDS="3600", VIDEOGEN_PREEMPT_AFTER="0",
        VIDEOGEN_HEARTBEAT_INTERVAL="0.2",
    ) as cluster:
        # Steps to spare on a fast box: a high job waits for the next heartbeat, then for the next step.
        low = submit(make_job, priority=Priority.LOW, num_inference_steps=200)
        running_worker_pid(low, cluster, after_step=3)
        high = submit(make_job, user_id="bob", priority=Priority.HIGH)
        wait_until_finished([high, low], cluster)

    low.refresh_from_db()
    high.refresh_from_db()
    assert (high.status, low.status) == (Status.COMPLETED, Status.COMPLETED), (high.error_message, low.error_message)
    # The high job ran while the low one waited, its place kept and no attempt counted.
    assert high.completed_at < low.completed_at
    assert (low.attempts, low.preemptions, low.run_info["preemptions"]) == (1, 1, 1)
    yielded_at = int(re.findall(r"preempted by a high-priority job: handed back after step (\d+) of 200", cluster.log)[0])
    assert low.run_info["resumed_from_step"] == yielded_at >= 3
    assert not (media_root / checkpoint_name(low)).exists()
