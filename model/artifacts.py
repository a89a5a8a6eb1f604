"""The artifacts of one model that backends are made from: weights, ONNX, reduced-precision ONNX,
engines, each built on first use and cached on disk (model/cache.py)."""
from __future__ import annotations

import io
import logging
from functools import cached_property
from pathlib import Path

from model import cache, quantize
from model.backends.base import BackendUnavailable
from model.backends.tensorrt.build import DEFAULT_OPTIMIZATION_LEVEL, DEFAULT_WORKSPACE, Engine, EngineSpec, engine_for_onnx
from model.export import cached_onnx, check_onnx, onnx_for_module, onnx_path_for
from model.profile import BatchProfile
from model.spec import BuildContext, Built, Dataset, ModelSpec, SpecError

log = logging.getLogger(__name__)


class ModelArtifacts:
    """One model and what is derived from it (weights, ONNX, reduced-precision ONNX, engines),
    each built on first use and cached on disk."""

    def __init__(self, spec: ModelSpec, cache_dir: str | Path = cache.DEFAULT_CACHE, profile: BatchProfile | None = None,
                 data: str | None = None, workspace: int = DEFAULT_WORKSPACE, epochs: int | None = None,
                 retrain: bool = False, progress: bool = True,
                 optimization_level: int = DEFAULT_OPTIMIZATION_LEVEL) -> None:
        """`optimization_level`: TensorRT's builder level for the engines (the deployed ones are built
        at the default; a test of what reaches a plan, not of its speed, builds at 0 in seconds)."""
        self.spec = spec.with_profile(profile)
        self.cache_dir = Path(cache_dir)
        self.workspace = workspace
        self.optimization_level = optimization_level
        self.context = BuildContext(self.cache_dir, data or "synthetic", epochs, retrain, progress)
        self._engines: dict[tuple, Engine] = {}
        self._variants: dict[str, Path] = {}

    @property
    def profile(self) -> BatchProfile:
        return self.spec.profile

    @cached_property
    def dataset(self) -> Dataset | None:
        return self.spec.dataset(self.context.data) if self.spec.dataset else None

    @cached_property
    def _built(self) -> Built | BackendUnavailable:
        """The module (or why this Python cannot build it: the library it needs does not import)."""
        if self.spec.module is None:
            return BackendUnavailable(f"{self.spec.name} has no PyTorch source (an ONNX model)")
        try:
            built = self.spec.module(self.context)
        except ImportError as exc:
            return BackendUnavailable(f"{self.spec.name}'s PyTorch module needs a library this Python lacks: {exc}")
        built = built if isinstance(built, Built) else Built(built)
        check_module_outputs(self.spec, built.module)
        return built

    @property
    def has_module(self) -> bool:
        return not isinstance(self._built, BackendUnavailable)

    def built(self) -> Built:
        if isinstance(self._built, BackendUnavailable):
            raise self._built
        return self._built

    @property
    def module(self):
        return self.built().module

    @property
    def reference(self) -> str:
        """PyTorch FP32 on the CPU where this Python can build the module, else ONNX Runtime CPU FP32."""
        return "pytorch-cpu" if self.has_module else "onnxruntime-cpu"

    @cached_property
    def checkpoint(self) -> Path:
        """The weights file: the factory's own (a trained checkpoint), else the module's state dict."""
        built = self.built()
        if built.checkpoint is not None:
            return Path(built.checkpoint)
        import torch

        buf = io.BytesIO()
        torch.save(built.module.state_dict(), buf)
        data = buf.getvalue()
        key_inputs = {"model": self.spec.name, "state_dict_sha256": cache.sha256_bytes(data)}
        return cache.get_or_build(self.cache_dir / "weights", f"{self.spec.name}-{cache.key(key_inputs)}.pt", key_inputs,
                                  lambda tmp: tmp.write_bytes(data) and None).path

    def _onnx_key(self) -> dict:
        # Seeded zoo models are keyed by what fixes their weights, so a Python that cannot build the
        # module (the GPU kit's has no torchvision) finds the export made by one that can. Either
        # way the code of forward() is in the key: the same weights through edited code is another graph.
        if self.spec.identity and (not self.has_module or self.built().checkpoint is None):
            return {"model": self.spec.name, "identity": self.spec.identity, "code": self.spec.code}
        return {"model": self.spec.name, "weights": cache.sha256_file(self.checkpoint), "code": self.spec.code}

    @cached_property
    def onnx(self) -> Path:
        if self.spec.onnx is not None:
            path = Path(self.spec.onnx)
            check_onnx(path, self.spec)
            return path
        if self.has_module:
            return onnx_for_module(self.spec, self.module, self._onnx_key(), self.cache_dir)
        path = cached_onnx(self.spec, self._onnx_key(), self.cache_dir)
        if path is None:
            path = onnx_path_for(self.spec, self._onnx_key(), self.cache_dir)
            raise BackendUnavailable(f"{self._built} and no export of it is cached at {path}: run "
                                     f"`python -m model export --model {self.spec.name} --cache-dir {self.cache_dir}` "
                                     "with a Python that has it, then again here")
        return path

    def onnx_variant(self, precision: str) -> Path:
        """The FP32 export (`fp32`), its typed FP16 graph (`fp16`) or its Q/DQ INT8 model (`int8`)."""
        if precision == "fp32":
            return self.onnx
        if precision not in self.spec.precisions:
            raise BackendUnavailable(f"{self.spec.name} is not offered in {precision}: {self.spec.precision_notes}")
        if precision not in self._variants:
            calib = self.spec.calibration_feeds(self.dataset) if precision == "int8" else None
            self._variants[precision] = quantize.variant(self.onnx, precision, self.spec, calib,
                                                         folder=self.cache_dir / "onnx")
        return self._variants[precision]

    def engine(self, precision: str = "fp32", typed_graph: bool = False, profile: BatchProfile | None = None) -> Engine:
        """An engine at `precision`, from the FP32 export with builder flags or, with
        `typed_graph`, from the ONNX variant that carries the precision itself. INT8 is always
        built from the Q/DQ model (explicit quantization). Built for `profile` (one TensorRT
        optimization profile per opt batch, every other dynamic axis over its full range)."""
        typed_graph = typed_graph or precision == "int8"
        profile = profile or self.profile
        key = (precision, typed_graph, profile)
        if key not in self._engines:
            source = self.onnx_variant(precision) if typed_graph else self.onnx
            spec = EngineSpec(self.spec, precision=precision, profile=profile, workspace=self.workspace,
                              typed_graph=typed_graph, optimization_level=self.optimization_level)
            self._engines[key] = engine_for_onnx(source, spec, self.cache_dir)
        return self._engines[key]

    def engine_set(self, precision: str = "fp32", typed_graph: bool = False) -> dict[BatchProfile, Engine]:
        """The one-profile engines the TensorRT backends run: one per opt batch and per static batch."""
        return {p: self.engine(precision, typed_graph, p) for p in self.profile.engine_profiles()}


def check_module_outputs(spec: ModelSpec, module) -> None:
    """A module must return what its spec declares: the outputs, their dtypes and shapes."""
    import numpy as np
    import torch

    from model.backends.pytorch import as_outputs

    if not isinstance(module, torch.nn.Module):
        raise SpecError(f"{spec.source or spec.name}: the factory returned a {type(module).__name__}, not a torch.nn.Module")
    sizes = {a.name: a.min for a in spec.axes}
    feed = spec.sample(2, **sizes)
    with torch.inference_mode():
        try:
            out = as_outputs(module.eval()(*[torch.from_numpy(feed[n]) for n in spec.input_names]), spec.output_names)
        except ValueError as exc:
            raise SpecError(f"{spec.source or spec.name}: {exc}") from None
    expected = {t.name: t for t in spec.outputs}
    want_shapes = spec.output_shapes(spec.axis_sizes(feed))
    for name, tensor in out.items():
        got = (str(tensor.numpy().dtype), tuple(tensor.shape))
        want = (np.dtype(expected[name].dtype).name, want_shapes[name])
        if got != want:
            raise SpecError(f"{spec.source or spec.name}: output {name!r} is {got[0]} {got[1]} for a batch of 2, "
                            f"the spec declares {want[0]} {want[1]}")
