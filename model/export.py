"""PyTorch -> ONNX with a dynamic batch axis on `input` and `output`.

Exporter: the TorchScript exporter (`dynamo=False`), chosen on purpose. For this plain CNN it
writes opset 17 natively (TensorRT 8.6's parser stops at 17), folds BatchNorm into conv3, writes
one self-contained file and takes 0.1 s. The dynamo exporter in torch 2.14 builds opset 18 and
down-converts through the ONNX C API fallback, writes the weights to a side `.onnx.data` file and
takes ~4 s; nothing in this model needs what it adds. Revisit when torch drops the legacy path.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import torch

from model import cache
from model.network import INPUT_SHAPE
from model.profile import INPUT_NAME, OUTPUT_NAME

OPSET = 17
BATCH_DIM = "batch"


def check_onnx(path: str | Path) -> onnx.ModelProto:
    """onnx.checker plus this project's contract: named tensors with a dynamic batch axis."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:  # not a ValueError: callers catch one kind
        raise ValueError(f"{path} fails onnx.checker: {exc}") from exc
    model = onnx.load(str(path))
    for kind, values, name in (("input", model.graph.input, INPUT_NAME), ("output", model.graph.output, OUTPUT_NAME)):
        names = [v.name for v in values]
        if names != [name]:
            raise ValueError(f"{path}: graph {kind}s are {names}, expected [{name!r}]")
        batch = values[0].type.tensor_type.shape.dim[0]
        if not batch.dim_param:
            raise ValueError(f"{path}: {kind} {name!r} has a fixed batch dim {batch.dim_value}, expected a dynamic one")
    return model


def export_onnx(model: torch.nn.Module, path: str | Path, opset: int = OPSET) -> Path:
    """Export to `path` and check it (callers that cache go through `onnx_for_checkpoint`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    dummy = torch.zeros(2, *INPUT_SHAPE)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx.*")
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        torch.onnx.export(
            model, (dummy,), str(path), dynamo=False, opset_version=opset,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: BATCH_DIM}, OUTPUT_NAME: {0: BATCH_DIM}},
        )
    check_onnx(path)
    return path


def onnx_for_checkpoint(checkpoint: str | Path, model: torch.nn.Module,
                        cache_dir: str | Path = cache.DEFAULT_CACHE, opset: int = OPSET) -> Path:
    """The cached ONNX file for a checkpoint, exported again if missing, damaged or failing the checks."""
    key_inputs = {"weights": cache.sha256_file(checkpoint), "opset": opset, "torch": torch.__version__.split("+")[0]}

    def build(tmp: Path) -> None:
        export_onnx(model, tmp, opset)

    return cache.get_or_build(Path(cache_dir) / "onnx", f"simplecnn-{cache.key(key_inputs)}.onnx", key_inputs,
                              build, verify=check_onnx).path
