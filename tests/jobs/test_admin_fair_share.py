"""The admin's part in fair share: queue positions in the job list, and user weights an operator edits."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from jobs.scheduling.estimates import forget_snapshots
from jobs.models import Status, UserWeight
from jobs.scheduling.queue import job_claim_next

CHANGELIST = "/admin/jobs/videogenerationjob/"


@pytest.fixture
def superuser_client(client, db):
    client.force_login(User.objects.create_superuser("root", password="secret"))
    forget_snapshots()
    yield client
    forget_snapshots()


def test_the_job_list_shows_the_queue_position_of_pending_jobs(superuser_client, make_job):
    now = timezone.now()
    first = make_job(user_id="alice", submitted_at=now - timedelta(seconds=30))
    second = make_job(user_id="alice", submitted_at=now - timedelta(seconds=20))
    make_job(user_id="bob", status=Status.COMPLETED, completed_at=now)

    response = superuser_client.get(CHANGELIST)

    assert response.status_code == 200
    cells = response.content.decode()
    assert '<td class="field-queue_position">#1</td>' in cells
    assert '<td class="field-queue_position">#2</td>' in cells
    assert cells.count('<td class="field-queue_position">-</td>') == 1
    del first, second


def test_an_operator_sets_a_weight_in_the_admin_and_the_next_claim_uses_it(superuser_client, make_job):
    now = timezone.now()
    for user in ("alice", "bob"):
        make_job(user_id=user, status=Status.COMPLETED, started_at=now - timedelta(seconds=100),
                 completed_at=now - timedelta(seconds=10))
    make_job(user_id="alice", submitted_at=now - timedelta(seconds=5))
    make_job(user_id="bob", submitted_at=now - timedelta(seconds=1))

    response = superuser_client.post("/admin/jobs/userweight/add/", {"user_id": "bob", "weight": "3", "note": "paid"})

    assert response.status_code == 302
    assert UserWeight.objects.get(user_id="bob").weight == 3
    assert job_claim_next(queue=None, worker="w:1").user_id == "bob"


def test_a_weight_must_be_positive(superuser_client):
    response = superuser_client.post("/admin/jobs/userweight/add/", {"user_id": "bob", "weight": "0"})

    assert response.status_code == 200
    assert not UserWeight.objects.exists()
    assert "greater than or equal to 0.01" in response.content.decode()
