"""Every backend, declared once.

A backend says what it needs (a capability from model/capabilities.py: a GPU, a library's CUDA
build, TensorRT, TensorRT's FP16/INT8 builder flags) and which model it applies to (a precision the
model is offered in; PyTorch needs a PyTorch source). The CLI, the tests, the benchmarks, the skip
markers and the GPU scripts all take their lists from `BACKENDS`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from model import capabilities
from model.artifacts import ModelArtifacts
from model.backends.base import BackendUnavailable, Runner


@dataclass(frozen=True)
class Backend:
    name: str
    framework: str
    precision: str
    needs: tuple[str, ...]  # capabilities (model/capabilities.py CHECKS) this machine must have
    make: Callable[[ModelArtifacts], Runner]
    artifact: Callable[[ModelArtifacts], list[Path]]  # what is deployed: a TensorRT set is several plans
    module_only: bool = False  # runs the PyTorch module (a model without one has no such backend)
    typed_graph: bool = False  # TensorRT: built from the ONNX variant that carries the precision

    def missing(self) -> capabilities.Missing | None:
        """Why this machine cannot run the backend, or None."""
        for need in self.needs:
            missing = capabilities.CHECKS[need]()
            if missing:
                return missing
        return None

    def not_for(self, arts: ModelArtifacts) -> str | None:
        """Why the backend does not apply to this model here, or None."""
        if self.precision not in arts.spec.precisions:
            return f"{arts.spec.name} is not offered in {self.precision}: {arts.spec.precision_notes}"
        if self.module_only and not arts.has_module:
            return str(arts._built)
        return None

    def runner(self, arts: ModelArtifacts) -> Runner:
        reason = self.not_for(arts)
        if reason:
            raise BackendUnavailable(reason)
        # What the machine lacks is known before trying: onnxruntime-gpu without a GPU would log
        # its CUDA provider's failed library load on every attempt.
        missing = self.missing()
        if missing:
            raise BackendUnavailable(missing.reason)
        return self.make(arts)


def _torch(device: str, precision: str):
    def make(a: ModelArtifacts) -> Runner:
        from model.backends.pytorch import TorchRunner

        return TorchRunner(a.module, a.spec.input_metadata(), a.spec.output_names, device=device, precision=precision)
    return make


def _ort(device: str, precision: str = "fp32"):
    def make(a: ModelArtifacts) -> Runner:
        from model.backends.onnxruntime import OrtRunner

        return OrtRunner(a.onnx_variant(precision), a.spec.input_metadata(), device=device, label=precision,
                         cache_dir=a.cache_dir)
    return make


def _trt(precision: str, typed_graph: bool = False):
    def make(a: ModelArtifacts) -> Runner:
        from model.backends.tensorrt.engine_set import TrtEngineSet

        plans = {profile: engine.plan() for profile, engine in a.engine_set(precision, typed_graph).items()}
        return TrtEngineSet(plans, label=precision + ("-typed" if typed_graph else ""), declared=a.spec.input_metadata())
    return make


def _trt_files(precision: str, typed_graph: bool = False):
    return lambda a: [e.path for e in a.engine_set(precision, typed_graph).values()]


_WEIGHTS = lambda a: [a.checkpoint]  # noqa: E731
BACKENDS = {b.name: b for b in [
    Backend("pytorch-cpu", "PyTorch", "fp32", (), _torch("cpu", "fp32"), _WEIGHTS, module_only=True),
    Backend("pytorch-cuda", "PyTorch", "fp32", ("torch",), _torch("cuda", "fp32"), _WEIGHTS, module_only=True),
    Backend("pytorch-cuda-fp16", "PyTorch", "fp16", ("torch",), _torch("cuda", "fp16"), _WEIGHTS, module_only=True),
    Backend("onnxruntime-cpu", "ONNX Runtime", "fp32", (), _ort("cpu"), lambda a: [a.onnx]),
    Backend("onnxruntime-cpu-fp16", "ONNX Runtime", "fp16", (), _ort("cpu", "fp16"), lambda a: [a.onnx_variant("fp16")]),
    Backend("onnxruntime-cpu-int8", "ONNX Runtime", "int8", (), _ort("cpu", "int8"), lambda a: [a.onnx_variant("int8")]),
    Backend("onnxruntime-cuda", "ONNX Runtime", "fp32", ("onnxruntime",), _ort("cuda"), lambda a: [a.onnx]),
    Backend("onnxruntime-cuda-fp16", "ONNX Runtime", "fp16", ("onnxruntime",), _ort("cuda", "fp16"),
            lambda a: [a.onnx_variant("fp16")]),
    Backend("tensorrt-fp32", "TensorRT", "fp32", ("tensorrt",), _trt("fp32"), _trt_files("fp32")),
    # The FP16 builder flag is gone in TensorRT 11: this backend skips there, the typed one stays.
    Backend("tensorrt-fp16", "TensorRT", "fp16", ("tensorrt", "tensorrt_builder_flags"), _trt("fp16"), _trt_files("fp16")),
    Backend("tensorrt-fp16-typed", "TensorRT", "fp16", ("tensorrt",), _trt("fp16", typed_graph=True),
            _trt_files("fp16", typed_graph=True), typed_graph=True),
    Backend("tensorrt-int8", "TensorRT", "int8", ("tensorrt",), _trt("int8"), _trt_files("int8")),
]}
DEFAULT_BACKENDS = list(BACKENDS)

