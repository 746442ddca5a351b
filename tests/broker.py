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
