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
