"""Benchmark options, the machine info pytest-benchmark stores, and device-resident targets."""
from __future__ import annotations

import pytest

from model import capabilities, machine

GPU_BATCHES = (1, 32, 256, 4096)
CPU_BATCHES = (1, 8, 32)


def pytest_addoption(parser):
    parser.getgroup("simplecnn").addoption(
        "--bench-batch-sizes", default=None,
        help=f"comma-separated batch sizes to benchmark (default {GPU_BATCHES} with a GPU, {CPU_BATCHES} without)")


def bench_batches(config) -> list[int]:
    text = config.getoption("--bench-batch-sizes")
    if text:
        return [int(v) for v in text.split(",") if v.strip()]
    return list(GPU_BATCHES if capabilities.gpu() is None else CPU_BATCHES)


def pytest_generate_tests(metafunc):
    """Per model, the benchmark batches its profile holds (the root conftest parametrizes the model)."""
    if "bench_batch" in metafunc.fixturenames and "model_name" not in metafunc.fixturenames:
        sizes = bench_batches(metafunc.config)
        metafunc.parametrize("bench_batch", sizes, ids=[f"bs{n}" for n in sizes])


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["libraries"] = machine.library_versions()
    machine_info["gpu"] = machine.gpu_info()
    # The report's PCIe floor divides each row's bytes by this, measured in the same session.
    machine_info["h2d_bandwidth"] = machine.copy_bandwidth()


@pytest.fixture
def record(benchmark):
    """Fill extra_info after a pedantic run: what ran, and images/s from the median."""
    def _record(model: str, backend: str, precision: str, mode: str, batch: int) -> None:
        median = benchmark.stats.stats.median if benchmark.stats else None  # None: --benchmark-disable
        benchmark.extra_info.update(model=model, backend=backend, precision=precision, mode=mode, batch=batch,
                                    images_per_s=batch / median if median else None)
    return _record
