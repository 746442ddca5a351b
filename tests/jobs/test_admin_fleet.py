"""The admin's Fleet page: clusters, worker processes and queues, from the one liveness record."""

import pytest
from django.contrib.auth.models import User

from jobs.scheduling.estimates import cluster_beat
from jobs.scheduling.queue import live_workers
from jobs.models import ClusterBeat, Status, WorkerGpu
from tests.support.jobs import ago

FLEET = "/admin/jobs/clusterbeat/"


def test_the_fleet_page_shows_each_worker_its_job_and_step_and_each_queues_oldest_job(staff_client, make_job):
    cluster_beat("gpu-1:100", None, 2, [{"pid": 101, "slot": 0, "device": "cuda:0"},
                                        {"pid": 102, "slot": 1, "device": "cuda:1"}])
    busy = make_job(status=Status.RUNNING, worker="gpu-1:101 slot 0 cuda:0", heartbeat_at=ago(2), current_step=7,
                    num_inference_steps=30)
    WorkerGpu.objects.create(worker=busy.worker, host="gpu-1", device="cuda:0", used_bytes=3 * 2**30,
                             peak_bytes=5 * 2**30, updated_at=ago(1))
    oldest = make_job(user_id="bob", submitted_at=ago(90))
    make_job(user_id="carol", submitted_at=ago(10))

    page = staff_client.get(FLEET).content.decode()

    assert "gpu-1:100" in page and "cuda:1" in page and "idle" in page
    assert f"/admin/jobs/videogenerationjob/{busy.pk}/change/" in page
    assert "7 of 30" in page
    assert "3.0\xa0GB (5.0\xa0GB)" in page
    assert f"/admin/jobs/videogenerationjob/{oldest.pk}/change/" in page and "waiting 90 s" in page
    assert "<strong>stopped beating</strong>" not in page


def test_workers_that_stopped_beating_are_marked_and_not_counted(staff_client, make_job, settings):
    cluster_beat("gpu-2:200", None, 1, [{"pid": 201, "slot": 0, "device": "cuda:0"}])
    ClusterBeat.objects.filter(name="gpu-2:200").update(seen_at=ago(ClusterBeat.liveness_seconds() + 1))
    # A job whose worker no beating cluster lists, silent past the heartbeat timeout.
    make_job(status=Status.RUNNING, worker="gpu-3:301 slot 0 cuda:0", heartbeat_at=ago(settings.VIDEOGEN_HEARTBEAT_TIMEOUT + 5))

    page = staff_client.get(FLEET).content.decode()

    assert page.count("<strong>stopped beating</strong>") == 3  # the cluster, its worker, the lost job's worker
    assert live_workers(None) == 0


def test_the_fleet_is_for_those_who_may_see_jobs(client, db):
    client.force_login(User.objects.create_user("nobody", is_staff=True))

    assert client.get(FLEET).status_code == 403
