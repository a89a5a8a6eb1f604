"""Latency of every backend x precision x batch size, end-to-end and device-resident.

end-to-end:      `runner.infer(host numpy) -> host numpy`, validation and copies included.
device-resident: inputs already on the GPU, CUDA graph replay where the backend supports it.
Every timed target synchronizes before it returns.
"""
import numpy as np
import pytest

from benchmarks import samples, targets
from model.backends import BACKENDS
from model.compare import compare
from model.profile import INPUT_NAME, OUTPUT_NAME
from tests.backends import backend_params

needs_torch_cuda = pytest.mark.needs_cuda("torch")
needs_ort_cuda = pytest.mark.needs_cuda("onnxruntime")
CPU_MAX_BATCH = 32  # CPU backends are the baseline here, not the subject: keep their runs short


def _images(dataset, n: int) -> np.ndarray:
    return np.ascontiguousarray(dataset.holdout.x[np.arange(n) % len(dataset.holdout)])


def _pedantic(benchmark, target, batch: int, iterations: int):
    benchmark.group = f"bs{batch}"
    benchmark.pedantic(target, warmup_rounds=5, rounds=30, iterations=iterations)


@pytest.fixture(params=backend_params(include_reference=True))
def backend(request):
    return request.param[0]


def test_end_to_end(benchmark, record, runner_pool, dataset, backend, bench_batch):
    if "-cpu" in backend and bench_batch > CPU_MAX_BATCH:
        pytest.skip(f"CPU backends are benchmarked up to batch {CPU_MAX_BATCH}")
    runner = runner_pool(backend)
    feed = {INPUT_NAME: _images(dataset, bench_batch)}
    _pedantic(benchmark, lambda: runner.infer(feed), bench_batch, iterations=1)
    record(backend, BACKENDS[backend].precision, "end-to-end", bench_batch)


DEVICE = [
    pytest.param("tensorrt-fp32", "fp32", "graph", marks=pytest.mark.needs_trt, id="tensorrt-fp32-graph"),
    pytest.param("tensorrt-fp16", "fp16", "graph", marks=pytest.mark.needs_trt, id="tensorrt-fp16-graph"),
    pytest.param("tensorrt-fp16-typed", "fp16", "graph", marks=pytest.mark.needs_trt, id="tensorrt-fp16-typed-graph"),
    pytest.param("tensorrt-int8", "int8", "graph", marks=pytest.mark.needs_trt, id="tensorrt-int8-graph"),
    pytest.param("pytorch", "fp32", "eager", marks=needs_torch_cuda, id="pytorch-fp32-eager"),
    pytest.param("pytorch", "fp16", "eager", marks=needs_torch_cuda, id="pytorch-fp16-eager"),
    pytest.param("pytorch", "fp32", "graph", marks=needs_torch_cuda, id="pytorch-fp32-graph"),
    pytest.param("pytorch", "fp16", "graph", marks=needs_torch_cuda, id="pytorch-fp16-graph"),
    pytest.param("pytorch", "fp16", "compile", marks=needs_torch_cuda, id="pytorch-fp16-compile"),
    pytest.param("onnxruntime", "fp32", "graph", marks=needs_ort_cuda, id="onnxruntime-fp32-graph"),
    pytest.param("onnxruntime", "fp16", "graph", marks=needs_ort_cuda, id="onnxruntime-fp16-graph"),
]


@pytest.mark.parametrize("framework, precision, mode", DEVICE)
def test_device_resident(benchmark, record, runner_pool, model_artifacts, golden_logits, dataset,
                         framework, precision, mode, bench_batch):
    x = _images(dataset, bench_batch)
    if framework.startswith("tensorrt"):
        runner = runner_pool(framework).runner_for(bench_batch)  # the engine that serves this batch
        target, check, gpu_time = targets.tensorrt_graph(runner, x)
    elif framework == "pytorch":
        target, check, gpu_time = targets.pytorch(model_artifacts.trained.model, x, precision, mode)
    else:
        target, check, gpu_time = targets.onnxruntime_cuda_graph(model_artifacts.onnx_variant(precision), x)
    result = compare(golden_logits(x), check(), precision)
    assert result, f"the timed target computes something else: {result.message}"
    _pedantic(benchmark, target, bench_batch, iterations=10)
    name = framework if framework.startswith("tensorrt") else f"{framework}-{mode}"
    record(name, precision, "device-resident", bench_batch)
    if gpu_time is not None:
        samples.record_gpu_times(benchmark, gpu_time())
    if framework.startswith("tensorrt"):
        (lo, *_), (hi, *_) = runner.shape_range[INPUT_NAME]
        benchmark.extra_info["tensorrt_engine"] = {"min": lo, "opt": runner.profile_opts[runner.active_profile], "max": hi}
        runner.release_graph()


@pytest.fixture(scope="session")
def golden_logits(runner_pool):
    reference = runner_pool("pytorch-cpu")
    return lambda x: reference.infer({INPUT_NAME: x})[OUTPUT_NAME]
