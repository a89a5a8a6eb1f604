"""Every TensorRT version difference this project meets, in one place (TensorRT >= 8.6).

- < 10: networks need the EXPLICIT_BATCH creation flag (implicit batch was removed in 10).
- >= 10: STRONGLY_TYPED networks exist; a typed graph (FP16 ONNX, Q/DQ INT8) builds as typed.
- >= 11: no FP16/INT8 builder flags: reduced precision only through typed graphs and Q/DQ nodes,
  so every network is created strongly typed.
- TF32 is cleared wherever the flag exists: FP32 engines must match PyTorch FP32 tightly.
Everything else (set_input_shape, set_tensor_address, execute_async_v3, build_serialized_network,
memory pool limits, timing caches) is the same name-based API across these versions.
"""
from __future__ import annotations

import logging

from model.backends.base import BackendUnavailable

log = logging.getLogger("tensorrt")


def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendUnavailable(f"TensorRT is not installed ({exc}); see the README's GPU section") from exc
    if major(trt) < 8 or (major(trt) == 8 and int(trt.__version__.split(".")[1]) < 6):
        raise BackendUnavailable(f"TensorRT {trt.__version__} is too old: this project needs >= 8.6")
    return trt


def major(trt) -> int:
    return int(trt.__version__.split(".")[0])


def build_flags(trt, precision: str, typed_graph: bool) -> tuple[int, list]:
    """(network creation flags, builder flags) for a precision.

    `typed_graph`: the ONNX model carries its precision itself (an FP16 graph, or Q/DQ nodes for
    INT8). Such graphs build strongly typed where TensorRT can (>= 10); before 10 the builder
    flags stand in. An untyped FP32 graph asked for FP16 needs the FP16 flag, gone in 11.
    """
    if precision not in ("fp32", "fp16", "int8"):
        raise ValueError(f"unknown precision {precision!r}; expected fp32, fp16 or int8")
    version = major(trt)
    network = 0 if version >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    if version >= 11 and precision != "fp32" and not typed_graph:
        raise BackendUnavailable(f"TensorRT {trt.__version__} has no {precision.upper()} builder flag: "
                                 f"build the typed {precision} ONNX variant instead")
    if version >= 11 or (typed_graph and version >= 10):
        return network | 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED), []
    builder = {"fp32": [], "fp16": [trt.BuilderFlag.FP16],
               # Explicit quantization (Q/DQ) needs the INT8 flag on a weakly typed network; FP16
               # lets the layers between Q/DQ pairs run in half precision.
               "int8": [trt.BuilderFlag.INT8, trt.BuilderFlag.FP16]}[precision]
    return network, builder


def keep_layers_fp32(trt, network, config, keep) -> list[str]:
    """Layers for which `keep(layer)` is true compute and output float32, obeyed by the builder
    (a precision repair). A strongly typed network (>= 10 for typed graphs) refuses layer
    precisions: there the ONNX variant carries the float32 nodes itself. Returns the layers set."""
    strongly = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if strongly is not None and network.get_flag(strongly):
        return []
    floats = (trt.float32, trt.float16)
    kept = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        outputs = [layer.get_output(j) for j in range(layer.num_outputs)]
        if not keep(layer) or not any(t.dtype in floats for t in outputs):
            continue
        layer.precision = trt.float32
        for j, tensor in enumerate(outputs):
            if tensor.dtype in floats:
                layer.set_output_type(j, trt.float32)
        kept.append(layer.name)
    if kept:
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    return kept


def apply_builder_flags(trt, config, flags: list) -> None:
    if hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)
    for flag in flags:
        config.set_flag(flag)


class Logger:
    """A TensorRT logger that forwards to Python logging and keeps what it saw (tests read it)."""

    def __new__(cls, trt):
        class _Logger(trt.ILogger):
            def __init__(self) -> None:
                trt.ILogger.__init__(self)
                self.messages: list[tuple[str, str]] = []

            def log(self, severity, msg) -> None:
                name = str(severity).split(".")[-1]
                if name not in ("INFO", "VERBOSE"):
                    self.messages.append((name, msg))
                level = {"INTERNAL_ERROR": logging.ERROR, "ERROR": logging.ERROR, "WARNING": logging.WARNING,
                         "INFO": logging.DEBUG, "VERBOSE": logging.DEBUG}.get(name, logging.INFO)
                log.log(level, "[TRT] %s", msg)

            def errors(self) -> list[str]:
                return [m for s, m in self.messages if s in ("ERROR", "INTERNAL_ERROR")]

        return _Logger()
