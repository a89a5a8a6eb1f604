"""Latency of every backend x precision x batch size, end-to-end and device-resident.

end-to-end:        `runner.infer(pageable host numpy) -> host numpy`, validation and copies included.
end-to-end-pinned: the same from the runner's own pinned buffers (`pinned_inputs`), where it has them.
end-to-end-gpu:    `runner.infer(array already on the GPU) -> host numpy` (a torch CUDA tensor where
                   CUDA PyTorch is installed, else a cuda-python buffer exposing __cuda_array_interface__).
gpu-in-out:        GPU array in, `outputs="device"` out: what `infer` adds to the device-resident run.
device-resident:   inputs already on the GPU, CUDA graph replay where the backend supports it.
Every timed target synchronizes before it returns. Each record carries the bytes it moves
(`input_bytes`, `output_bytes`) so the report can set its PCIe floor beside it.
"""
import numpy as np
import pytest

from benchmarks import targets
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


def _moved(benchmark, x: np.ndarray, out) -> None:
    benchmark.extra_info.update(input_bytes=int(x.nbytes), output_bytes=int(np.asarray(out).nbytes))


def test_end_to_end(benchmark, record, runner_pool, dataset, backend, bench_batch):
    if "-cpu" in backend and bench_batch > CPU_MAX_BATCH:
        pytest.skip(f"CPU backends are benchmarked up to batch {CPU_MAX_BATCH}")
    runner = runner_pool(backend)
    feed = {INPUT_NAME: _images(dataset, bench_batch)}
    _pedantic(benchmark, lambda: runner.infer(feed), bench_batch, iterations=1)
    record(backend, BACKENDS[backend].precision, "end-to-end", bench_batch)
    _moved(benchmark, feed[INPUT_NAME], runner.infer(feed)[OUTPUT_NAME])


@pytest.fixture(params=backend_params(), ids=lambda p: p[0])
def gpu_backend(request):
    name = request.param[0]
    if "-cpu" in name:
        pytest.skip("pinned and GPU inputs are measured on GPU backends")
    return name


def _gpu_tensor(x: np.ndarray):
    """An array on the GPU as users would hold one: a torch CUDA tensor, or (no CUDA PyTorch, as in
    the TensorRT kit's Python) a cuda-python buffer exposing __cuda_array_interface__."""
    from model import capabilities

    if capabilities.torch_cuda() is None:
        import torch

        return torch.from_numpy(x).cuda(), lambda: None
    from model import cuda_rt

    array = cuda_rt.DeviceArray.from_host(x)
    return array, array.free


def _host_copy(out) -> np.ndarray:
    """A device output read back (checking only, never timed): PyTorch's own tensor, else through
    CuPy where installed, else cuda-python."""
    if hasattr(out, "cpu"):
        return out.cpu().numpy()
    try:
        import cupy
    except ImportError:
        from model import cuda_rt

        return cuda_rt.to_host(out)
    return cupy.asnumpy(cupy.asarray(out))


def _checked_against_host(x, out, golden_logits, precision: str) -> None:
    result = compare(golden_logits(x), out, precision)
    assert result, f"the timed call computes something else: {result.message}"


def test_end_to_end_pinned(benchmark, record, runner_pool, dataset, golden_logits, gpu_backend, bench_batch):
    runner = runner_pool(gpu_backend)
    x = _images(dataset, bench_batch)
    try:
        feed = runner.pinned_inputs(bench_batch)
    except NotImplementedError as exc:
        pytest.skip(str(exc))
    feed[INPUT_NAME][:] = x
    _checked_against_host(x, runner.infer(feed)[OUTPUT_NAME], golden_logits, BACKENDS[gpu_backend].precision)
    _pedantic(benchmark, lambda: runner.infer(feed), bench_batch, iterations=1)
    record(gpu_backend, BACKENDS[gpu_backend].precision, "end-to-end-pinned", bench_batch)
    _moved(benchmark, x, runner.infer(feed)[OUTPUT_NAME])


@pytest.mark.parametrize("outputs", ["host", "device"], ids=["to-host", "to-device"])
def test_end_to_end_from_gpu(benchmark, record, runner_pool, dataset, golden_logits, gpu_backend, bench_batch, outputs):
    runner = runner_pool(gpu_backend)
    x = _images(dataset, bench_batch)
    tensor, free = _gpu_tensor(x)
    try:
        feed = {INPUT_NAME: tensor}
        out = runner.infer(feed, outputs=outputs)[OUTPUT_NAME]
        host_out = out if outputs == "host" else _host_copy(out)
        _checked_against_host(x, host_out, golden_logits, BACKENDS[gpu_backend].precision)
        _pedantic(benchmark, lambda: runner.infer(feed, outputs=outputs), bench_batch, iterations=1)
        mode = "end-to-end-gpu" if outputs == "host" else "gpu-in-out"
        record(gpu_backend, BACKENDS[gpu_backend].precision, mode, bench_batch)
        benchmark.extra_info.update(input_bytes=0, output_bytes=int(host_out.nbytes) if outputs == "host" else 0,
                                    gpu_input=type(tensor).__module__ + "." + type(tensor).__name__)
    finally:
        free()


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
        benchmark.extra_info["gpu_compute_median_s"] = gpu_time()
    if framework.startswith("tensorrt"):
        (lo, *_), (hi, *_) = runner.shape_range[INPUT_NAME]
        benchmark.extra_info["tensorrt_engine"] = {"min": lo, "opt": runner.profile_opts[runner.active_profile], "max": hi}
        runner.release_graph()


@pytest.fixture(scope="session")
def golden_logits(runner_pool):
    reference = runner_pool("pytorch-cpu")
    return lambda x: reference.infer({INPUT_NAME: x})[OUTPUT_NAME]
