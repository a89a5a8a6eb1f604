"""Every backend the suite knows, how to make its runner, and which file it deploys.

Shared by the CLI, the tests and the benchmarks, so they all mean the same thing by a name.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable

import numpy as np

from model import cache
from model import quantize
from model.engine import DEFAULT_WORKSPACE, Engine, EngineSpec, engine_for_onnx
from model.export import onnx_for_checkpoint
from model.profile import DEFAULT_PROFILE, BatchProfile
from model.runners.base import Runner
from model.training import Trained


class ModelArtifacts:
    """The trained model and what is derived from it, each built on first use and cached on disk."""

    def __init__(self, trained: Trained, cache_dir: str | Path = cache.DEFAULT_CACHE,
                 profile: BatchProfile = DEFAULT_PROFILE, calib_images: np.ndarray | None = None,
                 workspace: int = DEFAULT_WORKSPACE) -> None:
        self.trained = trained
        self.cache_dir = Path(cache_dir)
        self.profile = profile
        self.workspace = workspace
        self.calib_images = calib_images  # for INT8 calibration: never the evaluation split
        self._engines: dict[tuple, Engine] = {}
        self._variants: dict[str, Path] = {}

    @property
    def checkpoint(self) -> Path:
        return self.trained.checkpoint

    @cached_property
    def onnx(self) -> Path:
        return onnx_for_checkpoint(self.trained.checkpoint, self.trained.model, self.cache_dir)

    def onnx_variant(self, precision: str) -> Path:
        """The FP32 export (`fp32`), its typed FP16 graph (`fp16`) or its Q/DQ INT8 model (`int8`)."""
        if precision == "fp32":
            return self.onnx
        if precision not in self._variants:
            self._variants[precision] = quantize.variant(self.onnx, precision, self.calib_images)
        return self._variants[precision]

    def engine(self, precision: str = "fp32", typed_graph: bool = False, profile: BatchProfile | None = None) -> Engine:
        """An engine at `precision`, from the FP32 export with builder flags or, with
        `typed_graph`, from the ONNX variant that carries the precision itself. INT8 is always
        built from the Q/DQ model (explicit quantization). Built for `profile` (one TensorRT
        optimization profile per opt batch); by default the artifacts' profile."""
        typed_graph = typed_graph or precision == "int8"
        profile = profile or self.profile
        key = (precision, typed_graph, profile)
        if key not in self._engines:
            source = self.onnx_variant(precision) if typed_graph else self.onnx
            spec = EngineSpec(precision=precision, profile=profile, workspace=self.workspace, typed_graph=typed_graph)
            self._engines[key] = engine_for_onnx(source, spec, self.cache_dir)
        return self._engines[key]

    def engine_set(self, precision: str = "fp32", typed_graph: bool = False) -> dict[BatchProfile, Engine]:
        """The one-profile engines the TensorRT backends run: one per opt batch and per static batch
        of the artifacts' profile."""
        return {p: self.engine(precision, typed_graph, p) for p in self.profile.engine_profiles()}


@dataclass(frozen=True)
class Backend:
    name: str
    framework: str
    precision: str
    make: Callable[[ModelArtifacts], Runner]
    artifact: Callable[[ModelArtifacts], list[Path]]  # what is deployed: a TensorRT set is several plans


def _torch(device: str, precision: str):
    def make(a: ModelArtifacts) -> Runner:
        from model.runners.torch_runner import TorchRunner

        return TorchRunner(a.trained.model, device=device, precision=precision, profile=a.profile)
    return make


def _ort(device: str, precision: str = "fp32"):
    def make(a: ModelArtifacts) -> Runner:
        from model.runners.ort_runner import OrtRunner

        return OrtRunner(a.onnx_variant(precision), device=device, profile=a.profile, label=precision)
    return make


def _trt(precision: str, typed_graph: bool = False):
    def make(a: ModelArtifacts) -> Runner:
        from model.runners.trt_engine_set import TrtEngineSet

        plans = {profile: engine.plan() for profile, engine in a.engine_set(precision, typed_graph).items()}
        return TrtEngineSet(plans, label=precision + ("-typed" if typed_graph else ""))
    return make


def _trt_files(precision: str, typed_graph: bool = False):
    return lambda a: [e.path for e in a.engine_set(precision, typed_graph).values()]


BACKENDS = {b.name: b for b in [
    Backend("pytorch-cpu", "PyTorch", "fp32", _torch("cpu", "fp32"), lambda a: [a.checkpoint]),
    Backend("pytorch-cuda", "PyTorch", "fp32", _torch("cuda", "fp32"), lambda a: [a.checkpoint]),
    Backend("pytorch-cuda-fp16", "PyTorch", "fp16", _torch("cuda", "fp16"), lambda a: [a.checkpoint]),
    Backend("onnxruntime-cpu", "ONNX Runtime", "fp32", _ort("cpu"), lambda a: [a.onnx]),
    Backend("onnxruntime-cpu-fp16", "ONNX Runtime", "fp16", _ort("cpu", "fp16"), lambda a: [a.onnx_variant("fp16")]),
    Backend("onnxruntime-cpu-int8", "ONNX Runtime", "int8", _ort("cpu", "int8"), lambda a: [a.onnx_variant("int8")]),
    Backend("onnxruntime-cuda", "ONNX Runtime", "fp32", _ort("cuda"), lambda a: [a.onnx]),
    Backend("onnxruntime-cuda-fp16", "ONNX Runtime", "fp16", _ort("cuda", "fp16"), lambda a: [a.onnx_variant("fp16")]),
    Backend("tensorrt-fp32", "TensorRT", "fp32", _trt("fp32"), _trt_files("fp32")),
    Backend("tensorrt-fp16", "TensorRT", "fp16", _trt("fp16"), _trt_files("fp16")),
    Backend("tensorrt-fp16-typed", "TensorRT", "fp16", _trt("fp16", typed_graph=True), _trt_files("fp16", typed_graph=True)),
    Backend("tensorrt-int8", "TensorRT", "int8", _trt("int8"), _trt_files("int8")),
]}
DEFAULT_BACKENDS = list(BACKENDS)
