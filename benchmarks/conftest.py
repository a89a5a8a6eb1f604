"""Benchmark options, the machine info pytest-benchmark stores, and device-resident targets."""
from __future__ import annotations

import hashlib
import statistics
import time
from pathlib import Path

import numpy as np
import pytest

from model import capabilities, gpus, machine

GPU_BATCHES = (1, 32, 256, 4096)
CPU_BATCHES = (1, 8, 32)
ROUNDS, WARMUP = 30, 5        # fixed rounds per benchmark unless --bench-time asks for a time instead
MAX_ROUNDS = 2000


def _nonnegative(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise ValueError(f"expected a number >= 0, received {text!r}")
    return value


def pytest_addoption(parser):
    group = parser.getgroup("simplecnn")
    group.addoption(
        "--bench-batch-sizes", default=None,
        help=f"comma-separated batch sizes to benchmark (default {GPU_BATCHES} with a GPU, {CPU_BATCHES} without)")
    group.addoption("--bench-rounds", type=int, default=ROUNDS,
                    help="timed rounds per benchmark (default %(default)s; with --bench-time: the fewest)")
    group.addoption("--bench-warmup", type=int, default=WARMUP, help="untimed rounds first (default %(default)s)")
    group.addoption("--bench-time", type=_nonnegative, default=0.0,
                    help="seconds of timed rounds per benchmark: rounds = this / the warm-up's median round, between "
                         f"--bench-rounds and {MAX_ROUNDS} (default 0: exactly --bench-rounds). The regression gate "
                         "uses it so that a 50 us call gets hundreds of rounds and a 20 ms one a few, in the same time")


def rounds_for(config, round_s: float) -> int:
    """How many timed rounds a benchmark gets, given its warm-up's median round time."""
    rounds, budget = config.getoption("--bench-rounds"), config.getoption("--bench-time")
    if not budget:
        return rounds
    return int(min(MAX_ROUNDS, max(rounds, budget / max(round_s, 1e-9))))


def bench_batches(config) -> list[int]:
    text = config.getoption("--bench-batch-sizes")
    if text:
        return [int(v) for v in text.split(",") if v.strip()]
    return list(GPU_BATCHES if capabilities.gpu() is None else CPU_BATCHES)


def pytest_configure(config):
    # Latency is timed on one GPU with the host to itself: runs on a host's other GPUs would share
    # its PCIe links, copy engines and CPU cores, and their traffic would be in every number.
    plan = gpus.assigned(config)
    if plan and len(set(plan)) > 1:
        raise pytest.UsageError(f"benchmarks run on one GPU; received workers spread over GPUs {sorted(set(plan))} "
                                "(-n with several GPUs, or --gpus); run them without -n, or pin one GPU with --gpus I")


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


@pytest.fixture
def timed(benchmark, pytestconfig):
    """benchmark.pedantic with the rounds of --bench-rounds / --bench-time. The warm-up runs here,
    timed, so that --bench-time can size the run from it; returns the number of timed rounds."""
    def run(target, model: str, batch: int, iterations: int) -> int:
        took = []
        for _ in range(max(1, pytestconfig.getoption("--bench-warmup"))):
            start = time.perf_counter()
            for _ in range(iterations):
                target()
            took.append(time.perf_counter() - start)
        rounds = rounds_for(pytestconfig, statistics.median(took))
        benchmark.group = f"{model}-bs{batch}"
        benchmark.pedantic(target, warmup_rounds=0, rounds=rounds, iterations=iterations)
        return rounds
    return run


@pytest.fixture(scope="session")
def bench_feed(model_store, model_artifacts, model_name, cache_dir):
    """Per batch: the held-out rows cycled to fill it, and the reference's outputs for them.

    Every benchmark of a batch checks what it timed against the same outputs, made once per session
    and kept in the artifact cache (keyed by the model's weights, the reference backend and its
    library versions, and the feed's bytes), so that a fresh process, of which the regression gate
    starts dozens, reads them instead of running PyTorch FP32 on the CPU (seconds at batch 4096)."""
    def get(n: int) -> dict:
        def make():
            from model.evaluate import evaluation_feed

            source, _ = evaluation_feed(model_artifacts)
            total = len(next(iter(source.values())))
            return {k: np.ascontiguousarray(v[np.arange(n) % total]) for k, v in source.items()}
        return model_store.memo(model_name, f"bench-feed-{n}", make)

    def reference(n: int) -> dict:
        return model_store.memo(model_name, f"bench-reference-{n}", lambda: _reference_outputs(n))

    def _reference_outputs(n: int) -> dict:
        from model import cache, machine

        feed, ref = get(n), model_artifacts.reference
        digest = hashlib.sha256()
        for name in sorted(feed):
            digest.update(f"{name}:{feed[name].dtype}:{feed[name].shape}".encode())
            digest.update(feed[name].tobytes())
        key_inputs = {"model": model_name, "model_key": model_artifacts._onnx_key(), "reference": ref,
                      "feed_sha256": digest.hexdigest(), "libraries": machine.library_versions()}

        def build(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, **model_store.runner(model_name, ref).infer(feed))

        found = cache.get_or_build(cache_dir / "reference", f"{model_name}-bs{n}-{cache.key(key_inputs)}.npz",
                                   key_inputs, build)
        with np.load(found.path) as saved:
            return {name: saved[name] for name in saved.files}

    get.reference = reference
    return get
