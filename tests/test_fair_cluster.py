"""A real qcluster shares one worker fairly: A's backlog does not hold up B and C."""

import pytest

from jobs.models import VideoGenerationJob
from tests.support.cluster import running_qcluster, wait_for, wait_until_finished
from tests.support.jobs import FAST_JOB

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def submit(api, user_id: str) -> VideoGenerationJob:
    response = api.post("/api/v1/generate", {"user_id": user_id, "prompt": "a fox", **FAST_JOB}, format="json")
    assert response.status_code == 202, response.content
    return VideoGenerationJob.objects.get(pk=response.json()["job_id"])


def test_users_who_submit_behind_a_backlog_start_after_at_most_one_more_of_it(api, tmp_path, media_root):
    with running_qcluster(tmp_path / "q.log", media_root) as cluster:
        backlog = [submit(api, "a") for _ in range(8)]
        wait_for(lambda: VideoGenerationJob.objects.filter(user_id="a", started_at__isnull=False).exists(),
                 "A's first job to start", cluster)
        b, c = submit(api, "b"), submit(api, "c")
        wait_until_finished([*backlog, b, c], cluster)

    jobs = {job.pk: job for job in VideoGenerationJob.objects.all()}
    order = sorted(jobs.values(), key=lambda job: job.started_at)
    assert all(job.status == "completed" for job in order), [(job.user_id, job.error_message) for job in order]
    for late in (b, c):
        late = jobs[late.pk]
        before = [job for job in order if late.submitted_at <= job.started_at < late.started_at]
        assert sum(job.user_id == "a" for job in before) <= 1, [job.user_id for job in order]
    # And A's own jobs ran oldest first.
    a_order = [job.pk for job in order if job.user_id == "a"]
    assert a_order == [job.pk for job in sorted(backlog, key=lambda job: job.submitted_at)]
