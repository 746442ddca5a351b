"""
Each error answer as the exception the client raises, from a real gunicorn
with API keys on, one active job per user, and no cluster (jobs stay pending).
"""

import io
import time
import uuid

import pytest
from django.conf import settings
from django.core.management import call_command

from tests.support.client import server_env
from tests.support.jobs import FAST_JOB
from tests.support.server import gunicorn

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def url(django_db_setup, tmp_path_factory):
    media = tmp_path_factory.mktemp("errors-media")
    # A queue of its own: no cluster of another test module takes these jobs.
    env = server_env(media, VIDEOGEN_AUTH="api_key", VIDEOGEN_MAX_ACTIVE_JOBS_PER_USER="1",
                     VIDEOGEN_QUEUE_NAME=settings.Q_CLUSTER["name"] + "-idle")
    with gunicorn(media.parent / "gunicorn.log", env, workers=1) as server:
        yield f"http://127.0.0.1:{server.port}"


def create_key(user_id: str) -> str:
    out = io.StringIO()
    call_command("create_api_key", "--user-id", user_id, stdout=out, stderr=io.StringIO())
    return out.getvalue().splitlines()[-1]


@pytest.fixture
def client(url):
    from videogen_client import Client

    with Client(url, api_key=create_key("alice"), backoff=0.01) as running:
        yield running


def test_no_key_or_a_wrong_one_is_unauthorized(url):
    from videogen_client import ApiError, Client, Unauthorized

    for key in (None, "vg_0000000000000000_wrong"):
        with Client(url, api_key=key or "") as client, pytest.raises(Unauthorized) as raised:
            client.models()
        assert raised.value.status == 401 and isinstance(raised.value, ApiError)
        assert raised.value.headers["www-authenticate"] == 'Bearer realm="videogen"'


def test_a_bad_field_is_a_validation_error_naming_it(client):
    from videogen_client import ValidationError

    with pytest.raises(ValidationError) as raised:
        client.generate("a fox", fps=999, **{key: value for key, value in FAST_JOB.items() if key != "fps"})

    assert raised.value.status == 400
    assert list(raised.value.errors) == ["fps"] and "fps" in raised.value.detail


def test_a_missing_or_foreign_job_is_not_found(client, url):
    from videogen_client import Client, NotFound

    job = client.generate("alice's fox", **FAST_JOB)
    with Client(url, api_key=create_key("mallory")) as mallory:
        for call in (mallory.job, mallory.cancel, mallory.delete, mallory.download):
            with pytest.raises(NotFound) as raised:
                call(job.job_id)
            assert raised.value.detail == "No such job."
    with pytest.raises(NotFound):
        client.job(str(uuid.uuid4()))
    client.cancel(job.job_id)


def test_too_many_active_jobs_is_rate_limited_with_retry_after_then_cancel_and_delete(client, tmp_path):
    from videogen_client import Conflict, NotFound, RateLimited

    first = client.generate("one", **FAST_JOB)
    assert first.status == "pending" and first.user_id == "alice"
    # The server asks to come back in 30 s, longer than the client waits on its own: raised at once.
    with pytest.raises(RateLimited) as raised:
        client.generate("two", **FAST_JOB)
    assert raised.value.status == 429 and raised.value.retry_after == 30

    with pytest.raises(Conflict) as raised:
        client.download(first.job_id, tmp_path)
    assert raised.value.status == 409 and raised.value.body["status"] == "pending"
    assert not list(tmp_path.iterdir())

    cancelled = client.cancel(first.job_id)
    assert cancelled.status == "cancelled"
    assert client.wait(first.job_id, timeout=10).status == "cancelled"
    with pytest.raises(Conflict):
        client.cancel(first.job_id)
    # With the slot free again a submit goes through.
    second = client.generate("two", **FAST_JOB)

    client.delete(first.job_id)
    with pytest.raises(NotFound):
        client.job(first.job_id)
    with pytest.raises(NotFound):
        client.delete(first.job_id)
    client.cancel(second.job_id)


def test_an_unreachable_server_is_a_connection_error_after_the_retries(tmp_path):
    from tests.support.processes import free_port
    from videogen_client import Client, ConnectionFailed

    with Client(f"http://127.0.0.1:{free_port()}", user_id="alice", backoff=0.01) as client:
        with pytest.raises(ConnectionFailed):
            client.job(str(uuid.uuid4()))


@pytest.fixture(scope="module")
def throttled_url(django_db_setup, tmp_path_factory):
    media = tmp_path_factory.mktemp("throttled-media")
    env = server_env(media, VIDEOGEN_RATE_LIMIT_READ="3/s", VIDEOGEN_QUEUE_NAME=settings.Q_CLUSTER["name"] + "-idle")
    with gunicorn(media.parent / "gunicorn.log", env, workers=1) as server:
        yield f"http://127.0.0.1:{server.port}"


def test_a_429_is_waited_out_as_retry_after_says_and_raised_once_retries_run_out(throttled_url):
    from videogen_client import Client, RateLimited

    with Client(throttled_url, user_id="dave", max_retries=0) as impatient:
        with pytest.raises(RateLimited) as raised:
            for _ in range(10):
                impatient.models()
    assert raised.value.retry_after >= 1

    with Client(throttled_url, user_id="erin") as patient:
        started = time.monotonic()
        for _ in range(8):
            assert patient.models().default == "tiny-random"
    # 8 reads at 3 a second: the client waited for the server, rather than failing.
    assert time.monotonic() - started >= 1
