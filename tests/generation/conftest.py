import pytest

from generation import pipelines


@pytest.fixture
def fresh_pipelines():
    """No pipeline loaded before or after the test: each test builds what it uses."""
    pipelines.release_pipelines()
    yield
    pipelines.release_pipelines()
