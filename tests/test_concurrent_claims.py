"""Workers claiming at once from one queue, in real threads with their own database connections."""

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from jobs.models import Status, VideoGenerationJob
from jobs.scheduling.queue import job_claim_next

pytestmark = [pytest.mark.broker, pytest.mark.django_db(transaction=True)]

JOBS = 120
WORKERS = 4


def test_concurrent_workers_never_claim_the_same_job_and_leave_none_behind(make_job):
    start = timezone.now() - timedelta(hours=1)
    for index in range(JOBS):
        make_job(user_id=f"user{index % 7}", submitted_at=start + timedelta(seconds=index))
    claimed: dict[str, list] = {}
    errors = []
    go = threading.Barrier(WORKERS)

    def worker(name: str) -> None:
        mine = claimed.setdefault(name, [])
        try:
            go.wait()
            while (job := job_claim_next(queue=None, worker=name)) is not None:
                mine.append(job.pk)
                # "Running" it: the others claim meanwhile, as real workers do.
                time.sleep(0.002)
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(f"host:{n}",)) for n in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    every_claim = [pk for claims in claimed.values() for pk in claims]
    assert len(every_claim) == len(set(every_claim)) == JOBS
    # Each row names the worker that claimed it, and that worker alone.
    for name, claims in claimed.items():
        assert set(VideoGenerationJob.objects.filter(worker=name).values_list("pk", flat=True)) == set(claims)
    assert not VideoGenerationJob.objects.filter(status=Status.PENDING).exists()
    # More than one worker got work: the claims really overlapped.
    assert sum(1 for claims in claimed.values() if claims) > 1
