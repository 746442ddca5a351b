"""
The emptying of the test database between transactional tests, made safe
beside the servers and clusters a module keeps running. Their transactions
read one table and then another; the TRUNCATE that empties the database
locks every table in turn, so on PostgreSQL the two can deadlock, and the
server aborts whichever detects it first: usually the TRUNCATE. The other
transaction then finishes, so emptying again succeeds.
"""

import time

import pytest
from django.core.management.base import CommandError
from django.test import TransactionTestCase
from psycopg.errors import DeadlockDetected

FLUSH_ATTEMPTS = 5


def is_deadlock(error: BaseException) -> bool:
    """Whether a failed flush failed on a deadlock (its cause chain names one)."""
    while error is not None:
        if isinstance(error, DeadlockDetected):
            return True
        error = error.__cause__ or error.__context__
    return False


def flush_retrying_deadlocks(teardown):
    def flush(test_case):
        for attempt in range(1, FLUSH_ATTEMPTS + 1):
            try:
                return teardown(test_case)
            except CommandError as error:
                if attempt == FLUSH_ATTEMPTS or not is_deadlock(error):
                    raise
                time.sleep(0.1 * attempt)

    return flush


@pytest.fixture(autouse=True, scope="session")
def flush_survives_deadlocks():
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            TransactionTestCase, "_fixture_teardown", flush_retrying_deadlocks(TransactionTestCase._fixture_teardown)
        )
        yield
