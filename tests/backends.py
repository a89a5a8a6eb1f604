"""Backend parameters for tests: each carries the marker that says what it needs to run."""
import pytest

# (backend name, precision the comparison uses, marks)
_ALL = [
    ("onnxruntime-cpu", "fp32", ()),
    ("onnxruntime-cuda", "fp32", (pytest.mark.needs_cuda("onnxruntime"),)),
    ("pytorch-cuda", "fp32", (pytest.mark.needs_cuda("torch"),)),
    ("tensorrt-fp32", "fp32", (pytest.mark.needs_trt,)),
    ("tensorrt-fp16", "fp16", (pytest.mark.needs_trt,)),
]


def backend_params(*, precisions=("fp32", "fp16")):
    return [pytest.param((name, precision), marks=marks, id=name)
            for name, precision, marks in _ALL if precision in precisions]
