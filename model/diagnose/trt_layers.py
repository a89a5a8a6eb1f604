"""TensorRT layer by layer, and TensorRT's half of a precision repair.

The engine is built the way the backend builds it (same source graph, flags and kept layers), for
the feed's shapes only, with the ONNX tensors marked as network outputs by name (TensorRT's parser
names network tensors after them). Marking every tensor keeps each one materialised, which stops
TensorRT fusing across it and can hide the fault: when every marked tensor holds but the unmarked
engine fails, the first diverging tensor is bisected instead, marking one tensor per build (log2 of
the layer count builds), and the diagnosis says which was done.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx

from model.backends.tensorrt import build_slots, compat
from model.backends.tensorrt import cuda as cuda_rt
from model.backends.tensorrt.build import keep_fp32
from model.compare import compare_outputs
from model.diagnose.layers import RANGE, Diagnosis, Tensor, layer_rows, quantized_views

log = logging.getLogger(__name__)


def _source(arts, backend) -> tuple[Path, bool]:
    """The graph the backend's engines are built from, and whether it carries its precision."""
    typed = backend.name.endswith("-typed") or backend.precision == "int8"
    return (arts.onnx_variant(backend.precision) if typed else arts.onnx), typed


def build_marked(arts, backend, names: list[str], feed: dict) -> tuple[bytes, list[str]]:
    """A plan for exactly the feed's shapes with `names` marked as outputs (those the network has)."""
    from model.backends.tensorrt.build import DEFAULT_WORKSPACE, EngineBuildError

    trt = compat.import_tensorrt()
    source, typed = _source(arts, backend)
    logger = compat.Logger(trt)
    builder = trt.Builder(logger)
    network_flags, builder_flags = compat.build_flags(trt, backend.precision, typed)
    network = builder.create_network(network_flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(source).read_bytes()):
        raise EngineBuildError(f"TensorRT could not parse {source}: "
                               + "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors)))
    tensors = {}
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        for j in range(layer.num_outputs):
            tensors[layer.get_output(j).name] = layer.get_output(j)
    marked = [n for n in dict.fromkeys(names) if n in tensors]
    for name in marked:
        if not tensors[name].is_network_output:
            network.mark_output(tensors[name])
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, arts.workspace or DEFAULT_WORKSPACE)
    compat.apply_builder_flags(trt, config, builder_flags)
    kept = arts.spec.keep_fp32.get(backend.precision, ())
    if kept:
        keep_fp32(trt, network, config, source, kept)
    profile = builder.create_optimization_profile()
    for name, value in feed.items():
        profile.set_shape(name, value.shape, value.shape, value.shape)
    config.add_optimization_profile(profile)
    with build_slots.build_slot(cuda_rt.pci_address(), build_slots.slots()):  # takes turns with other builds
        plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineBuildError(f"TensorRT failed to build {source} with {len(marked)} marked tensors: {logger.errors()}")
    return bytes(plan), marked


def run_plan(plan: bytes, arts, feed: dict) -> dict[str, np.ndarray]:
    from model.backends.tensorrt.runner import TrtRunner

    with TrtRunner(plan, label="diagnose", graphs=False, declared=arts.spec.input_metadata()) as runner:
        return {k: np.asarray(v) for k, v in runner.infer(feed).items()}


def diagnose_trt(arts, backend, feed: dict, tensors: list[Tensor], ref: dict) -> Diagnosis:
    spec, precision = arts.spec, backend.precision
    source, _ = _source(arts, backend)
    views = quantized_views(onnx.load(str(source), load_external_data=False)) if precision == "int8" else {}
    names = {t.name: views.get(t.name, (t.name, None))[0] for t in tensors}
    kept = set(spec.keep_fp32.get(precision, ()))

    def limit(t: Tensor, value: np.ndarray) -> float | None:
        if t.name in views and views[t.name][1] is not None:
            return 127 * views[t.name][1]
        # TensorRT hands marked tensors out in float32; a layer not kept may have run in float16.
        return None if precision == "fp32" or t.node in kept else RANGE["fp16"]

    plain = run_plan(build_marked(arts, backend, [], feed)[0], arts, feed)
    verdict = compare_outputs({n: ref[n] for n in spec.output_names}, plain, precision, spec)
    plan, marked = build_marked(arts, backend, list(names.values()), feed)
    rows, missing = layer_rows(spec, precision, tensors, names, ref, run_plan(plan, arts, feed), limit)
    notes = [f"{len(missing)} ONNX tensors are no TensorRT network tensors (folded away): {missing[:5]}"] if missing else []
    method = f"marked all {len(marked)} tensors TensorRT has as outputs"
    if all(r.passed for r in rows) and not verdict:
        rows, probes = _bisect(arts, backend, feed, tensors, names, ref, rows, limit)
        method = (f"bisected: with every tensor marked all held while the unmarked engine fails (marking stopped "
                  f"the fusion that breaks it); {probes} builds marked one tensor each")
    return Diagnosis(spec.name, backend.name, precision, rows, method, len(next(iter(feed.values()))),
                     verdict.message, bool(verdict), notes)


def _bisect(arts, backend, feed, tensors, names, ref, rows, limit):
    """The first tensor that diverges when marked alone, assuming that once a tensor diverges the
    ones after it do too (what a broken layer does to everything downstream). Probed rows replace
    the marked-all ones."""
    by_tensor = {r.tensor: i for i, r in enumerate(rows)}
    order = [t for t in tensors if t.name in by_tensor]
    lo, hi, probes = 0, len(order) - 1, 0
    while lo < hi:
        mid = (lo + hi) // 2
        t = order[mid]
        plan, _ = build_marked(arts, backend, [names[t.name]], feed)
        probes += 1
        row, _ = layer_rows(arts.spec, backend.precision, [t], names, ref, run_plan(plan, arts, feed), limit)
        if row:
            rows[by_tensor[t.name]] = row[0]
            if row[0].passed:
                lo = mid + 1
                continue
        hi = mid
    if lo == len(order) - 1:  # the last tensor is a graph output: its unmarked value is what fails
        plan, _ = build_marked(arts, backend, [names[order[lo].name]], feed)
        row, _ = layer_rows(arts.spec, backend.precision, [order[lo]], names, ref, run_plan(plan, arts, feed), limit)
        rows[by_tensor[order[lo].name]] = row[0]
        probes += 1
    return rows, probes
