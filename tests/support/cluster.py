"""
A real `qcluster` process against the test database, for tests that need
jobs to actually run: tests/test_cluster.py and the browser test. The
`qcluster` fixture in tests/conftest.py starts one. Its broker is the test
process's: the ORM broker, or Redis when REDIS_URL is set (CI's Redis leg).
"""

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connection

from jobs.models import FINISHED, Status, VideoGenerationJob
from jobs.services.recovery import parse_worker_name
from tests.support.processes import wait_until

TIMEOUT = 180


def test_database_url() -> str:
    """A DATABASE_URL that points a child process at this test database."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    auth = quote(db["USER"] or "", safe="")
    if db["PASSWORD"]:
        auth += ":" + quote(db["PASSWORD"], safe="")
    return f"postgres://{auth}@{db['HOST'] or 'localhost'}:{db['PORT'] or 5432}/{db['NAME']}"


test_database_url.__test__ = False


class Cluster:
    def __init__(self, process: subprocess.Popen, log_path: Path):
        self.process = process
        self.log_path = log_path

    @property
    def log(self) -> str:
        return self.log_path.read_text()


@contextlib.contextmanager
def running_qcluster(log_path: Path, media_root: Path, **extra_env: str) -> Iterator[Cluster]:
    env = {
        **os.environ,
        "DATABASE_URL": test_database_url(),
        # The broker and queue the test enqueues to.
        "REDIS_URL": settings.REDIS_URL,
        "VIDEOGEN_QUEUE_NAME": settings.Q_CLUSTER["name"],
        "VIDEOGEN_MEDIA_ROOT": str(media_root),
        "VIDEOGEN_WORKERS": "1",
        "VIDEOGEN_QUEUE_POLL": "0.05",
        "VIDEOGEN_PROGRESS_INTERVAL": "0.05",
        **extra_env,
    }
    with open(log_path, "a") as log:
        # Its own session, so a test can kill the whole cluster (killpg) and nothing else.
        process = subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    cluster = Cluster(process, log_path)
    try:
        yield cluster
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                pytest.fail("qcluster did not stop within 30 s of SIGTERM:\n" + cluster.log[-3000:])
        # Whatever it left behind (workers of a cluster killed with SIGKILL).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def wait_until_finished(jobs, cluster: Cluster, progress_seen: set[int] | None = None) -> None:
    """Until every job is finished; progress_seen, if given, collects the progress of running jobs seen meanwhile."""
    pks = [job.pk for job in jobs]

    def finished() -> bool:
        states = VideoGenerationJob.objects.filter(pk__in=pks).values_list("status", "progress")
        if progress_seen is not None:
            progress_seen.update(progress for status, progress in states if status == Status.RUNNING)
        return all(status in FINISHED for status, _ in states)

    wait_for(finished, f"{len(pks)} jobs to finish", cluster, timeout=TIMEOUT)


def wait_for(condition, what: str, cluster: Cluster, timeout: float = 120):
    """Poll condition() until it returns something true, and return that; fail with the cluster's log."""
    return wait_until(condition, what, timeout=timeout, gone=lambda: cluster.process.poll() is not None,
                      details=lambda: cluster.log[-4000:])


def running_worker_pid(job: VideoGenerationJob, cluster: Cluster, after_step: int = 1, not_pid: int | None = None) -> int:
    """Wait until the job runs past after_step in a worker, and return that worker's pid."""

    def check():
        row = VideoGenerationJob.objects.get(pk=job.pk)
        if row.status == Status.RUNNING and row.current_step >= after_step and row.worker:
            pid = parse_worker_name(row.worker)[1]
            if pid != not_pid:
                return pid
        return None

    return wait_for(check, "the job to run", cluster)
