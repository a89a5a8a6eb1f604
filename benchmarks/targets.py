"""Device-resident timing targets: inputs already on the GPU, one synchronized call per run.

Each factory returns (target, check, gpu_time) where `target()` runs the model once and waits for
the device, `check()` returns the host logits of the last run (to verify what was timed), and
`gpu_time()` returns the GPU-side time of each of GPU_TIME_RUNS runs between CUDA events on the
runner's own stream, trtexec's "GPU compute time": the part of the latency the host cannot shave
(raw samples, so the regression gate can judge this clock; see benchmarks/samples.py). Only the
TensorRT target has it (None elsewhere): the report shows "-" for the others.
"""
from __future__ import annotations

import copy
import warnings

import numpy as np

from model.profile import INPUT_NAME, OUTPUT_NAME

GPU_TIME_RUNS = 50


def tensorrt_graph(runner, x: np.ndarray):
    runner.upload({INPUT_NAME: x})
    graph = runner.capture_graph()

    launch, sync = graph.launch, runner.stream.synchronize

    def target():
        launch()
        sync()

    def gpu_time() -> list[float]:
        from model import cuda_rt

        start, end, times = cuda_rt.Event(), cuda_rt.Event(), []
        try:
            for _ in range(GPU_TIME_RUNS):
                start.record(runner.stream)
                launch()
                end.record(runner.stream)
                sync()
                times.append(end.ms_since(start) / 1e3)
        finally:
            start.free()
            end.free()
        return times

    return target, lambda: runner.download()[OUTPUT_NAME], gpu_time


def pytorch(model, x: np.ndarray, precision: str, mode: str):
    """mode: eager | graph (torch.cuda.CUDAGraph) | compile (torch.compile, reduce-overhead)."""
    import torch

    from model.runners.torch_runner import disable_tf32

    dtype = torch.float16 if precision == "fp16" else torch.float32
    torch.backends.cudnn.benchmark = True
    disable_tf32()  # FP32 is IEEE FP32 on every backend
    net = copy.deepcopy(model).to("cuda", dtype).eval()
    static_x = torch.from_numpy(x).to("cuda", dtype)
    if mode == "compile":
        # reduce-overhead records CUDA graphs itself; its warm-up captures can be empty, which
        # torch reports as a UserWarning (seen on the H200 with torch 2.11). Not an error here:
        # the output is checked against PyTorch FP32 before timing.
        warnings.filterwarnings("ignore", message="The CUDA Graph is empty", category=UserWarning)
        net = torch.compile(net, mode="reduce-overhead", dynamic=False)
    holder = {}

    def forward():
        with torch.inference_mode():
            holder["out"] = net(static_x)

    if mode == "graph":
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                forward()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(graph):
            holder["out"] = net(static_x)

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
    return target, lambda: holder["out"].float().cpu().numpy(), None


def onnxruntime_cuda_graph(onnx_path, x: np.ndarray):
    """ONNX Runtime CUDA provider with IO binding on device buffers and CUDA graph replay."""
    import onnxruntime as ort

    from model.runners.ort_runner import CUDA_OPTIONS

    providers = [("CUDAExecutionProvider", {**CUDA_OPTIONS, "enable_cuda_graph": "1"})]
    session = ort.InferenceSession(str(onnx_path), providers=providers)
    if session.get_providers()[0] != "CUDAExecutionProvider":
        raise RuntimeError(f"ONNX Runtime fell back to {session.get_providers()}")
    x_dev = ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0)
    y_dev = ort.OrtValue.ortvalue_from_shape_and_type((x.shape[0], 100), np.float32, "cuda", 0)
    binding = session.io_binding()
    binding.bind_ortvalue_input(INPUT_NAME, x_dev)
    binding.bind_ortvalue_output(OUTPUT_NAME, y_dev)

    def target():
        session.run_with_iobinding(binding)
        binding.synchronize_outputs()

    target()  # the first run captures the graph
    return target, lambda: y_dev.numpy(), None  # ONNX Runtime runs on its own stream
