"""Latency of every model x backend x precision x batch size, end-to-end and device-resident.

end-to-end:      `runner.infer(host numpy) -> host numpy`, validation and copies included.
device-resident: inputs already on the GPU, CUDA graph replay where the backend supports it.
Every timed target synchronizes before it returns.
"""
import numpy as np
import pytest

from benchmarks import samples, targets
from model.backends import BACKENDS
from model.compare import compare_outputs

needs_torch_cuda = pytest.mark.needs_cuda("torch")
needs_ort_cuda = pytest.mark.needs_cuda("onnxruntime")
CPU_MAX_BATCH = 32  # CPU backends are the baseline here, not the subject: keep their runs short


def _feed(model_artifacts, n: int) -> dict:
    from model.evaluate import evaluation_feed

    source, _ = evaluation_feed(model_artifacts)
    total = len(next(iter(source.values())))
    return {k: np.ascontiguousarray(v[np.arange(n) % total]) for k, v in source.items()}


def _pedantic(benchmark, target, model: str, batch: int, iterations: int):
    benchmark.group = f"{model}-bs{batch}"
    benchmark.pedantic(target, warmup_rounds=5, rounds=30, iterations=iterations)


@pytest.mark.backends(include_reference=True)
def test_end_to_end(benchmark, record, runner_pool, model_artifacts, model_name, backend_name, bench_batch):
    if "-cpu" in backend_name and bench_batch > CPU_MAX_BATCH:
        pytest.skip(f"CPU backends are benchmarked up to batch {CPU_MAX_BATCH}")
    runner = runner_pool(backend_name)
    feed = _feed(model_artifacts, bench_batch)
    _pedantic(benchmark, lambda: runner.infer(feed), model_name, bench_batch, iterations=1)
    record(model_name, backend_name, BACKENDS[backend_name].precision, "end-to-end", bench_batch)


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
def test_device_resident(benchmark, record, runner_pool, model_artifacts, model_spec, model_name, reference_runner,
                         framework, precision, mode, bench_batch):
    if precision not in model_spec.precisions:
        pytest.skip(f"{model_name} is not offered in {precision}: {model_spec.precision_notes}")
    feed = _feed(model_artifacts, bench_batch)
    if framework.startswith("tensorrt"):
        runner = runner_pool(framework).runner_for(bench_batch)  # the engine that serves this batch
        target, check, gpu_time = targets.tensorrt_graph(runner, feed)
    elif framework == "pytorch":
        if not model_artifacts.has_module:
            pytest.skip(str(model_artifacts._built))
        target, check, gpu_time = targets.pytorch(model_artifacts.module, feed, model_spec, precision, mode)
    else:
        target, check, gpu_time = targets.onnxruntime_cuda_graph(model_artifacts.onnx_variant(precision), feed, model_spec)
    result = compare_outputs(reference_runner.infer(feed), check(), precision, model_spec)
    assert result, f"the timed target computes something else: {result.message}"
    _pedantic(benchmark, target, model_name, bench_batch, iterations=10)
    name = framework if framework.startswith("tensorrt") else f"{framework}-{mode}"
    record(model_name, name, precision, "device-resident", bench_batch)
    if gpu_time is not None:
        samples.record_gpu_times(benchmark, gpu_time())
    if framework.startswith("tensorrt"):
        (lo, *_), (hi, *_) = runner.shape_range[model_spec.input_names[0]]
        benchmark.extra_info["tensorrt_engine"] = {"min": lo, "opt": runner.profile_opts[runner.active_profile], "max": hi}
        runner.release_graph()
