"""PyTorch -> ONNX for any model spec: named inputs and outputs, every dynamic axis dynamic.

Exporter: the TorchScript exporter (`dynamo=False`), chosen on purpose. It writes opset 17 natively
(TensorRT 8.6's parser stops at 17), folds BatchNorm into the preceding conv, writes one
self-contained file and takes well under a second for SimpleCNN. The dynamo exporter in torch 2.14
builds opset 18 and down-converts through the ONNX C API fallback, writes the weights to a side
`.onnx.data` file and takes ~4 s; nothing in these models needs what it adds. Revisit when torch
drops the legacy path.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import torch

from model import cache
from model.spec import ModelSpec, SpecError

OPSET = 17


def check_onnx(path: str | Path, spec: ModelSpec) -> onnx.ModelProto:
    """onnx.checker plus the spec's contract: its inputs and outputs by name, each dynamic axis dynamic."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:  # not a ValueError: callers catch one kind
        raise ValueError(f"{path} fails onnx.checker: {exc}") from exc
    model = onnx.load(str(path))
    initializers = {i.name for i in model.graph.initializer}
    for kind, values, declared in (("input", [v for v in model.graph.input if v.name not in initializers], spec.inputs),
                                   ("output", model.graph.output, spec.outputs)):
        names, expected = [v.name for v in values], [t.name for t in declared]
        if names != expected:
            raise SpecError(f"{path}: graph {kind}s are {names}, expected {expected}")
        for value, t in zip(values, declared):
            dims = value.type.tensor_type.shape.dim
            if len(dims) != len(t.shape):
                raise SpecError(f"{path}: {kind} {t.name!r} has rank {len(dims)}, expected {len(t.shape)} {t.shape}")
            for i, d in t.dynamic_axes.items():
                if not dims[i].dim_param:
                    raise SpecError(f"{path}: {kind} {t.name!r} has a fixed {d} dim {dims[i].dim_value}, "
                                    f"expected a dynamic one")
    return model


def export_onnx(module: torch.nn.Module, spec: ModelSpec, path: str | Path, opset: int = OPSET) -> Path:
    """Export to `path` and check it (callers that cache go through `onnx_for_module`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = module.eval()
    # Two rows and a non-opt size on every other axis, so no dynamic dim is traced as a constant.
    sample = spec.sample(2, **{a.name: max(a.min, min(a.max, 3)) for a in spec.axes})
    args = tuple(torch.from_numpy(sample[n]) for n in spec.input_names)
    dynamic = {t.name: dict(t.dynamic_axes) for t in (*spec.inputs, *spec.outputs)}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx.*")
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=UserWarning)
        torch.onnx.export(module, args, str(path), dynamo=False, opset_version=opset,
                          input_names=spec.input_names, output_names=spec.output_names, dynamic_axes=dynamic)
    check_onnx(path, spec)
    return path


def _key(spec: ModelSpec, key_inputs: dict, opset: int) -> dict:
    # The exporter's torch version is recorded nowhere in the key: the GPU machine's two Pythons
    # (different torch releases) share one export, and the one without the module's library uses it.
    return {**key_inputs, "opset": opset, "inputs": [t.__dict__ for t in spec.inputs],
            "outputs": [t.__dict__ for t in spec.outputs]}


def onnx_path_for(spec: ModelSpec, key_inputs: dict, cache_dir: str | Path, opset: int = OPSET) -> Path:
    return Path(cache_dir) / "onnx" / f"{spec.name}-{cache.key(_key(spec, key_inputs, opset))}.onnx"


def cached_onnx(spec: ModelSpec, key_inputs: dict, cache_dir: str | Path, opset: int = OPSET) -> Path | None:
    """The cached export if it is there and verified; a damaged one is reported and ignored."""
    path = onnx_path_for(spec, key_inputs, cache_dir, opset)
    found = cache.load(path.parent, path.name, _key(spec, key_inputs, opset), verify=lambda p: check_onnx(p, spec))
    return found.path if found else None


def onnx_for_module(spec: ModelSpec, module: torch.nn.Module, key_inputs: dict,
                    cache_dir: str | Path = cache.DEFAULT_CACHE, opset: int = OPSET) -> Path:
    """The cached ONNX export of a module, exported again if missing, damaged or failing the checks."""
    path = onnx_path_for(spec, key_inputs, cache_dir, opset)
    return cache.get_or_build(path.parent, path.name, _key(spec, key_inputs, opset),
                              lambda tmp: export_onnx(module, spec, tmp, opset) and None,
                              verify=lambda p: check_onnx(p, spec)).path
