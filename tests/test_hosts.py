"""
Several hosts, as a fleet runs (tests/support/hosts.py): host A serves the API on
gunicorn, hosts B and C run one qcluster worker each, each in its own
directory with its own data dir and VIDEOGEN_WORKER_HOST, sharing only
PostgreSQL, Redis and an S3 server (moto). The heartbeat timeout is 10 s
here (60 s by default) so that a lost host's job is found quickly.
"""

import os
from contextlib import ExitStack

import pytest
import requests
from django.conf import settings

from jobs.models import FINISHED, Status, VideoGenerationJob
from jobs.services.recovery import parse_worker_name
from tests.support.cluster import test_database_url
from tests.support.jobs import FAST_JOB
from tests.support.decode import decode_mp4
from tests.support.hosts import LONG_JOB, ApiHost, WorkerHost, completions, expected_objects, worker_env
from tests.support.processes import wait_until
from tests.support.s3 import new_bucket, s3_server  # noqa: F401 (a fixture)

pytestmark = [
    pytest.mark.broker,
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")),
        reason="several hosts share a PostgreSQL server (set DATABASE_URL)",
    ),
    pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="several hosts share a Redis broker (set REDIS_URL)"),
    pytest.mark.django_db(transaction=True),
]

# "Within about two minutes" of the host being lost, with the 10 s heartbeat timeout.
RECOVERY_TIMEOUT = 120


class Fleet:
    def __init__(self, root, bucket, stack: ExitStack):
        self.bucket = bucket
        shared = {
            "DATABASE_URL": test_database_url(),
            "REDIS_URL": settings.REDIS_URL,
            "VIDEOGEN_QUEUE_NAME": settings.Q_CLUSTER["name"],
            "VIDEOGEN_SECRET_KEY": "the-fleet-shares-this-secret-key",
            **bucket.env,
        }
        self.a = ApiHost("host-a", root / "a", shared)
        self.b = WorkerHost("host-b", root / "b", shared, **worker_env())
        self.c = WorkerHost("host-c", root / "c", shared, **worker_env())
        for host in (self.a, self.b, self.c):
            stack.callback(host.stop)
        self.a.start()

    @property
    def hosts(self):
        return (self.a, self.b, self.c)

    def logs(self) -> str:
        return "\n".join(f"--- {host.name}\n{host.log[-3000:]}" for host in self.hosts)

    def wait_for(self, condition, what: str, timeout: float = RECOVERY_TIMEOUT):
        return wait_until(condition, what, timeout=timeout, details=self.logs)

    def wait_finished(self, job_ids, timeout: float = RECOVERY_TIMEOUT) -> list[VideoGenerationJob]:
        self.wait_for(
            lambda: VideoGenerationJob.objects.filter(pk__in=job_ids, status__in=FINISHED).count() == len(job_ids),
            f"{len(job_ids)} jobs to finish", timeout,
        )
        return list(VideoGenerationJob.objects.filter(pk__in=job_ids))

    def running_on(self, job_id: str, host: str, after_step: int = 1) -> bool:
        row = VideoGenerationJob.objects.get(pk=job_id)
        parsed = parse_worker_name(row.worker)
        return row.status == Status.RUNNING and row.current_step >= after_step and bool(parsed) and parsed[0] == host

    def assert_each_ran_once_and_left_nothing_behind(self, job_ids) -> None:
        # A worker logs "completed in" after the row's write (and its checkpoint's removal): wait for the lines.
        self.wait_for(lambda: all(completions(*self.hosts)[job_id] for job_id in job_ids), "the completions' log lines",
                      timeout=30)
        counts = completions(*self.hosts)
        assert {job_id: counts[job_id] for job_id in job_ids} == {job_id: 1 for job_id in job_ids}
        assert self.bucket.keys() == expected_objects(job_ids)
        assert self.bucket.multipart_uploads() == []
        for host in self.hosts:
            assert host.files() == [], f"{host.name} wrote to its own disk"


@pytest.fixture
def fleet(tmp_path, s3_server):  # noqa: F811 (the fixture imported above)
    with ExitStack() as stack:
        yield Fleet(tmp_path, new_bucket(s3_server), stack)


def worker_host(job: VideoGenerationJob) -> str:
    return parse_worker_name(job.worker)[0]


def test_a_job_run_on_host_b_downloads_from_host_a(fleet, tmp_path):
    fleet.b.start()
    job_id = fleet.a.submit(user_id="alice", prompt="a lighthouse", seed=7, **FAST_JOB)

    [job] = fleet.wait_finished([job_id])

    assert (job.status, worker_host(job), job.attempts) == (Status.COMPLETED, "host-b", 1), fleet.logs()
    assert fleet.a.job(job_id, "alice")["status"] == "completed"
    status, headers, _ = fleet.a.request("GET", f"/api/v1/download/{job_id}?user_id=alice")
    assert status == 302
    video = requests.get(headers["Location"], timeout=30)
    assert video.status_code == 200 and len(video.content) == job.file_size_bytes
    (tmp_path / "check.mp4").write_bytes(video.content)
    meta, frames = decode_mp4(tmp_path / "check.mp4")
    assert frames.shape == (FAST_JOB["num_frames"], FAST_JOB["height"], FAST_JOB["width"], 3)
    assert meta["fps"] == FAST_JOB["fps"]
    # Another user gets the same 404 as a job that does not exist.
    assert fleet.a.request("GET", f"/api/v1/download/{job_id}?user_id=bob")[0] == 404
    fleet.assert_each_ran_once_and_left_nothing_behind([job_id])


def test_a_job_on_a_host_that_is_lost_completes_on_another_host(fleet):
    fleet.b.start()
    job_id = fleet.a.submit(user_id="alice", prompt="a storm", seed=8, **LONG_JOB)
    fleet.wait_for(lambda: fleet.running_on(job_id, "host-b", after_step=2), "the job to run on host B")
    fleet.c.start()

    fleet.b.lose()
    [job] = fleet.wait_finished([job_id])

    assert (job.status, worker_host(job), job.attempts) == (Status.COMPLETED, "host-c", 2), fleet.logs()
    # Host C found host B's worker lost by its silent heartbeat: it never looks up another host's pids.
    assert "lost by worker host-b:" in fleet.c.log
    fleet.assert_each_ran_once_and_left_nothing_behind([job_id])


def test_jobs_waiting_when_a_host_stops_for_good_all_run_on_the_other(fleet):
    fleet.b.start()
    job_ids = [fleet.a.submit(user_id=f"user-{index}", prompt="a river", seed=index, **LONG_JOB)
               for index in range(4)]
    first = fleet.wait_for(
        lambda: next((job_id for job_id in job_ids if fleet.running_on(job_id, "host-b")), None),
        "a job to run on host B",
    )

    # Stopped for good, mid-job, with a task it may have taken from Redis
    # but not started: both must come back for host C.
    fleet.b.stop()
    assert VideoGenerationJob.objects.get(pk=first).status == Status.PENDING, fleet.b.log[-3000:]
    fleet.c.start()
    jobs = fleet.wait_finished(job_ids, timeout=RECOVERY_TIMEOUT + 60)

    assert [(job.status, worker_host(job), job.attempts) for job in jobs] == [(Status.COMPLETED, "host-c", 1)] * 4, \
        fleet.logs()
    fleet.assert_each_ran_once_and_left_nothing_behind(job_ids)
