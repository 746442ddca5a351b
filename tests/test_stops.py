"""
A cluster with a running job stops cleanly however the host stops it: SIGTERM
to every process of the group (systemd's KillMode=control-group), SIGTERM to
the parent only (docker), SIGINT to the whole foreground group (Ctrl-C).
Each ends within VIDEOGEN_SHUTDOWN_TIMEOUT + 10 s with the job handed back,
its attempt not counted. bench/stops.py does each 20 times.
"""

import os
import signal
import subprocess

import pytest

from jobs.models import Status
from jobs.services.lifecycle import job_enqueue
from tests.support.cluster import running_qcluster, running_worker_pid

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

LONG_JOB = {"width": 128, "height": 128, "num_frames": 17, "num_inference_steps": 200}
SHUTDOWN_TIMEOUT = 5
WAYS = {
    "sigterm to the process group": lambda pid: os.killpg(pid, signal.SIGTERM),
    "sigterm to the parent only": lambda pid: os.kill(pid, signal.SIGTERM),
    "sigint to the process group": lambda pid: os.killpg(pid, signal.SIGINT),
}


@pytest.mark.parametrize("way", WAYS)
def test_a_stopped_cluster_ends_in_time_and_hands_its_job_back(way, make_job, tmp_path, media_root):
    # Once each way here; bench/stops.py repeats each 20 times to catch a rare hang.
    job = make_job(**LONG_JOB)
    with running_qcluster(tmp_path / "q.log", media_root, VIDEOGEN_SHUTDOWN_TIMEOUT=str(SHUTDOWN_TIMEOUT)) as cluster:
        job_enqueue(job)
        running_worker_pid(job, cluster, after_step=2)
        WAYS[way](cluster.process.pid)
        try:
            # The shutdown timeout, then 10 s for the parent to reap its
            # children and exit: ample on a loaded 2-core machine.
            cluster.process.wait(timeout=SHUTDOWN_TIMEOUT + 10)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{way}: still running {SHUTDOWN_TIMEOUT + 10} s later:\n" + cluster.log[-3000:])

    job.refresh_from_db()
    assert (job.status, job.attempts, job.worker) == (Status.PENDING, 1, ""), (way, cluster.log[-3000:])
    # Nothing of the cluster is left behind.
    with pytest.raises(ProcessLookupError):
        os.killpg(cluster.process.pid, 0)
