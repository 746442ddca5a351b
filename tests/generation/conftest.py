import gc

import pytest

from generation import pipelines


@pytest.fixture
def fresh_pipelines():
    """No pipeline loaded before or after the test: each test builds what it uses."""
    pipelines.release_pipelines()
    # What survives that collection lives for the whole session (torch's and
    # diffusers' modules): frozen, it is skipped by every later collection,
    # which then walks only what the test made (half a second less per call).
    gc.freeze()
    yield
    pipelines.release_pipelines()


@pytest.fixture(autouse=True)
def no_heartbeat_mid_test(settings):
    # The heartbeat thread writes on its own connection: on SQLite it would
    # wait out the busy timeout behind the test's open transaction (20 s
    # where a run takes longer than the interval, as a first one on a loaded
    # machine can). No test here is about the beat; tests/test_reaper_processes.py is.
    settings.VIDEOGEN_HEARTBEAT_INTERVAL = 3600
