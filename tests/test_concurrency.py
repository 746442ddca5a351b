"""Many clients at once, against a real threaded server (and a real worker where jobs must finish)."""

import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from jobs.models import Status, VideoGenerationJob
from tests.support.cluster import wait_until_finished

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

TINY = {"width": 32, "height": 32, "num_frames": 1, "num_inference_steps": 1}


def post(url: str, body: dict, headers: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=60) as response:
        return json.load(response)


def test_twenty_parallel_submits_with_one_key_create_one_job(live_server):
    body = {"user_id": "alice", "prompt": "same request", "seed": 1, **TINY}

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(
            pool.map(
                lambda _: post(f"{live_server.url}/api/v1/generate", body, {"Idempotency-Key": "checkout-42"}),
                range(20),
            )
        )

    statuses = sorted(status for status, _ in results)
    assert statuses == [200] * 19 + [202]
    assert len({answer["job_id"] for _, answer in results}) == 1
    assert VideoGenerationJob.objects.count() == 1


def test_parallel_submits_from_one_user_never_pass_the_active_job_limit(live_server, settings):
    settings.VIDEOGEN_MAX_ACTIVE_JOBS_PER_USER = 3
    # Twice the server's own threads at once, so counts and inserts interleave.
    requests = [{"user_id": "alice", "prompt": f"job {index}", "seed": index, **TINY} for index in range(24)]

    with ThreadPoolExecutor(max_workers=24) as pool:
        results = list(pool.map(lambda body: post(f"{live_server.url}/api/v1/generate", body), requests))

    assert sorted(status for status, _ in results) == [202] * 3 + [429] * 21
    assert VideoGenerationJob.objects.filter(user_id="alice").count() == 3
    refused = [answer for status, answer in results if status == 429]
    assert all("the limit is 3" in answer["detail"] for answer in refused), refused[0]


def test_fifty_parallel_submits_from_five_users_all_complete_and_each_list_is_exact(live_server, qcluster):
    users = [f"user-{number}" for number in range(5)]
    requests = [{"user_id": users[index % 5], "prompt": f"job {index}", "seed": index, **TINY} for index in range(50)]

    with ThreadPoolExecutor(max_workers=10) as pool:
        results = list(pool.map(lambda body: post(f"{live_server.url}/api/v1/generate", body), requests))

    assert [status for status, _ in results] == [202] * 50
    submitted = {user: set() for user in users}
    for (_, answer), request in zip(results, requests):
        submitted[request["user_id"]].add(answer["job_id"])
    wait_until_finished(list(VideoGenerationJob.objects.all()), qcluster)
    assert VideoGenerationJob.objects.filter(status=Status.COMPLETED).count() == 50
    for user in users:
        listed = get(f"{live_server.url}/api/v1/videos?user_id={user}&page_size=100")
        assert {video["job_id"] for video in listed["videos"]} == submitted[user]
        assert {video["user_id"] for video in listed["videos"]} == {user}
        assert listed["total"] == 10
