"""Suite-wide options, GPU markers and the costly session fixtures, per model.

Tests that take `model_name` (directly or through `model_artifacts`, `golden`, `runner_pool`,
`backend`) run once per model of the run (`--model`, `--onnx`; default every shipped model).
Tests that take `backend` run once per backend that applies to the model, each carrying the
markers that say what it needs; tests that take `batch_size` once per batch of the model's
profile. SimpleCNN's own fixtures (`dataset`, `trained`) serve its training and data tests.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from model import capabilities, data, options

settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.register_profile("dev", max_examples=10, deadline=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# One GPU per pytest-xdist worker (--gpus): its pytest_configure runs first, before anything here
# can initialise CUDA in a worker.
pytest_plugins = ("model.gpus",)

def pytest_addoption(parser):
    options.add_to_pytest(parser.getgroup("models"))


def pytest_configure(config):
    from model import zoo

    try:
        config.model_specs, config.batch_sizes = options.run_settings(config.getoption, default=list(zoo.shipped()))
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None


def _missing_for(item) -> capabilities.Missing | None:
    for marker in item.iter_markers():
        if marker.name == "needs_trt":
            checks = ["tensorrt"]
        elif marker.name == "needs_cuda":
            checks = [marker.args[0] if marker.args else "gpu"]
        elif marker.name == "needs":
            checks = list(marker.args)
        else:
            continue
        for check in checks:
            missing = capabilities.CHECKS[check]()
            if missing:
                return missing
    return None


def _gpu_marked(item) -> bool:
    return any(m.name in ("needs_trt", "needs_cuda") or (m.name == "needs" and m.args) for m in item.iter_markers())


def pytest_collection_modifyitems(config, items):
    if config.getoption("--gpu-only"):
        deselected = [item for item in items if not _gpu_marked(item)]
        if deselected:
            config.hook.pytest_deselected(items=deselected)
            items[:] = [item for item in items if _gpu_marked(item)]
    require = config.getoption("--require-gpu")
    for item in items:
        missing = _missing_for(item)
        if missing is None:
            continue
        if require and missing.machine_level:
            item.stash[_REQUIRED_BUT_MISSING] = missing.reason
        else:
            item.add_marker(pytest.mark.skip(reason=missing.reason))


_REQUIRED_BUT_MISSING = pytest.StashKey[str]()


def pytest_runtest_setup(item):
    reason = item.stash.get(_REQUIRED_BUT_MISSING, None)
    if reason:
        pytest.fail(f"--require-gpu: {reason}", pytrace=False)


def backend_marks(backend) -> list:
    return [pytest.mark.needs(*backend.needs)] if backend.needs else []


def applicable_backends(spec, precisions=("fp32", "fp16", "int8"), include_reference=False):
    """The backends a test covers for one model: its precisions, PyTorch only with a module."""
    from model.backends.registry import BACKENDS

    return [b for b in BACKENDS.values()
            if b.precision in precisions and b.precision in spec.precisions
            and not (b.module_only and spec.module is None)
            and (include_reference or b.name != spec.reference)]


def pytest_generate_tests(metafunc):
    names = metafunc.fixturenames
    if "model_name" not in names:
        return
    config = metafunc.config
    marker = metafunc.definition.get_closest_marker("backends")
    filters = marker.kwargs if marker else {}
    params = []
    for model, spec in config.model_specs.items():
        backends = applicable_backends(spec, **filters) if "backend_name" in names else [None]
        batches = config.batch_sizes[model] if "batch_size" in names else [None]
        if "bench_batch" in names:
            from benchmarks.conftest import bench_batches

            batches = [n for n in bench_batches(config) if n in spec.profile]
        for b in backends:
            for n in batches:
                values, ids = [model], [model]
                if b is not None:
                    values.append(b.name)
                    ids.append(b.name)
                if n is not None:
                    values.append(n)
                    ids.append(f"bs{n}")
                params.append(pytest.param(*values, marks=backend_marks(b) if b else [], id="-".join(ids)))
    argnames = ["model_name"] + (["backend_name"] if "backend_name" in names else []) \
        + (["batch_size"] if "batch_size" in names else []) + (["bench_batch"] if "bench_batch" in names else [])
    metafunc.parametrize(argnames, params, scope="session")


# -- session fixtures: built once per model, cached on disk across sessions -------------------------

@pytest.fixture(scope="session")
def cache_dir(pytestconfig) -> Path:
    return Path(pytestconfig.getoption("--cache-dir"))


class ModelStore:
    """Per model, everything costly, kept for the whole session: its artifacts, its activated
    runners, its golden outputs and any other value a test asks to keep (`memo`). A session
    fixture parametrized by model keeps one value at a time and rebuilds it whenever the model
    changes between test modules; this keeps all of them."""

    def __init__(self, config, cache_dir: Path) -> None:
        self.config, self.cache_dir = config, cache_dir
        self._memo: dict[tuple, object] = {}
        self._runners: dict[tuple, object] = {}

    def memo(self, model: str, key: str, make):
        if (model, key) not in self._memo:
            self._memo[model, key] = make()
        return self._memo[model, key]

    def artifacts(self, model: str):
        from model.artifacts import ModelArtifacts

        return self.memo(model, "artifacts", lambda: ModelArtifacts(
            self.config.model_specs[model], self.cache_dir, data=self.config.getoption("--data"), progress=False))

    def runner(self, model: str, backend: str):
        from model.backends.registry import BACKENDS

        if (model, backend) not in self._runners:
            self._runners[model, backend] = BACKENDS[backend].runner(self.artifacts(model)).activate()
        return self._runners[model, backend]

    def close(self) -> None:
        for runner in self._runners.values():
            runner.deactivate()


@pytest.fixture(scope="session")
def model_store(pytestconfig, cache_dir):
    store = ModelStore(pytestconfig, cache_dir)
    yield store
    store.close()


@pytest.fixture(scope="session", autouse=True)
def _xdist_engine_builds(request, model_store):
    """Under pytest-xdist, each worker first builds its share of the TensorRT plans the run uses,
    one plan per job, longest first (model/backends/tensorrt/prebuild.py); left to the tests, all
    workers reach the same backend's tests together and wait on one build at a time. The plans go
    through the cache's per-plan lock, so each is built once, and they are the very plans the
    tests then load. A build that fails is left for its tests to report."""
    from model.backends.base import BackendUnavailable
    from model.backends.registry import BACKENDS
    from model.backends.tensorrt import prebuild

    worker, workers = os.environ.get("PYTEST_XDIST_WORKER", ""), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if not worker.startswith("gw") or workers < 2:
        return
    pairs, runner_tests = set(), set()
    for item in request.session.items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if "model_name" in params and "runner_test_engine" in item.fixturenames:
            runner_tests.add(params["model_name"])
        # Tests that build their own model (tests/test_artifact_rebuild.py) take no model_name.
        if "model_name" in params and params.get("backend_name") in BACKENDS:
            pairs.add((params["model_name"], BACKENDS[params["backend_name"]]))
    jobs = [job for model, backend in sorted(pairs, key=lambda p: (p[0], p[1].name))
            if backend.framework == "TensorRT" and not (backend.missing() or backend.not_for(model_store.artifacts(model)))
            for job in prebuild.jobs_for(model, backend.precision, backend.typed_graph, model_store.artifacts(model).profile)]
    if BACKENDS["tensorrt-fp32"].missing():
        runner_tests = set()
    jobs += [prebuild.runner_tests_job(m, model_store.artifacts(m).profile) for m in sorted(runner_tests)]
    # A worker that replaces a crashed one is named past the count (gw4 of 4): it takes a share again;
    # the per-plan lock keeps each plan built once.
    for job in prebuild.share(jobs, int(worker[2:]) % workers, workers):
        try:
            prebuild.build(job, model_store.artifacts(job.model))
        except (BackendUnavailable, RuntimeError, OSError, ValueError):
            continue


@pytest.fixture(scope="session")
def runner_test_engine(model_store, model_name):
    """The FP32 engine with every opt batch's profile that the runner's own tests run on
    (model/backends/tensorrt/build.py, runner_test_spec): the deployed engine where the model's
    set is that one engine, else one built for these tests at optimization level 0."""
    from model.backends.tensorrt.build import engine_for_onnx, runner_test_spec

    def make():
        arts = model_store.artifacts(model_name)
        return engine_for_onnx(arts.onnx, runner_test_spec(arts.spec, arts.profile, arts.workspace), arts.cache_dir)
    return model_store.memo(model_name, "runner test engine", make)


@pytest.fixture(scope="session")
def model_spec(pytestconfig, model_name):
    return pytestconfig.model_specs[model_name]


@pytest.fixture(scope="session")
def model_artifacts(model_store, model_name):
    return model_store.artifacts(model_name)


@pytest.fixture(scope="session")
def profile(model_artifacts):
    return model_artifacts.profile


@pytest.fixture(scope="session")
def onnx_path(model_artifacts) -> Path:
    return model_artifacts.onnx


@pytest.fixture(scope="session")
def runner_pool(model_store, model_name):
    """Activated runners of this model by backend name, made on first request, released at session end."""
    return lambda backend: model_store.runner(model_name, backend)


@pytest.fixture(scope="session")
def reference_runner(runner_pool, model_artifacts):
    return runner_pool(model_artifacts.reference)


@pytest.fixture(scope="session")
def golden(model_store, model_artifacts, pytestconfig, model_name, reference_runner):
    """Per batch size: a feed (held-out rows cycled to fill the batch, else seeded sample inputs)
    and the reference's outputs for it."""
    from model.evaluate import evaluation_feed

    def make():
        profile = model_artifacts.profile
        source, _ = evaluation_feed(model_artifacts)
        total = len(next(iter(source.values())))
        sizes = sorted(set(pytestconfig.batch_sizes[model_name]) | {profile.min, profile.max, *profile.static}
                       | {n for n in options.PROBE_BATCHES if n in profile})
        out = {}
        for n in sizes:
            feed = {k: np.ascontiguousarray(v[np.arange(n) % total]) for k, v in source.items()}
            out[n] = (feed, reference_runner.infer(feed))
        return out
    return model_store.memo(model_name, "golden", make)


@pytest.fixture
def backend(request, backend_name, runner_pool, model_artifacts):
    """(activated runner, precision its outputs are judged at). Where this Python cannot build the
    model's PyTorch module (the GPU kit has no torchvision), ONNX Runtime CPU is the reference and
    the PyTorch backends skip, saying why."""
    from model.backends.base import BackendUnavailable
    from model.backends.registry import BACKENDS

    marker = request.node.get_closest_marker("backends")
    if backend_name == model_artifacts.reference and not (marker and marker.kwargs.get("include_reference")):
        pytest.skip(f"{backend_name} is the reference for {model_artifacts.spec.name} here: {model_artifacts._built}")
    try:
        return runner_pool(backend_name), BACKENDS[backend_name].precision
    except BackendUnavailable as exc:
        pytest.skip(str(exc))


# -- SimpleCNN's own: its training and data ------------------------------------------------------

@pytest.fixture(scope="session")
def dataset(pytestconfig):
    return data.load(pytestconfig.getoption("--data"))


@pytest.fixture(scope="session")
def trained(dataset, cache_dir):
    from model.training import load_or_train

    return load_or_train(dataset, cache_dir=cache_dir, progress=False)
