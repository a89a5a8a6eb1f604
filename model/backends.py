"""Every backend the suite knows, how to make its runner, and which file it deploys.

Shared by the CLI, the tests and the benchmarks, so they all mean the same thing by a name.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable

from model import artifacts as art
from model.engine import Engine, EngineSpec, engine_for_onnx
from model.export import onnx_for_checkpoint
from model.profile import DEFAULT_PROFILE, BatchProfile
from model.runners.base import Runner
from model.training import Trained


class ModelArtifacts:
    """The trained model and what is derived from it, each built on first use and cached on disk."""

    def __init__(self, trained: Trained, cache_dir: str | Path = art.DEFAULT_CACHE,
                 profile: BatchProfile = DEFAULT_PROFILE) -> None:
        self.trained = trained
        self.cache_dir = Path(cache_dir)
        self.profile = profile
        self._engines: dict[tuple, Engine] = {}

    @property
    def checkpoint(self) -> Path:
        return self.trained.checkpoint

    @cached_property
    def onnx(self) -> Path:
        return onnx_for_checkpoint(self.trained.checkpoint, self.trained.model, self.cache_dir)

    def engine(self, precision: str = "fp32") -> Engine:
        if precision not in self._engines:
            spec = EngineSpec(precision=precision, profile=self.profile)
            self._engines[precision] = engine_for_onnx(self.onnx, spec, self.cache_dir)
        return self._engines[precision]


@dataclass(frozen=True)
class Backend:
    name: str
    framework: str
    precision: str
    make: Callable[[ModelArtifacts], Runner]
    artifact: Callable[[ModelArtifacts], Path]


def _torch(device: str, precision: str):
    def make(a: ModelArtifacts) -> Runner:
        from model.runners.torch_runner import TorchRunner

        return TorchRunner(a.trained.model, device=device, precision=precision, profile=a.profile)
    return make


def _ort(device: str):
    def make(a: ModelArtifacts) -> Runner:
        from model.runners.ort_runner import OrtRunner

        return OrtRunner(a.onnx, device=device, profile=a.profile)
    return make


def _trt(precision: str):
    def make(a: ModelArtifacts) -> Runner:
        from model.runners.trt_runner import TrtRunner

        return TrtRunner(a.engine(precision).plan(), label=precision)
    return make


BACKENDS = {b.name: b for b in [
    Backend("pytorch-cpu", "PyTorch", "fp32", _torch("cpu", "fp32"), lambda a: a.checkpoint),
    Backend("pytorch-cuda", "PyTorch", "fp32", _torch("cuda", "fp32"), lambda a: a.checkpoint),
    Backend("pytorch-cuda-fp16", "PyTorch", "fp16", _torch("cuda", "fp16"), lambda a: a.checkpoint),
    Backend("onnxruntime-cpu", "ONNX Runtime", "fp32", _ort("cpu"), lambda a: a.onnx),
    Backend("onnxruntime-cuda", "ONNX Runtime", "fp32", _ort("cuda"), lambda a: a.onnx),
    Backend("tensorrt-fp32", "TensorRT", "fp32", _trt("fp32"), lambda a: a.engine("fp32").path),
    Backend("tensorrt-fp16", "TensorRT", "fp16", _trt("fp16"), lambda a: a.engine("fp16").path),
]}
DEFAULT_BACKENDS = ["pytorch-cpu", "pytorch-cuda", "onnxruntime-cpu", "onnxruntime-cuda", "tensorrt-fp32", "tensorrt-fp16"]
