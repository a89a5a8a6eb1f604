"""Which diagnosis a backend gets: ONNX Runtime's graphs marked whole, TensorRT's networks marked
by name (model/diagnose/trt_layers.py), both against ONNX Runtime CPU FP32 on the FP32 graph."""
from __future__ import annotations

import time

import numpy as np
import onnx

from model.diagnose.layers import (RANGE, Diagnosis, Tensor, diagnosis_feed, layer_rows, providers_for,
                                   quantized_views, reference_tensors, run_marked)


def diagnose(arts, backend_name: str, feed: dict | None = None, reference=None) -> Diagnosis:
    """Every layer of `backend_name` on `feed` against ONNX Runtime CPU FP32 on the FP32 graph.
    `reference`: (tensors, values) from `reference_tensors` for this feed, when already made."""
    from model.backends.registry import BACKENDS

    if backend_name not in BACKENDS:
        raise ValueError(f"unknown backend {backend_name!r}; choose from {sorted(BACKENDS)}")
    backend = BACKENDS[backend_name]
    if backend.framework not in ("ONNX Runtime", "TensorRT"):
        raise ValueError(f"diagnose compares ONNX graphs layer by layer: {backend_name} runs PyTorch, which has no "
                         "ONNX tensor names; choose an onnxruntime-* or tensorrt-* backend")
    reason = backend.not_for(arts) or (backend.missing().reason if backend.missing() else None)
    if reason:
        from model.backends.base import BackendUnavailable

        raise BackendUnavailable(f"{backend_name} cannot run {arts.spec.name} here: {reason}")
    # Artifacts first (a module to build, an export, a quantization): timed is the diagnosis itself.
    arts.onnx  # noqa: B018
    if backend.framework == "ONNX Runtime" and backend.precision != "fp32":
        arts.onnx_variant(backend.precision)
    start = time.perf_counter()
    feed = feed if feed is not None else diagnosis_feed(arts)
    tensors, ref = reference if reference is not None else reference_tensors(arts, feed)
    if backend.framework == "TensorRT":
        from model.diagnose.trt_layers import diagnose_trt

        result = diagnose_trt(arts, backend, feed, tensors, ref)
    else:
        result = _diagnose_ort(arts, backend, feed, tensors, ref)
    result.seconds = time.perf_counter() - start
    return result


def _diagnose_ort(arts, backend, feed: dict, tensors: list[Tensor], ref: dict) -> Diagnosis:
    from model.backends import ort_session
    from model.compare import compare_outputs

    precision, spec = backend.precision, arts.spec
    model = onnx.load(str(arts.onnx_variant(precision)))
    views = quantized_views(model) if precision == "int8" else {}
    names = {t.name: views.get(t.name, (t.name, None))[0] for t in tensors}
    out = run_marked(model, feed, list(names.values()), providers_for(backend))

    def limit(t: Tensor, value: np.ndarray) -> float | None:
        if t.name in views and views[t.name][1] is not None:
            return 127 * views[t.name][1]
        return RANGE["fp16"] if value.dtype == np.float16 else None  # a tensor kept in float32 has no such bound
    rows, missing = layer_rows(spec, precision, tensors, names, ref, out, limit)
    notes = [f"{len(missing)} tensors have no counterpart in the {precision} graph: {missing[:5]}"] if missing else []
    # Marking can change what ONNX Runtime fuses and so the numbers; say whether the final outputs moved.
    plain, setting = ort_session.create(arts.onnx_variant(precision), providers_for(backend), cache_dir=arts.cache_dir)
    notes += [setting.note] if setting.note else []
    unmarked = dict(zip(spec.output_names, plain.run(spec.output_names, feed)))
    moved = [n for n in spec.output_names if not np.array_equal(unmarked[n], out[n], equal_nan=True)]
    if moved:
        notes.append(f"marking every tensor changed the final outputs {moved} against the unmarked graph (ONNX "
                     "Runtime fused differently); the verdict below is the unmarked graph's")
    verdict = compare_outputs({n: ref[n] for n in spec.output_names}, unmarked, precision, spec)
    return Diagnosis(spec.name, backend.name, precision, rows, f"marked all {len(tensors)} float tensors as outputs "
                     "(ONNX Runtime)", len(next(iter(feed.values()))), verdict.message, bool(verdict), notes)
