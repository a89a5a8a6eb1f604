"""What this machine can run, and why not when it cannot (turned into test skips and table notes).

Each check returns None when the capability is there, else a reason. `machine_level` reasons
(no GPU, no TensorRT) are what `--require-gpu` turns into failures; a library built without
CUDA on a machine that has a GPU is a build choice and stays a skip with its reason.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True)
class Missing:
    reason: str
    machine_level: bool


@lru_cache(maxsize=None)
def gpu() -> Missing | None:
    from model.backends.tensorrt.cuda import gpu_unavailable_reason

    reason = gpu_unavailable_reason()
    return Missing(reason, True) if reason else None


@lru_cache(maxsize=None)
def tensorrt() -> Missing | None:
    from model.backends.base import BackendUnavailable
    from model.backends.tensorrt.compat import import_tensorrt

    try:
        import_tensorrt()
    except BackendUnavailable as exc:
        return Missing(str(exc), True)
    return gpu()


@lru_cache(maxsize=None)
def torch_cuda() -> Missing | None:
    missing = gpu()
    if missing:
        return missing
    import torch

    if not torch.cuda.is_available():
        return Missing(f"torch {torch.__version__} cannot use the GPU (a CPU build?)", False)
    return None


@lru_cache(maxsize=None)
def ort_cuda() -> Missing | None:
    missing = gpu()
    if missing:
        return missing
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return Missing(f"onnxruntime {ort.__version__} has no CUDAExecutionProvider (install onnxruntime-gpu)", False)
    # The provider can be listed and still fail to load its CUDA libraries: probe a real session.
    from onnx import TensorProto, helper

    from model.backends.onnxruntime import preload_cuda_libraries

    preload_cuda_libraries(ort)
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    # IR 8 (opset 17's): onnx writes its newest IR by default, which older runtimes refuse.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    options = ort.SessionOptions()
    options.log_severity_level = 4
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CUDAExecutionProvider"])
    if session.get_providers()[0] != "CUDAExecutionProvider":
        return Missing(f"onnxruntime's CUDAExecutionProvider falls back to {session.get_providers()}", False)
    return None


@lru_cache(maxsize=None)
def tensorrt_builder_flags() -> Missing | None:
    """TensorRT's FP16/INT8 builder flags (gone in 11: reduced precision only through typed graphs)."""
    missing = tensorrt()
    if missing:
        return missing
    from model.backends.tensorrt.compat import import_tensorrt, major

    trt = import_tensorrt()
    if major(trt) >= 11:
        return Missing(f"TensorRT {trt.__version__} has no FP16/INT8 builder flags (use the typed backends)", False)
    return None


CHECKS = {"gpu": gpu, "tensorrt": tensorrt, "torch": torch_cuda, "onnxruntime": ort_cuda,
          "tensorrt_builder_flags": tensorrt_builder_flags}
