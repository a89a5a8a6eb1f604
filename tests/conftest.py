"""Fixtures shared by the host-path tests (the top-level conftest.py holds the suite's own)."""
import pytest

from tests.fake_gpu import tool


@pytest.fixture
def fake():
    """(fake GPU, runner factory); fake graphs for the test's duration, worker threads closed after."""
    made = []
    with tool.fake_graphs():
        gpu = tool.FakeGpu(simulate=True)

        def make(**options):
            made.append(tool.fake_runner(gpu, **options))
            return made[-1]

        yield gpu, make
    for runner in made:
        runner._stager.close()
