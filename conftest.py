"""Suite-wide options, GPU markers and the costly session fixtures (trained model, ONNX, engines)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from model import cache, capabilities, data, validate
from model.profile import DEFAULT_PROFILE, INPUT_NAME, OUTPUT_NAME, BatchProfile

settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.register_profile("dev", max_examples=10, deadline=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))



def pytest_addoption(parser):
    group = parser.getgroup("simplecnn")
    group.addoption("--batch-sizes", default=None,
                    help="comma-separated batch sizes for parity tests (default: the profile's min, 7, 32 "
                         "and the profile's max; each must lie in the profile)")
    group.addoption("--profile", default=DEFAULT_PROFILE.spec(),
                    help="batch range the runners declare and TensorRT engines are built for, MIN,OPT,MAX[,STATIC]: "
                         "one TensorRT engine per opt batch ('/' between several) and one fixed-shape engine per "
                         "static batch (default %(default)s)")
    group.addoption("--data", default=data.SYNTHETIC,
                    help="'synthetic' (embedded, default) or a folder holding CIFAR-100's cifar-100-python/")
    group.addoption("--require-gpu", action="store_true",
                    help="GPU-marked tests fail instead of skipping when there is no GPU or TensorRT")
    group.addoption("--cache-dir", default=str(cache.DEFAULT_CACHE),
                    help="where trained weights, ONNX files and engines are cached (default %(default)s)")


def _option(config, name: str, parse):
    """The option parsed the CLI's way; a bad value stops pytest with the option's name."""
    try:
        return parse(config.getoption(name))
    except ValueError as exc:
        raise pytest.UsageError(f"{name}: {exc}") from None


def pytest_configure(config):
    config.profile = profile = _option(config, "--profile", BatchProfile.parse)
    if config.getoption("--batch-sizes") is None:
        sizes = sorted({n for n in (profile.min, 7, 32, profile.max) if n in profile})
    else:
        sizes = _option(config, "--batch-sizes", validate.batch_sizes)
    if not (7 in profile and 32 in profile):
        raise pytest.UsageError(f"--profile {profile} must include batches 7 and 32 (the suite's fixed probe sizes)")
    try:
        validate.batches_in_profile(sizes, profile)
        validate.writable_folder(config.getoption("--cache-dir"), "--cache-dir")
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.batch_sizes = sizes


def _missing_for(item) -> capabilities.Missing | None:
    for marker in item.iter_markers():
        if marker.name == "needs_trt":
            missing = capabilities.tensorrt()
        elif marker.name == "needs_cuda":
            missing = capabilities.CHECKS[marker.args[0] if marker.args else "gpu"]()
        else:
            continue
        if missing:
            return missing
    return None


def pytest_collection_modifyitems(config, items):
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


def pytest_generate_tests(metafunc):
    if "batch_size" in metafunc.fixturenames:
        sizes = metafunc.config.batch_sizes
        metafunc.parametrize("batch_size", sizes, ids=[f"bs{s}" for s in sizes])


# -- session fixtures: built once, cached on disk across sessions -----------------------------------

@pytest.fixture(scope="session")
def cache_dir(pytestconfig) -> Path:
    return Path(pytestconfig.getoption("--cache-dir"))


@pytest.fixture(scope="session")
def profile(pytestconfig) -> BatchProfile:
    return pytestconfig.profile


@pytest.fixture(scope="session")
def dataset(pytestconfig):
    return data.load(pytestconfig.getoption("--data"))


@pytest.fixture(scope="session")
def trained(dataset, cache_dir):
    from model.training import load_or_train

    return load_or_train(dataset, cache_dir=cache_dir)


@pytest.fixture(scope="session")
def model_artifacts(trained, dataset, cache_dir, profile):
    from model.backends import ModelArtifacts

    return ModelArtifacts(trained, cache_dir, profile=profile, calib_images=dataset.calib.x)


@pytest.fixture(scope="session")
def onnx_path(model_artifacts) -> Path:
    return model_artifacts.onnx


@pytest.fixture(scope="session")
def golden(dataset, trained, pytestconfig, profile):
    """Per batch size: held-out images (cycled to fill the batch) and PyTorch FP32 CPU logits."""
    from model.runners.torch_runner import TorchRunner

    holdout = dataset.holdout
    sizes = sorted(set(pytestconfig.batch_sizes) | {profile.min, 7, 32, profile.max, *profile.static})
    out = {}
    with TorchRunner(trained.model, profile=profile) as ref:
        for n in sizes:
            x = np.ascontiguousarray(holdout.x[np.arange(n) % len(holdout)])
            out[n] = (x, ref.infer({INPUT_NAME: x})[OUTPUT_NAME])
    return out


@pytest.fixture(scope="session")
def runner_pool(model_artifacts):
    """Activated runners by backend name, made on first request and released at session end."""
    from model.backends import BACKENDS

    pool = {}

    def get(name: str):
        if name not in pool:
            pool[name] = BACKENDS[name].make(model_artifacts).activate()
        return pool[name]

    yield get
    for runner in pool.values():
        runner.deactivate()
