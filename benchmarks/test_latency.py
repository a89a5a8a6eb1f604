"""Latency of every model x backend x precision x batch size, end-to-end and device-resident.

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

from benchmarks import samples, targets
from model.backends.base import InputError
from model.backends.registry import BACKENDS
from model.compare import compare_outputs

needs_torch_cuda = pytest.mark.needs_cuda("torch")
needs_ort_cuda = pytest.mark.needs_cuda("onnxruntime")
CPU_MAX_BATCH = 32  # CPU backends are the baseline here, not the subject: keep their runs short


def _bytes(values) -> int:
    return int(sum(np.asarray(v).nbytes for v in values))


def _moved(benchmark, feed: dict, out: dict) -> None:
    benchmark.extra_info.update(input_bytes=_bytes(feed.values()), output_bytes=_bytes(out.values()))


@pytest.mark.backends(include_reference=True)
def test_end_to_end(benchmark, timed, record, runner_pool, bench_feed, model_name, backend_name, bench_batch):
    if "-cpu" in backend_name and bench_batch > CPU_MAX_BATCH:
        pytest.skip(f"CPU backends are benchmarked up to batch {CPU_MAX_BATCH}")
    runner = runner_pool(backend_name)
    feed = bench_feed(bench_batch)
    timed(lambda: runner.infer(feed), model_name, bench_batch, iterations=1)
    record(model_name, backend_name, BACKENDS[backend_name].precision, "end-to-end", bench_batch)
    _moved(benchmark, feed, runner.infer(feed))


@pytest.fixture
def gpu_backend(backend_name):
    if "-cpu" in backend_name:
        pytest.skip("pinned and GPU inputs are measured on GPU backends")
    return backend_name


def _gpu_tensor(x: np.ndarray):
    """An array on the GPU as users would hold one: a torch CUDA tensor, or (no CUDA PyTorch, as in
    the TensorRT kit's Python) a cuda-python buffer exposing __cuda_array_interface__."""
    from model import capabilities

    if capabilities.torch_cuda() is None:
        import torch

        return torch.from_numpy(x).cuda(), lambda: None
    from model.backends.tensorrt import cuda as cuda_rt

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
        from model.backends.tensorrt import cuda as cuda_rt

        return cuda_rt.to_host(out)
    return cupy.asnumpy(cupy.asarray(out))


def _checked_against_reference(bench_feed, batch: int, out, precision: str, spec) -> None:
    result = compare_outputs(bench_feed.reference(batch), out, precision, spec)
    assert result, f"the timed call computes something else: {result.message}"


def test_end_to_end_pinned(benchmark, timed, record, runner_pool, bench_feed, model_spec, model_name, gpu_backend,
                           bench_batch):
    runner = runner_pool(gpu_backend)
    host = bench_feed(bench_batch)
    try:
        feed = runner.pinned_inputs(bench_batch)
    except (NotImplementedError, InputError) as exc:
        pytest.skip(str(exc))
    for n, x in host.items():
        feed[n][:] = x
    precision = BACKENDS[gpu_backend].precision
    _checked_against_reference(bench_feed, bench_batch, runner.infer(feed), precision, model_spec)
    timed(lambda: runner.infer(feed), model_name, bench_batch, iterations=1)
    record(model_name, gpu_backend, precision, "end-to-end-pinned", bench_batch)
    _moved(benchmark, host, runner.infer(feed))


@pytest.mark.parametrize("outputs", ["host", "device"], ids=["to-host", "to-device"])
def test_end_to_end_from_gpu(benchmark, timed, record, runner_pool, bench_feed, model_spec, model_name, gpu_backend,
                             bench_batch, outputs):
    runner = runner_pool(gpu_backend)
    host = bench_feed(bench_batch)
    tensors = {n: _gpu_tensor(x) for n, x in host.items()}
    try:
        feed = {n: t for n, (t, _) in tensors.items()}
        try:
            out = runner.infer(feed, outputs=outputs)
        except InputError as exc:  # e.g. int64 ids on the GPU for an engine that runs them as int32
            pytest.skip(str(exc))
        host_out = out if outputs == "host" else {n: _host_copy(v) for n, v in out.items()}
        precision = BACKENDS[gpu_backend].precision
        _checked_against_reference(bench_feed, bench_batch, host_out, precision, model_spec)
        timed(lambda: runner.infer(feed, outputs=outputs), model_name, bench_batch, iterations=1)
        mode = "end-to-end-gpu" if outputs == "host" else "gpu-in-out"
        record(model_name, gpu_backend, precision, mode, bench_batch)
        first = next(iter(feed.values()))
        benchmark.extra_info.update(input_bytes=0, output_bytes=_bytes(host_out.values()) if outputs == "host" else 0,
                                    gpu_input=type(first).__module__ + "." + type(first).__name__)
    finally:
        for _, free in tensors.values():
            free()


# Every TensorRT backend of the registry replays its graph; PyTorch and ONNX Runtime have several modes.
DEVICE = [pytest.param(b.name, b.precision, "graph", marks=pytest.mark.needs(*b.needs), id=f"{b.name}-graph")
          for b in BACKENDS.values() if b.framework == "TensorRT"] + [
    pytest.param("pytorch", "fp32", "eager", marks=needs_torch_cuda, id="pytorch-fp32-eager"),
    pytest.param("pytorch", "fp16", "eager", marks=needs_torch_cuda, id="pytorch-fp16-eager"),
    pytest.param("pytorch", "fp32", "graph", marks=needs_torch_cuda, id="pytorch-fp32-graph"),
    pytest.param("pytorch", "fp16", "graph", marks=needs_torch_cuda, id="pytorch-fp16-graph"),
    pytest.param("pytorch", "fp16", "compile", marks=needs_torch_cuda, id="pytorch-fp16-compile"),
    pytest.param("onnxruntime", "fp32", "graph", marks=needs_ort_cuda, id="onnxruntime-fp32-graph"),
    pytest.param("onnxruntime", "fp16", "graph", marks=needs_ort_cuda, id="onnxruntime-fp16-graph"),
]


@pytest.mark.parametrize("framework, precision, mode", DEVICE)
def test_device_resident(benchmark, timed, record, runner_pool, bench_feed, model_artifacts, model_spec, model_name,
                         framework, precision, mode, bench_batch):
    if precision not in model_spec.precisions:
        pytest.skip(f"{model_name} is not offered in {precision}: {model_spec.precision_notes}")
    feed = bench_feed(bench_batch)
    if framework.startswith("tensorrt"):
        runner = runner_pool(framework).runner_for(bench_batch)  # the engine that serves this batch
        target, check, gpu_time = targets.tensorrt_graph(runner, feed)
    elif framework == "pytorch":
        if not model_artifacts.has_module:
            pytest.skip(str(model_artifacts._built))
        target, check, gpu_time = targets.pytorch(model_artifacts.module, feed, model_spec, precision, mode)
    else:
        target, check, gpu_time = targets.onnxruntime_cuda_graph(model_artifacts.onnx_variant(precision), feed, model_spec)
    result = compare_outputs(bench_feed.reference(bench_batch), check(), precision, model_spec)
    assert result, f"the timed target computes something else: {result.message}"
    rounds = timed(target, model_name, bench_batch, iterations=10)
    name = framework if framework.startswith("tensorrt") else f"{framework}-{mode}"
    record(model_name, name, precision, "device-resident", bench_batch)
    if gpu_time is not None:
        samples.record_gpu_times(benchmark, gpu_time(max(targets.GPU_TIME_RUNS, rounds)))
    if framework.startswith("tensorrt"):
        (lo, *_), (hi, *_) = runner.shape_range[model_spec.input_names[0]]
        benchmark.extra_info["tensorrt_engine"] = {"min": lo, "opt": runner.profile_opts[runner.active_profile], "max": hi}
        runner.release_graph()
