"""Models from outside the zoo: a user's `file.py:factory`, or an ONNX file with no PyTorch source.

A factory returns `(module, spec)`: an `nn.Module` and a `ModelSpec` naming its inputs and outputs
(its `module`/`onnx` fields left empty). An ONNX file's inputs, outputs and dynamic axes are read
from the file; the ranges of dynamic axes other than the batch come from options (`--axis`).
"""
from __future__ import annotations

import importlib.util
import sys
from dataclasses import replace
from pathlib import Path

from model import code_digest, zoo
from model.profile import DEFAULT_PROFILE, BatchProfile
from model.spec import BATCH, Axis, ModelSpec, SpecError, TensorSpec


def parse_axis(text: str) -> Axis:
    """`NAME=MIN,OPT,MAX`, e.g. `seq=1,64,128`."""
    try:
        name, values = text.split("=")
        lo, opt, hi = (int(v) for v in values.split(","))
    except ValueError:
        raise SpecError(f"an axis range is NAME=MIN,OPT,MAX (e.g. seq=1,64,128), received {text!r}") from None
    return Axis(name.strip(), lo, opt, hi)


def resolve(text: str, axes: list[Axis] = ()) -> ModelSpec:
    """A shipped model's name, `path/to/file.py:factory`, or `path/to/model.onnx`."""
    if text.endswith(".onnx"):
        return from_onnx(text, axes)
    if ":" in text and text.split(":")[0].endswith(".py"):
        return from_factory(text)
    return zoo.get(text)


def from_factory(text: str) -> ModelSpec:
    import torch

    path_text, _, factory_name = text.rpartition(":")
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise SpecError(f"--model {text}: {path} is not a file")
    module_name = f"_user_model_{abs(hash(str(path.resolve())))}"
    try:
        loader_spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[module_name] = module
        loader_spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(module_name, None)
        raise SpecError(f"--model {text}: {path} does not import: {type(exc).__name__}: {exc}") from exc
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        raise SpecError(f"--model {text}: {path} has no callable {factory_name!r}")
    try:
        result = factory()
    except Exception as exc:
        raise SpecError(f"--model {text}: {factory_name}() raised {type(exc).__name__}: {exc}") from exc
    if not (isinstance(result, tuple) and len(result) == 2):
        raise SpecError(f"--model {text}: {factory_name}() must return (module, spec), received {type(result).__name__}")
    net, spec = result
    if not isinstance(net, torch.nn.Module):
        raise SpecError(f"--model {text}: {factory_name}() returned a {type(net).__name__} where a torch.nn.Module "
                        "was expected")
    if not isinstance(spec, ModelSpec):
        raise SpecError(f"--model {text}: {factory_name}() returned a {type(spec).__name__} where a ModelSpec "
                        "was expected")
    net.eval()
    code = code_digest.of_factory(path, net)
    return replace(spec, module=lambda ctx: net, onnx=None, identity={}, code=code, source=text)


def _tensor(value, kind: str, path: Path) -> TensorSpec:
    from onnx import helper

    t = value.type.tensor_type
    dtype = helper.tensor_dtype_to_np_dtype(t.elem_type).name
    shape = []
    for i, d in enumerate(t.shape.dim):
        if d.HasField("dim_value"):
            shape.append(d.dim_value)
        elif d.dim_param:
            shape.append(BATCH if i == 0 else d.dim_param)
        else:
            raise SpecError(f"{path}: {kind} {value.name!r} dim {i} is dynamic without a name; name it (dim_param) "
                            "so its range can be given with --axis NAME=MIN,OPT,MAX")
    if not shape or shape[0] != BATCH:
        raise SpecError(f"{path}: {kind} {value.name!r} has shape {shape}: dim 0 must be a dynamic batch axis")
    try:
        return TensorSpec(value.name, dtype, tuple(shape))
    except SpecError as exc:
        raise SpecError(f"{path}: {kind} {exc}") from None


def from_onnx(path_text: str, axes: list[Axis] = (), profile: BatchProfile = DEFAULT_PROFILE,
              shared: bool = False) -> ModelSpec:
    """`shared`: the --axis ranges are the whole run's (several --onnx files): this file takes those
    it uses, and the caller checks that each is used by one of them."""
    import onnx

    path = Path(path_text).expanduser()
    if not path.is_file():
        raise SpecError(f"--onnx {path_text}: no such file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise SpecError(f"--onnx {path_text}: not a readable ONNX model: {exc}") from exc
    initializers = {i.name for i in model.graph.initializer}
    inputs = [_tensor(v, "input", path) for v in model.graph.input if v.name not in initializers]
    outputs = [_tensor(v, "output", path) for v in model.graph.output]
    # An output's dims are names or expressions of the inputs' axes (the spec checks it): only those need ranges.
    used = {d for t in inputs for d in t.dynamic_axes.values() if d != BATCH}
    given = {a.name for a in axes}
    missing, extra = sorted(used - given), sorted(given - used)
    if missing:
        raise SpecError(f"--onnx {path_text}: dynamic axes {missing} need a range: add --axis NAME=MIN,OPT,MAX for each")
    if shared:
        axes = [a for a in axes if a.name in used]
    elif extra:
        raise SpecError(f"--onnx {path_text}: --axis {extra} name no dynamic axis of the model (its axes: {sorted(used) or 'batch only'})")
    return ModelSpec(name=path.stem, inputs=inputs, outputs=outputs, profile=profile, axes=list(axes),
                     onnx=str(path.resolve()), source=str(path), precisions=("fp32", "fp16"),
                     precision_notes="no INT8 for a bare ONNX file: calibration needs inputs like the real ones "
                                     "(write a spec file with a dataset to offer it)")


def check_onnx_matches(spec: ModelSpec, path: Path) -> None:
    """The ONNX file a spec points at has the spec's inputs and outputs, with their dtypes and ranks."""
    found = from_onnx(str(path), list(spec.axes), spec.profile) if spec.axes else from_onnx(str(path), [], spec.profile)
    for kind, want, have in (("inputs", spec.inputs, found.inputs), ("outputs", spec.outputs, found.outputs)):
        w = {t.name: (t.dtype, len(t.shape)) for t in want}
        h = {t.name: (t.dtype, len(t.shape)) for t in have}
        if w != h:
            raise SpecError(f"{path}: its {kind} are {h} (name: (dtype, rank)), the spec of {spec.name!r} declares {w}")
