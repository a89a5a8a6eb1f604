"""Layer-by-layer comparison: every intermediate tensor of a backend against ONNX Runtime CPU FP32.

The FP32 export's float tensors, in graph order, are the layers. The reference runs that graph with
every one of them made a graph output (after `onnx.shape_inference`, so each carries its type).
ONNX Runtime candidates run their own graph (the FP16 or Q/DQ INT8 variant) marked the same way and
are matched by the original tensor names: the FP16 converter keeps them and only adds Casts; in a
Q/DQ graph a tensor that is quantized is compared as its DequantizeLinear output, the value every
consumer reads. TensorRT candidates come from model/diagnose/trt_layers.py. Everything is compared
in float32 with the elementwise bound of the model's own tolerance (`spec.tolerance`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16}
# The largest magnitude a float16 tensor holds; beyond it values round to inf.
RANGE = {"fp16": float(np.finfo(np.float16).max)}
DEFAULT_ROWS = 16


@dataclass(frozen=True)
class Tensor:
    index: int  # position in the FP32 graph's node order
    node: str
    op: str
    name: str


@dataclass
class LayerRow:
    index: int
    node: str
    op: str
    tensor: str
    max_abs: float
    rel: float  # max_abs over the reference tensor's largest magnitude
    nonfinite: int  # NaN/Inf in the candidate where the reference has none
    ref_absmax: float
    out_absmax: float  # over the candidate's finite values
    limit: float | None  # float16's 65504, or an INT8 tensor's clipping range (127 x its scale)
    passed: bool
    compared_as: str = ""  # the candidate's tensor, where it is not the same name

    @property
    def beyond_range(self) -> bool:
        return self.limit is not None and self.ref_absmax > self.limit


@dataclass
class Diagnosis:
    model: str
    backend: str
    precision: str
    rows: list[LayerRow]
    method: str  # how the candidate's tensors were obtained (marking, bisection)
    feed_rows: int
    outputs: str = ""  # the final outputs' verdict, as the parity test gives it
    outputs_passed: bool | None = None
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def first(self) -> LayerRow | None:
        """The first layer in graph order whose error leaves the tolerance or that turns non-finite."""
        return next((r for r in self.rows if not r.passed), None)

    def to_dict(self) -> dict:
        first = self.first
        return {"model": self.model, "backend": self.backend, "precision": self.precision, "method": self.method,
                "feed_rows": self.feed_rows, "outputs": self.outputs, "outputs_passed": self.outputs_passed, "notes": self.notes,
                "seconds": round(self.seconds, 3), "first_diverging": asdict(first) if first else None,
                "layers": [asdict(r) for r in self.rows]}


def float_tensors(model: onnx.ModelProto) -> list[Tensor]:
    """Every float tensor a node computes from the inputs, in node order."""
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*g.value_info, *g.output, *g.input)}
    # Weights are no layers: Constant nodes and whatever is computed from weights alone (the
    # exporter shares equal initializers through Identity nodes).
    constant = {i.name for i in g.initializer} | {""}
    tensors = []
    for i, node in enumerate(g.node):
        if node.op_type == "Constant" or all(v in constant for v in node.input):
            constant.update(node.output)
            continue
        tensors += [Tensor(i, node.name or f"#{i}", node.op_type, out)
                    for out in node.output if out and types.get(out) in FLOAT_TYPES]
    return tensors


def mark_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy of `model` whose graph outputs also include those of `names` its nodes compute (typed
    where inference knows). A reduced-precision graph can lack a tensor of the FP32 one (the
    quantizer's own optimization folds some, a transformers encoder's attention-mask `Where`
    among them); ONNX Runtime refuses a graph output nothing computes, so those stay unmarked and
    are reported as having no counterpart."""
    marked = onnx.shape_inference.infer_shapes(model)
    known = {v.name: v for v in marked.graph.value_info}
    present = {o.name for o in marked.graph.output}
    computed = {out for node in marked.graph.node for out in node.output if out}
    for name in names:
        if name not in present and name in computed:
            marked.graph.output.append(known.get(name) or onnx.helper.ValueInfoProto(name=name))
            present.add(name)
    return marked


def quantized_views(model: onnx.ModelProto) -> dict[str, tuple[str, float | None]]:
    """For a Q/DQ graph: original tensor -> (its DequantizeLinear output, the quantization scale)."""
    consts = {i.name: i for i in model.graph.initializer}
    consts.update({n.output[0]: a.t for n in model.graph.node if n.op_type == "Constant" for a in n.attribute
                   if a.name == "value"})
    dq_of = {n.input[0]: n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    views = {}
    for n in model.graph.node:
        if n.op_type == "QuantizeLinear" and n.output[0] in dq_of:
            scale = consts.get(n.input[1])
            value = numpy_helper.to_array(scale) if scale is not None else None
            views[n.input[0]] = (dq_of[n.output[0]], float(value) if value is not None and value.size == 1 else None)
    return views


def run_marked(model: onnx.ModelProto, feed: dict, names: list[str], providers: list) -> dict[str, np.ndarray]:
    """The named float tensors (and the graph's outputs) for one feed, in the graph's own dtypes."""
    from model.backends import ort_session

    marked = mark_outputs(model, names)
    session, _ = ort_session.create(marked.SerializeToString(), providers, log_severity=3)
    wanted = providers[0][0] if isinstance(providers[0], tuple) else providers[0]
    if session.get_providers()[0] != wanted:
        raise RuntimeError(f"ONNX Runtime ran on {session.get_providers()} where {wanted} was asked for")
    outputs = [o.name for o in session.get_outputs()]
    inputs = {i.name for i in session.get_inputs()}
    values = session.run(outputs, {k: v for k, v in feed.items() if k in inputs})
    return {n: np.asarray(v) for n, v in zip(outputs, values) if np.issubdtype(np.asarray(v).dtype, np.floating)}


def compare_tensor(spec, precision: str, t: Tensor, ref: np.ndarray, out: np.ndarray, limit: float | None,
                   compared_as: str = "") -> LayerRow:
    ref, out = ref.astype(np.float32), out.astype(np.float32)
    ref_finite = np.isfinite(ref)
    finite = np.isfinite(out)
    ref_absmax = float(np.abs(ref[ref_finite]).max()) if ref_finite.any() else float("nan")
    out_absmax = float(np.abs(out[finite]).max()) if finite.any() else float("nan")
    if ref.shape != out.shape:
        return LayerRow(t.index, t.node, t.op, t.name, float("inf"), float("inf"), 0, ref_absmax, out_absmax, limit,
                        False, f"{compared_as} shape {out.shape} vs {ref.shape}")
    both = ref_finite & finite
    diff = np.abs(out[both].astype(np.float64) - ref[both])
    max_abs = float(diff.max()) if diff.size else 0.0
    # The elementwise bound alone: an intermediate tensor's spread is set by its largest channels (one
    # outlier channel 1000x the rest), and a floor scaled to it would hide the channels a reduced
    # precision destroyed; and a constant intermediate (an attention mask) is no degenerate model.
    tol = spec.tolerance(precision, t.name)
    new_nonfinite = bool((ref_finite & ~finite).any())
    verdict = not new_nonfinite and bool(np.all(diff <= tol.atol + tol.rtol * np.abs(ref[both].astype(np.float64))))
    return LayerRow(t.index, t.node, t.op, t.name, max_abs, max_abs / ref_absmax if ref_absmax else float("inf"),
                    int((ref_finite & ~finite).sum()), ref_absmax, out_absmax, limit, bool(verdict), compared_as)


def layer_rows(spec, precision: str, tensors: list[Tensor], names: dict[str, str], ref: dict, out: dict,
               limit) -> tuple[list[LayerRow], list[str]]:
    """A row per tensor the candidate produced (`names`: reference name -> the candidate's), and the
    names it did not. `limit(tensor, value)`: the range the candidate's tensor can hold, or None."""
    rows, missing = [], []
    for t in tensors:
        if names.get(t.name) not in out:
            missing.append(t.name)
            continue
        value = out[names[t.name]]
        rows.append(compare_tensor(spec, precision, t, ref[t.name], value, limit(t, value),
                                   names[t.name] if names[t.name] != t.name else ""))
    return rows, missing


def providers_for(backend) -> list:
    from model.backends.onnxruntime import PROVIDERS

    return PROVIDERS["cuda" if "cuda" in backend.name else "cpu"]


def diagnosis_feed(arts, rows: int = DEFAULT_ROWS) -> dict:
    """The first rows of what the model is scored on (held-out data, else seeded samples), within
    its batch range."""
    from model.evaluate import evaluation_feed

    feed, _ = evaluation_feed(arts)
    total = len(next(iter(feed.values())))
    rows = min(max(rows, arts.profile.min), arts.profile.max)
    return {k: np.ascontiguousarray(v[np.arange(rows) % total]) for k, v in feed.items()}


def reference_tensors(arts, feed: dict) -> tuple[list[Tensor], dict[str, np.ndarray]]:
    model = onnx.load(str(arts.onnx))
    tensors = float_tensors(model)
    return tensors, run_marked(model, feed, [t.name for t in tensors], ["CPUExecutionProvider"])
