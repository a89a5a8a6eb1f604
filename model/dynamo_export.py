"""The torch.export-based ONNX exporter (`torch.onnx.export(..., dynamo=True)`), brought down to the
opset the backends parse, and the quieting and trimming both exporters' failures need.

It writes opset 18 and later; TensorRT 8.6 parses up to 17. Its own down-conversion (opset_version=17)
goes through onnx's C converter and, in torch 2.14, leaves opset-18 `Split(num_outputs=...)` nodes in a
file stamped 17, which ONNX Runtime then refuses. So it exports at 18 and converts here with
`onnx.version_converter`, which has no Split 18 -> 17 adapter either: opset 13's Split without a
`split` input already cuts into equal parts, one per output, so an even Split drops `num_outputs` and
is held out of the converter's sight while it converts the rest.
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import warnings
from importlib import metadata

import onnx

EXPORT_OPSET = 18  # the lowest opset torch 2.14's dynamo exporter has implementations for
_HELD = "held.by.export"  # a private domain that keeps even Splits away from onnx's converter


def versions() -> dict:
    """Versions of what writes the file: both exporters, the converter. Part of the export's key."""
    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None
    return {"torch": version("torch"), "onnxscript": version("onnxscript"), "onnx": version("onnx")}


@contextlib.contextmanager
def quiet_fds():
    """Both exporters print to the process's stdout from C++ (the TorchScript one prints its whole
    Torch IR graph, about 100 KB for a small transformer, on any failure; torch 2.14 logs it even
    with verbose=False): redirect file descriptors 1 and 2 to a file for the export's duration."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as sink:
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            yield
        finally:
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def operator_named(message: str) -> str | None:
    """The operator an exporter's message blames (`aten::diff`, `aten.diff.default`), if any."""
    found = re.search(r"\baten(?:::|\.)[A-Za-z_]\w*(?:\.\w+)?", message)
    return found.group(0) if found else None


def summary(exc: BaseException) -> str:
    """`Type: message` of the exception that started a failure (the dynamo exporter wraps its cause,
    `DispatchError: No ONNX function found for ...`, in two layers of advice), trimmed."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return f"{type(exc).__name__}: {first_lines(str(exc))}"


def first_lines(message: str, limit: int = 400) -> str:
    """An exporter's message without its IR or FX graph dump: the lines before the dump, capped."""
    kept = []
    for line in re.sub(r"\x1b\[[0-9;]*m", "", message).strip().splitlines():
        if re.match(r"\s*(graph\(|Torch IR graph|%\w+ :|ExportedProgram:|class GraphModule)", line):
            break
        if line.strip():
            kept.append(line.strip())
    text = " ".join(kept)
    return text if len(text) <= limit else text[:limit] + " [...]"


def _even_splits_held(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Every opset-18 Split with `num_outputs` becomes an opset-13 one (no `split` input: equal
    parts) in a private domain; an uneven one (a last part smaller, as torch.chunk makes) is refused."""
    inferred = onnx.shape_inference.infer_shapes(model)
    dims = {v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
            for v in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output)}
    held = []
    for node in model.graph.node:
        if node.op_type != "Split" or node.domain not in ("", "ai.onnx"):
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if "num_outputs" not in attrs:
            continue  # sizes given as an input: the same meaning at opset 13
        shape = dims.get(node.input[0])
        axis = attrs.get("axis", 0)
        size = shape[axis] if shape and -len(shape) <= axis < len(shape) else None
        if size is None or size % attrs["num_outputs"]:
            raise ValueError(f"Split {node.name!r} cuts axis {axis} of size {size or 'unknown'} into "
                             f"{attrs['num_outputs']} parts; opset 17 can only cut a known size evenly")
        kept = [a for a in node.attribute if a.name != "num_outputs"]
        del node.attribute[:]
        node.attribute.extend(kept)
        node.domain = _HELD
        held.append(node)
    return held


def to_opset(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """`model` (default domain at EXPORT_OPSET) as `opset`, through onnx.version_converter."""
    held = _even_splits_held(model)
    if held:
        model.opset_import.append(onnx.helper.make_opsetid(_HELD, 1))
    try:
        converted = onnx.version_converter.convert_version(model, opset)
    except RuntimeError as exc:  # "No Adapter From Version $18 for Pad": name the operator
        op = re.search(r"for (\w+)", str(exc))
        raise ValueError(f"onnx.version_converter cannot bring {op.group(1) if op else 'an operator'} from opset "
                         f"{EXPORT_OPSET} to {opset}") from None
    for node in converted.graph.node:
        if node.domain == _HELD:
            node.domain = ""
    imports = [o for o in converted.opset_import if o.domain != _HELD]
    del converted.opset_import[:]
    converted.opset_import.extend(imports)
    return converted


def export(module, args: tuple, input_names: list[str], output_names: list[str], dynamic_axes: dict,
           opset: int) -> onnx.ModelProto:
    """The module through the dynamo exporter, at `opset`, weights inside the returned proto."""
    import torch

    try:
        import onnxscript  # noqa: F401  (the dynamo exporter's own requirement, named before it fails deep inside)
    except ImportError:
        raise RuntimeError("the dynamo exporter needs the onnxscript package (pip install onnxscript)") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, args, None, dynamo=True, opset_version=max(opset, EXPORT_OPSET),
                                    input_names=input_names, output_names=output_names, dynamic_axes=dynamic_axes,
                                    external_data=False, optimize=True, verbose=False, report=False)
    model = program.model_proto
    return model if opset >= EXPORT_OPSET else to_opset(model, opset)
