"""
The admin's Fleet page in a real browser (Debian's Chromium, Playwright),
against a real qcluster: its worker is shown running the job, then, once the
cluster is killed, marked as stopped beating.
"""

import os
import signal
import time

import pytest

from jobs.services.lifecycle import job_enqueue
from tests.support.browser import IN_A_BROWSER, PASSWORD, browser_page
from tests.support.cluster import running_qcluster, running_worker_pid

pytestmark = [*IN_A_BROWSER, pytest.mark.django_db(transaction=True)]

# About 0.1 s a step on the tiny model (tests/test_recovery_processes.py): seen running for 20 s.
LONG_JOB = {"width": 256, "height": 256, "num_frames": 9, "num_inference_steps": 200}


def test_an_operator_sees_each_worker_and_its_job_and_a_dead_cluster_marked(
    live_server, operator, make_job, tmp_path, media_root, settings
):
    settings.VIDEOGEN_REAPER_INTERVAL = 1
    settings.VIDEOGEN_HEARTBEAT_TIMEOUT = 3
    operator.set_password(PASSWORD)
    operator.save()
    with running_qcluster(tmp_path / "q.log", media_root, VIDEOGEN_REAPER_INTERVAL="1") as cluster:
        job = make_job(user_id="alice", prompt="a long one", **LONG_JOB)
        job_enqueue(job)
        pid = running_worker_pid(job, cluster, after_step=2)
        waiting = make_job(user_id="bob", prompt="waits behind it")  # the one worker is busy
        time.sleep(1.5)  # a beat with the worker holding its slot

        with browser_page(tmp_path) as page:
            page.goto(f"{live_server.url}/admin/")
            page.fill("#id_username", "operator")
            page.fill("#id_password", PASSWORD)
            page.click("input[type=submit]")
            page.click("#content-main a[href$='/jobs/clusterbeat/']")

            row = page.locator(f"#fleet-workers tr:has(a[href*='{job.pk}'])")
            assert str(pid) in row.inner_text() and "cpu" in row.inner_text()
            assert " of 200" in row.inner_text() and "beating" in row.inner_text()
            queues = page.locator("#fleet-queues").inner_text()
            assert "tiny-random" in queues and str(waiting.pk) in queues

            os.killpg(cluster.process.pid, signal.SIGKILL)
            page.wait_for_timeout(4000)  # past the heartbeat timeout and two missed beats
            page.reload()
            assert page.locator("#fleet-clusters").inner_text().count("stopped beating") == 1
            assert "stopped beating" in page.locator(f"#fleet-workers tr:has(a[href*='{job.pk}'])").inner_text()

            row = page.locator(f"#fleet-workers a[href*='{job.pk}']")
            row.click()
            page.wait_for_url(f"**/{job.pk}/change/")
