"""Fixtures shared by the host-path tests, and the hooks that start and order the background runs
(tests/background.py); the top-level conftest.py holds the suite's own."""
import pytest

from tests import background, fake_gpu


@pytest.fixture
def fake():
    """(fake GPU, runner factory); fake graphs for the test's duration, feeder threads closed after."""
    made = []
    with fake_gpu.fake_graphs():
        gpu = fake_gpu.FakeGpu()

        def make(**options):
            made.append(fake_gpu.fake_runner(gpu, **options))
            return made[-1]

        yield gpu, make
    for runner in made:
        runner._stager.close()


def pytest_collection_finish(session):
    background.start_selected(session)


def pytest_sessionfinish(session):
    background.stop_all()


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    background.run_last(items)
