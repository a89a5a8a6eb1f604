"""Reduced-precision ONNX variants of the FP32 export.

- INT8: ONNX Runtime static quantization in QDQ format: symmetric activations and per-channel
  symmetric weights (what TensorRT's explicit quantization accepts), calibrated on the `calib`
  split, never on the evaluation split.
- FP16: a typed FP16 graph that keeps float32 `input`/`output`, so callers feed the same arrays.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx

from model import cache
from model.export import check_onnx
from model.spec import ModelSpec

log = logging.getLogger(__name__)
CALIB_BATCH = 50
# Everything that shapes the INT8 model; part of its cache key, so a changed recipe re-quantizes.
# Biases stay float: TensorRT has no INT32 DequantizeLinear for them and quantizes the bias
# itself from the conv's input and weight scales.
INT8_OPTIONS = {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False}
RECIPES = {"int8": {"format": "QDQ", "per_channel": True, "calibration": "MinMax", "options": INT8_OPTIONS,
                    "calib_batch": CALIB_BATCH},
           "fp16": {"converter": "onnxruntime.transformers.float16", "keep_io_types": True}}


class _CalibrationReader:
    def __init__(self, feeds: list[dict]) -> None:
        self._batches = iter(feeds)

    def get_next(self):
        feed = next(self._batches, None)
        return None if feed is None else {k: np.ascontiguousarray(v) for k, v in feed.items()}


def quantize_int8(fp32_path: Path, out_path: Path, calib_feeds: list[dict]) -> Path:
    """Write the INT8 model to `out_path` (a cache layer temporary: its sibling names are unique)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prep = out_path.with_suffix(".prep" + out_path.suffix)
    try:
        quant_pre_process(str(fp32_path), str(prep), skip_symbolic_shape=True)
        quantize_static(
            str(prep), str(out_path), _CalibrationReader(calib_feeds),
            quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options=INT8_OPTIONS,
        )
    finally:
        prep.unlink(missing_ok=True)
    return out_path


def _sort_topologically(graph: onnx.GraphProto) -> None:
    """ONNX Runtime's converter appends the float32<->float16 casts at the end of the node list;
    the checker (rightly) wants producers before consumers."""
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            raise ValueError(f"graph has a cycle or a dangling input among {[n.name for n in pending]}")
        for node in ready:
            ordered.append(node)
            available.update(node.output)
        pending = [n for n in pending if n not in ready]
    del graph.node[:]
    graph.node.extend(ordered)


def convert_fp16(fp32_path: Path, out_path: Path) -> Path:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(fp32_path)), keep_io_types=True)
    _sort_topologically(model.graph)
    onnx.save(model, str(out_path))
    return out_path


def variant(fp32_path: Path, precision: str, spec: ModelSpec, calib_feeds: list[dict] | None = None,
            folder: Path | None = None) -> Path:
    """The cached `fp16` or `int8` ONNX file derived from an FP32 export (which the caller took
    from the cache or checked, so its hash here names verified bytes), kept in `folder` (by
    default beside it)."""
    if precision not in RECIPES:
        raise ValueError(f"no ONNX variant for precision {precision!r}; expected fp16 or int8")
    key = {"fp32": cache.sha256_file(fp32_path), "precision": precision, "recipe": RECIPES[precision]}
    if precision == "int8":
        if not calib_feeds:
            raise ValueError("INT8 quantization needs calibration inputs (the dataset's calib split or sample inputs)")
        key["calib"] = cache.sha256_bytes(b"".join(np.ascontiguousarray(v).tobytes()
                                                   for feed in calib_feeds for v in feed.values()))

    def build(tmp: Path) -> None:
        if precision == "int8":
            quantize_int8(fp32_path, tmp, calib_feeds)
        else:
            convert_fp16(fp32_path, tmp)

    name = f"{fp32_path.stem}-{precision}-{cache.key(key)}.onnx"
    return cache.get_or_build(folder or fp32_path.parent, name, key, build, verify=lambda p: check_onnx(p, spec)).path


# -- what a variant must look like, for any model ---------------------------------------------------
# Ops whose second input is a weight that INT8 quantizes per output channel, and that channel's axis.
def _channel_axis(node: onnx.NodeProto, ndim: int) -> int:
    if node.op_type == "Conv":
        return 0  # [out, in, kh, kw]
    if node.op_type == "ConvTranspose":
        return 1  # [in, out, kh, kw]
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    return ndim - 1  # MatMul: [..., K, N]


WEIGHT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def weight_ops(model: onnx.ModelProto) -> list[tuple[onnx.NodeProto, np.ndarray]]:
    """The nodes INT8 quantizes the weights of: those ops where the second input is a float
    initializer of rank >= 2 (a MatMul of two activations, as attention has, holds none)."""
    from onnx import numpy_helper

    init = {i.name: i for i in model.graph.initializer}
    found = []
    for node in model.graph.node:
        weight = init.get(node.input[1]) if node.op_type in WEIGHT_OPS and len(node.input) > 1 else None
        if weight is not None and weight.data_type == onnx.TensorProto.FLOAT and len(weight.dims) >= 2:
            found.append((node, numpy_helper.to_array(weight)))
    return found


def int8_weight_problems(fp32: onnx.ModelProto, int8: onnx.ModelProto) -> list[str]:
    """How the INT8 model fails to hold each FP32 weight op's weights as int8, per output channel
    (what TensorRT's explicit quantization needs); empty when it does."""
    from onnx import numpy_helper

    nodes = {n.name: n for n in int8.graph.node}
    producer = {out: n for n in int8.graph.node for out in n.output}
    init = {i.name: numpy_helper.to_array(i) for i in int8.graph.initializer}
    problems = []
    for node, weight in weight_ops(fp32):
        label = f"{node.op_type} {node.name!r} (weight {tuple(weight.shape)})"
        quant = nodes.get(node.name)
        dq = producer.get(quant.input[1]) if quant is not None else None
        if dq is None or dq.op_type != "DequantizeLinear":
            problems.append(f"{label}: its weight is not dequantized from int8 in the INT8 model")
            continue
        q, scale = init.get(dq.input[0]), init.get(dq.input[1])
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        want = _channel_axis(node, weight.ndim)
        if q is None or q.dtype != np.int8 or q.shape != weight.shape:
            problems.append(f"{label}: dequantizes {None if q is None else (q.dtype.name, q.shape)}, "
                            f"expected int8 {weight.shape}")
        elif scale is None or scale.shape != (weight.shape[want],) or axis != want:
            problems.append(f"{label}: scale {None if scale is None else scale.shape} on axis {axis}, expected one "
                            f"per output channel ({weight.shape[want]},) on axis {want}")
    return problems


def initializer_bytes(model: onnx.ModelProto) -> dict[str, int]:
    """Bytes of the initializers' values, by dtype name."""
    from onnx import numpy_helper

    sizes: dict[str, int] = {}
    for i in model.graph.initializer:
        a = numpy_helper.to_array(i)
        sizes[a.dtype.name] = sizes.get(a.dtype.name, 0) + a.nbytes
    return sizes
