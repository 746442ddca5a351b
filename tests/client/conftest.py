"""
The client's tests run it against real servers: gunicorn (as `make run`
starts it) and real qclusters on the test database. The client is imported
from clients/python, where it lives, without installing it.
"""

import sys
from pathlib import Path

import pytest
from django.conf import settings

from tests.support.client import CLIENT_ROOT, MODELS, WEBHOOKS, server_env
from tests.support.cluster import running_qcluster
from tests.support.receiver import running_receiver
from tests.support.server import gunicorn

if str(CLIENT_ROOT) not in sys.path:
    sys.path.insert(0, str(CLIENT_ROOT))


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("client-media")


@pytest.fixture(scope="module")
def server(django_db_setup, media):
    """The API on gunicorn, a generation qcluster and a webhook qcluster, sharing the test database and media."""
    logs = media.parent
    with (
        gunicorn(logs / "gunicorn.log", server_env(media, **WEBHOOKS), workers=2) as running,
        running_qcluster(logs / "qcluster.log", media, VIDEOGEN_MODELS=MODELS, **WEBHOOKS),
        running_qcluster(logs / "webhooks.log", media, Q_CLUSTER_NAME=settings.VIDEOGEN_WEBHOOK_QUEUE, **WEBHOOKS),
    ):
        yield running


@pytest.fixture(scope="module")
def url(server) -> str:
    return f"http://127.0.0.1:{server.port}"


@pytest.fixture
def receiver():
    with running_receiver() as running:
        yield running


@pytest.fixture
def client(url):
    from videogen_client import Client

    with Client(url, user_id="alice") as running:
        yield running
