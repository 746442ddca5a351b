"""
On Redis (CI's Redis leg) the queue outlives each test, unlike the ORM
broker's table, which the test database resets: tasks a test leaves behind
are removed before the next test, so no test's cluster runs another's.
"""

import pytest


@pytest.fixture(autouse=True)
def empty_redis_queue(settings):
    if settings.REDIS_URL:
        from django_q.brokers import get_broker

        get_broker().delete_queue()
    yield


def queued_tasks() -> list[dict]:
    """The tasks waiting in the default queue, on whichever broker this run uses (ORM, or Redis in CI's Redis leg)."""
    from django.conf import settings
    from django_q.models import OrmQ
    from django_q.signing import SignedPackage

    from jobs.services.lifecycle import broker

    if settings.REDIS_URL:
        redis = broker(None)
        return [SignedPackage.loads(package) for package in redis.connection.lrange(redis.list_key, 0, -1)]
    return [queued.task for queued in OrmQ.objects.all()]
