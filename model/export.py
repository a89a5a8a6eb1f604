"""PyTorch -> ONNX for any model spec: named inputs and outputs, every dynamic axis dynamic.

Exporters, in order: the TorchScript exporter (`dynamo=False`), then, where it cannot export the
model, the torch.export-based one PyTorch recommends (`dynamo=True`, model/dynamo_export.py).
The TorchScript one goes first: it writes opset 17 natively (TensorRT 8.6's parser stops at 17),
folds BatchNorm into the preceding conv and takes well under a second for SimpleCNN, where the
dynamo one takes 4-30 s here and writes opset 18, converted down to 17 before it is kept. It
misses operators, though: `aten::diff`, which transformers 5 uses to find packed sequences when a
decoder is called without an attention mask, has no opset-17 symbolic. Which exporter wrote a file
is in its metadata_props (`exporter`, `exporter_versions`) and in its cache sidecar's figures.
"""
from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import onnx
import torch

from model import cache, dynamo_export
from model.spec import ModelSpec, SpecError

OPSET = 17
# Tried in this order; the policy and every version that writes the file are in the export's key.
EXPORTERS = ("torchscript", "dynamo")


class ExportError(RuntimeError):
    """No exporter could export the model; the message names the model, each step and the operator."""


def check_onnx(path: str | Path, spec: ModelSpec) -> onnx.ModelProto:
    """onnx.checker plus the spec's contract: its inputs and outputs by name, each dynamic axis dynamic."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:  # callers catch one kind
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
            fixed = [(i, dims[i].dim_value, d) for i, d in enumerate(t.shape)
                     if isinstance(d, int) and dims[i].HasField("dim_value") and dims[i].dim_value != d]
            if fixed:
                raise SpecError(f"{path}: {kind} {t.name!r} has dims {[(i, v) for i, v, _ in fixed]} (index, size), "
                                f"the spec declares {[(i, d) for i, _, d in fixed]}")
    return model


def _state_fixed_dims(model: onnx.ModelProto, spec: ModelSpec) -> None:
    """Write the spec's fixed sizes into the graph's inputs and outputs where the exporter left a
    symbolic dim (the TorchScript exporter names a Resize's channel dim 'Resizemask_dim_1'): the
    spec's shapes were checked against the module's own outputs, and a consumer reading the file
    (TensorRT, a user) then sees a (N, 5, H, W) mask, not (N, ?, H, W)."""
    for values, declared in ((model.graph.input, spec.inputs), (model.graph.output, spec.outputs)):
        by_name = {v.name: v for v in values}
        for t in declared:
            if t.name not in by_name:
                continue  # check_onnx names it
            dims = by_name[t.name].type.tensor_type.shape.dim
            for i, d in enumerate(t.shape):
                if isinstance(d, int) and i < len(dims) and not dims[i].HasField("dim_value"):
                    dims[i].dim_value = d  # a oneof with dim_param: setting the value clears the name


def export_onnx(module: torch.nn.Module, spec: ModelSpec, path: str | Path, opset: int = OPSET) -> Path:
    """Export to `path` (the first exporter of EXPORTERS that can), record which exporter wrote it in
    the file's metadata_props, and check it (callers that cache go through `onnx_for_module`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = module.eval()
    # Two rows and a non-opt size on every other axis, so no dynamic dim is traced as a constant.
    sample = spec.sample(2, **{a.name: max(a.min, min(a.max, 3)) for a in spec.axes})
    args = tuple(torch.from_numpy(sample[n]) for n in spec.input_names)
    dynamic = {t.name: dict(t.dynamic_axes) for t in (*spec.inputs, *spec.outputs)}
    failures = {}
    for exporter in EXPORTERS:
        try:
            with dynamo_export.quiet_fds():
                model = _EXPORT[exporter](module, args, spec, dynamic, opset)
            break
        except Exception as exc:  # any exporter fault: the next one may manage, else all are reported
            failures[exporter] = exc
    else:
        raise ExportError(_failure_paragraph(spec, opset, failures))
    model.metadata_props.extend([
        onnx.StringStringEntryProto(key="exporter", value=exporter),
        onnx.StringStringEntryProto(key="exporter_versions", value=json.dumps(dynamo_export.versions(), sort_keys=True)),
        *([onnx.StringStringEntryProto(key="exporter_fallback_reason",
                                       value=dynamo_export.first_lines(str(failures["torchscript"])))]
          if failures else [])])
    _state_fixed_dims(model, spec)
    onnx.save(model, str(path))  # one self-contained file: the weights inside, no external data
    check_onnx(path, spec)
    return path


def _torchscript(module, args, spec: ModelSpec, dynamic: dict, opset: int) -> onnx.ModelProto:
    import io

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx.*")
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=UserWarning)
        torch.onnx.export(module, args, buffer, dynamo=False, opset_version=opset,
                          input_names=spec.input_names, output_names=spec.output_names, dynamic_axes=dynamic)
    return onnx.load_from_string(buffer.getvalue())


def _dynamo(module, args, spec: ModelSpec, dynamic: dict, opset: int) -> onnx.ModelProto:
    return dynamo_export.export(module, args, spec.input_names, spec.output_names, dynamic, opset)


_EXPORT = {"torchscript": _torchscript, "dynamo": _dynamo}


def _failure_paragraph(spec: ModelSpec, opset: int, failures: dict) -> str:
    steps = "; ".join(f"the {name} exporter (opset {opset}) failed: {dynamo_export.summary(exc)}"
                      for name, exc in failures.items())
    ops = sorted({op for exc in failures.values() if (op := dynamo_export.operator_named(dynamo_export.summary(exc)))})
    blamed = f"unsupported operator {', '.join(ops)}" if ops else "no operator named by the exporters"
    return (f"{spec.name} ({spec.source or 'no source'}): no ONNX export ({blamed}). Step: ONNX export; {steps}. "
            "Rewrite the forward around the operator, or pass the inputs that avoid it (a transformers decoder "
            "exports once it is given an attention_mask).")


def exporter_of(path: str | Path) -> dict:
    """Which exporter wrote an ONNX file, with the versions, from its metadata_props ({} for a file
    exported elsewhere, such as a user's --onnx file)."""
    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    if "exporter" not in props:
        return {}
    return {"exporter": props["exporter"], "versions": json.loads(props.get("exporter_versions", "{}")),
            **({"fallback_reason": props["exporter_fallback_reason"]} if "exporter_fallback_reason" in props else {})}


def _key(spec: ModelSpec, key_inputs: dict, opset: int) -> dict:
    # The code that writes the file is part of what made it: an export from an older version of
    # this module (before the spec's fixed dims were stated, say) is another file.
    return {**key_inputs, "opset": opset, "inputs": [t.__dict__ for t in spec.inputs],
            "outputs": [t.__dict__ for t in spec.outputs],
            "exporters": {"order": list(EXPORTERS), **dynamo_export.versions()},
            "export_code": cache.source_digest(sys.modules[__name__], dynamo_export)}


def onnx_path_for(spec: ModelSpec, key_inputs: dict, cache_dir: str | Path, opset: int = OPSET) -> Path:
    return Path(cache_dir) / "onnx" / f"{spec.name}-{cache.key(_key(spec, key_inputs, opset))}.onnx"


def _made_elsewhere(spec: ModelSpec, key: dict, folder: Path) -> list[dict]:
    """Keys of cached exports of the same model and inputs written by other exporter versions: the
    GPU machine's two Pythons (different torch releases) share one export, which the Python without
    the module's library (torchvision, say) cannot make itself."""
    same = {k: v for k, v in json.loads(json.dumps(key)).items() if k != "exporters"}
    found = []
    for side in sorted(folder.glob(f"{spec.name}-*.onnx.json")):
        try:
            theirs = json.loads(side.read_text()).get("key", {})
        except (OSError, ValueError):
            continue  # cache.load reports a damaged sidecar when it is asked for that file
        if isinstance(theirs, dict) and {k: v for k, v in theirs.items() if k != "exporters"} == same:
            found.append(theirs)
    return found


def cached_onnx(spec: ModelSpec, key_inputs: dict, cache_dir: str | Path, opset: int = OPSET) -> Path | None:
    """The cached export if it is there and verified (a damaged one is reported and ignored): this
    Python's exporters' own, else one that another Python's exporters wrote from the same inputs."""
    key = _key(spec, key_inputs, opset)
    path = onnx_path_for(spec, key_inputs, cache_dir, opset)
    for candidate in [key, *_made_elsewhere(spec, key, path.parent)]:
        name = f"{spec.name}-{cache.key(candidate)}.onnx"
        found = cache.load(path.parent, name, candidate, verify=lambda p: check_onnx(p, spec))
        if found:
            return found.path
    return None


def onnx_for_module(spec: ModelSpec, module: torch.nn.Module, key_inputs: dict,
                    cache_dir: str | Path = cache.DEFAULT_CACHE, opset: int = OPSET) -> Path:
    """The cached ONNX export of a module, exported again if missing, damaged or failing the checks.
    The sidecar's figures say which exporter wrote it."""
    path = onnx_path_for(spec, key_inputs, cache_dir, opset)

    def build(tmp: Path) -> dict:
        export_onnx(module, spec, tmp, opset)
        return exporter_of(tmp)
    return cache.get_or_build(path.parent, path.name, _key(spec, key_inputs, opset), build,
                              verify=lambda p: check_onnx(p, spec)).path
