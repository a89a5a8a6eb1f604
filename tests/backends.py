"""Backend parameters for tests: each carries the marker that says what it needs to run."""
import pytest

_CUDA_ORT = pytest.mark.needs_cuda("onnxruntime")
_CUDA_TORCH = pytest.mark.needs_cuda("torch")
_TRT = pytest.mark.needs_trt

# (backend name, precision its outputs are judged at, marks)
_ALL = [
    ("pytorch-cpu", "fp32", ()),
    ("onnxruntime-cpu", "fp32", ()),
    ("onnxruntime-cpu-fp16", "fp16", ()),
    ("onnxruntime-cpu-int8", "int8", ()),
    ("onnxruntime-cuda", "fp32", (_CUDA_ORT,)),
    ("onnxruntime-cuda-fp16", "fp16", (_CUDA_ORT,)),
    ("pytorch-cuda", "fp32", (_CUDA_TORCH,)),
    ("pytorch-cuda-fp16", "fp16", (_CUDA_TORCH,)),
    ("tensorrt-fp32", "fp32", (_TRT,)),
    ("tensorrt-fp16", "fp16", (_TRT,)),
    ("tensorrt-fp16-typed", "fp16", (_TRT,)),
    ("tensorrt-int8", "int8", (_TRT,)),
]


def backend_params(*, precisions=("fp32", "fp16", "int8"), include_reference=False):
    """(name, precision) params; the reference (pytorch-cpu) only when asked for."""
    return [pytest.param((name, precision), marks=marks, id=name)
            for name, precision, marks in _ALL
            if precision in precisions and (include_reference or name != "pytorch-cpu")]
