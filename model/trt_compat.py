"""Every TensorRT version difference this project meets, in one place (TensorRT >= 8.6).

- < 10: networks need the EXPLICIT_BATCH creation flag (implicit batch was removed in 10).
- >= 10: STRONGLY_TYPED networks exist; a typed graph (an FP16 ONNX) builds as typed.
- >= 11: no FP16/INT8 builder flags: reduced precision only through typed graphs and Q/DQ nodes,
  so every network is created strongly typed.
Everything else (set_input_shape, set_tensor_address, execute_async_v3, build_serialized_network,
memory pool limits, timing caches) is the same name-based API across these versions.
"""
from __future__ import annotations

import logging

from model.runners.base import BackendUnavailable

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


def network_flags(trt, strongly_typed: bool) -> int:
    flags = 0
    if major(trt) < 10:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    if strongly_typed or major(trt) >= 11:
        if not hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
            raise BackendUnavailable(f"TensorRT {trt.__version__} has no strongly typed networks (needs >= 10); "
                                     "build the FP16 model with the FP16 builder flag instead")
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return flags


def builder_flags(trt, precision: str, strongly_typed: bool) -> list:
    """Builder flags for a precision. TF32 is always cleared: FP32 engines must match PyTorch tightly."""
    flags = []
    if precision == "fp32" or strongly_typed or major(trt) >= 11:
        return flags  # a typed network takes its precision from the graph
    if precision == "fp16":
        flags.append(trt.BuilderFlag.FP16)
    elif precision == "int8":
        # Explicit quantization (Q/DQ nodes) still needs the INT8 flag before TensorRT 10's typed path.
        flags += [trt.BuilderFlag.INT8, trt.BuilderFlag.FP16]
    else:
        raise ValueError(f"unknown precision {precision!r}; expected fp32, fp16 or int8")
    return flags


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
