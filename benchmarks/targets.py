"""Device-resident timing targets: inputs already on the GPU, one synchronized call per run.

Each factory returns (target, check, gpu_time) where `target()` runs the model once and waits for
the device, `check()` returns the host outputs of the last run by name (to verify what was timed), and
`gpu_time(runs)` returns the GPU-side time of each of `runs` runs between CUDA events on the
runner's own stream, trtexec's "GPU compute time": the part of the latency the host cannot shave
(raw samples, so the regression gate can judge this clock; see benchmarks/samples.py). Only the
TensorRT target has it (None elsewhere): the report shows "-" for the others.
"""
from __future__ import annotations

import copy
import warnings

import numpy as np

GPU_TIME_RUNS = 50  # the fewest; the benchmark asks for as many as it timed rounds (see --bench-time)


def tensorrt_graph(runner, feed: dict):
    runner.upload(feed)
    graph = runner.capture_graph()

    launch, sync = graph.launch, runner.stream.synchronize

    def target():
        launch()
        sync()

    def gpu_time(runs: int = GPU_TIME_RUNS) -> list[float]:
        from model.backends.tensorrt import cuda as cuda_rt

        start, end, times = cuda_rt.Event(), cuda_rt.Event(), []
        try:
            for _ in range(runs):
                start.record(runner.stream)
                launch()
                end.record(runner.stream)
                sync()
                times.append(end.ms_since(start) / 1e3)
        finally:
            start.free()
            end.free()
        return times

    return target, runner.download, gpu_time


def pytorch(model, feed: dict, spec, precision: str, mode: str):
    """mode: eager | graph (torch.cuda.CUDAGraph) | compile (torch.compile, reduce-overhead)."""
    import torch

    from model.backends.pytorch import as_outputs, disable_tf32

    dtype = torch.float16 if precision == "fp16" else torch.float32
    torch.backends.cudnn.benchmark = True
    disable_tf32()  # FP32 is IEEE FP32 on every backend
    net = copy.deepcopy(model).to("cuda", dtype).eval()
    static = [torch.from_numpy(feed[n]).to("cuda", dtype if feed[n].dtype.kind == "f" else None) for n in spec.input_names]
    if mode == "compile":
        # reduce-overhead records CUDA graphs itself; its warm-up captures can be empty, which
        # torch reports as a UserWarning (seen on the H200 with torch 2.11). Not an error here:
        # the output is checked against PyTorch FP32 before timing.
        warnings.filterwarnings("ignore", message="The CUDA Graph is empty", category=UserWarning)
        net = torch.compile(net, mode="reduce-overhead", dynamic=False)
    holder = {}

    def forward():
        with torch.inference_mode():
            holder["out"] = as_outputs(net(*static), spec.output_names)

    if mode == "graph":
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                forward()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(graph):
            holder["out"] = as_outputs(net(*static), spec.output_names)

        def target():
            graph.replay()
            torch.cuda.synchronize()
    else:
        for _ in range(3):  # compile / cudnn autotune outside the timing
            forward()

        def target():
            forward()
            torch.cuda.synchronize()

    target()
    return target, lambda: {n: t.float().cpu().numpy() for n, t in holder["out"].items()}, None


def onnxruntime_cuda_graph(onnx_path, feed: dict, spec):
    """ONNX Runtime CUDA provider with IO binding on device buffers and CUDA graph replay."""
    import onnxruntime as ort

    from model.backends import ort_session
    from model.backends.onnxruntime import CUDA_OPTIONS

    providers = [("CUDAExecutionProvider", {**CUDA_OPTIONS, "enable_cuda_graph": "1"})]
    session, _ = ort_session.create(onnx_path, providers)
    if session.get_providers()[0] != "CUDAExecutionProvider":
        raise RuntimeError(f"ONNX Runtime fell back to {session.get_providers()}")
    sizes = {d: feed[t.name].shape[i] for t in spec.inputs for i, d in t.dynamic_axes.items()}
    binding = session.io_binding()
    inputs = {n: ort.OrtValue.ortvalue_from_numpy(feed[n], "cuda", 0) for n in spec.input_names}
    outputs = {t.name: ort.OrtValue.ortvalue_from_shape_and_type(
        tuple(sizes[d] if isinstance(d, str) else d for d in t.shape), np.dtype(t.dtype), "cuda", 0) for t in spec.outputs}
    for n, value in inputs.items():
        binding.bind_ortvalue_input(n, value)
    for n, value in outputs.items():
        binding.bind_ortvalue_output(n, value)

    def target():
        session.run_with_iobinding(binding)
        binding.synchronize_outputs()

    target()  # the first run captures the graph
    return target, lambda: {n: v.numpy() for n, v in outputs.items()}, None  # ONNX Runtime runs on its own stream
