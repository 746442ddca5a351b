from datetime import timedelta

import pytest
from django.utils import timezone

from jobs.models import Status, VideoGenerationJob

REQUEST = {"user_id": "alice", "prompt": "a cat", "seed": 5}


def test_the_same_key_returns_the_original_job_with_200(submit):
    first = submit(REQUEST, HTTP_IDEMPOTENCY_KEY="order-17")
    again = submit(REQUEST, HTTP_IDEMPOTENCY_KEY="order-17")

    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["job_id"] == first.json()["job_id"]
    assert VideoGenerationJob.objects.count() == 1


def test_the_same_key_with_another_body_is_a_422(submit):
    submit(REQUEST, HTTP_IDEMPOTENCY_KEY="order-17")

    response = submit({**REQUEST, "prompt": "a dog"}, HTTP_IDEMPOTENCY_KEY="order-17")

    assert response.status_code == 422
    assert "different request" in response.json()["detail"]
    assert VideoGenerationJob.objects.count() == 1


def test_keys_belong_to_one_user(submit):
    mine = submit(REQUEST, HTTP_IDEMPOTENCY_KEY="k")
    theirs = submit({**REQUEST, "user_id": "bob"}, HTTP_IDEMPOTENCY_KEY="k")

    assert theirs.status_code == 202
    assert theirs.json()["job_id"] != mine.json()["job_id"]


def test_a_key_older_than_a_day_makes_a_new_job(submit):
    first = submit(REQUEST, HTTP_IDEMPOTENCY_KEY="k")
    VideoGenerationJob.objects.update(submitted_at=timezone.now() - timedelta(hours=25))

    again = submit(REQUEST, HTTP_IDEMPOTENCY_KEY="k")

    assert again.status_code == 202
    assert again.json()["job_id"] != first.json()["job_id"]


def test_without_a_key_every_submit_is_a_new_job(submit):
    submit(REQUEST)
    submit(REQUEST)

    assert VideoGenerationJob.objects.count() == 2


@pytest.mark.parametrize("key", ["", "x" * 256, "has space", "caf\u00e9"])
def test_a_malformed_key_is_a_400_naming_the_header(api, db, key):
    response = api.post("/api/v1/generate", REQUEST, format="json", HTTP_IDEMPOTENCY_KEY=key.encode().decode("latin-1"))

    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()["errors"]


def test_a_user_at_the_active_job_limit_gets_a_429(submit, make_job, settings):
    settings.VIDEOGEN_MAX_ACTIVE_JOBS_PER_USER = 2
    make_job(user_id="alice", status=Status.PENDING)
    make_job(user_id="alice", status=Status.RUNNING)

    response = submit(REQUEST)

    assert response.status_code == 429
    assert "limit is 2" in response.json()["detail"]
    assert response["Retry-After"]
    assert VideoGenerationJob.objects.count() == 2


def test_finished_jobs_and_other_users_do_not_count_toward_the_limit(submit, make_job, settings):
    settings.VIDEOGEN_MAX_ACTIVE_JOBS_PER_USER = 1
    make_job(user_id="alice", status=Status.COMPLETED)
    make_job(user_id="alice", status=Status.FAILED)
    make_job(user_id="bob", status=Status.PENDING)

    assert submit(REQUEST).status_code == 202


def test_a_retry_of_an_accepted_request_is_answered_even_at_the_limit(submit, settings):
    settings.VIDEOGEN_MAX_ACTIVE_JOBS_PER_USER = 1
    first = submit(REQUEST, HTTP_IDEMPOTENCY_KEY="k")

    again = submit(REQUEST, HTTP_IDEMPOTENCY_KEY="k")

    assert again.status_code == 200
    assert again.json()["job_id"] == first.json()["job_id"]


def test_the_database_itself_refuses_a_second_job_with_the_same_users_key(make_job):
    from django.db import IntegrityError, transaction

    make_job(user_id="alice", idempotency_key="k")
    make_job(user_id="bob", idempotency_key="k")
    make_job(user_id="alice", idempotency_key=None)
    make_job(user_id="alice", idempotency_key=None)

    with pytest.raises(IntegrityError), transaction.atomic():
        make_job(user_id="alice", idempotency_key="k")
