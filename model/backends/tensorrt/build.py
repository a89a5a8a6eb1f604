"""ONNX -> TensorRT engine plan, built once per (model, TensorRT, GPU, precision, profile).

Plans and the timing cache go through `model.cache`: the plan's sidecar holds what its key was
made of (ONNX sha256, TensorRT version, GPU, flags, profile, workspace, optimization level). A plan
is used only when that matches what would be built now and its bytes hash to what the sidecar
says; anything else (truncated, damaged, built by another TensorRT or for another GPU) is rebuilt
with a warning.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from model import cache
from model.backends.base import BackendUnavailable
from model.backends.tensorrt import build_log, build_slots
from model.backends.tensorrt import compat as trt_compat
from model.backends.tensorrt import cuda as cuda_rt
from model.profile import BatchProfile
from model.spec import ModelSpec

log = logging.getLogger(__name__)
DEFAULT_WORKSPACE = 1 << 30
# TensorRT's builder searches more tactics at 5 than at its default 3. On the H200 (8.6.1) that took
# an FP16 engine from 46.4 to 43.9 us at batch 1 and the INT8 engine at 4096 to 0.85 ms; with a
# warm timing cache the build takes seconds longer, not minutes.
DEFAULT_OPTIMIZATION_LEVEL = 5


class EngineBuildError(RuntimeError):
    pass


@dataclass(frozen=True)
class EngineSpec:
    model: ModelSpec  # its name, inputs and dynamic axes; `profile` is the batch range built for
    precision: str = "fp32"  # fp32 | fp16 | int8 (int8 needs a Q/DQ ONNX model)
    profile: BatchProfile | None = None  # default: the model's
    workspace: int = DEFAULT_WORKSPACE
    typed_graph: bool = False  # the ONNX carries its precision (FP16 graph or Q/DQ nodes)
    optimization_level: int = DEFAULT_OPTIMIZATION_LEVEL  # 0..5


@dataclass(frozen=True)
class Engine:
    path: Path
    sidecar: dict = field(repr=False)
    rebuilt: bool

    def plan(self) -> bytes:
        return self.path.read_bytes()


def _batch(spec: EngineSpec) -> BatchProfile:
    return spec.profile or spec.model.profile


def _identity(onnx_path: Path, spec: EngineSpec, trt) -> dict:
    network_flags, builder_flags = trt_compat.build_flags(trt, spec.precision, spec.typed_graph)
    batch = _batch(spec)
    return {
        "model": spec.model.name,
        # Every input's (min, opt, max) shape per optimization profile: the batch and every other dynamic axis.
        "shapes": {str(opt): {n: [list(s) for s in shapes] for n, shapes in spec.model.profile_shapes(opt, batch).items()}
                   for opt in batch.opts},
        "onnx_sha256": cache.sha256_file(onnx_path),
        "tensorrt": trt.__version__,
        **cuda_rt.device_identity(),
        "precision": spec.precision,
        "network_flags": network_flags,
        "builder_flags": sorted(str(f) for f in builder_flags),
        # What the builder is given, as JSON reads it back (static batches are engines of their own).
        "profile": {"min": batch.min, "opts": list(batch.opts), "max": batch.max},
        "workspace": spec.workspace,
        "optimization_level": spec.optimization_level,
        # Only when set, so engines built before the option existed keep their keys.
        **({"keep_fp32": sorted(_kept(spec))} if _kept(spec) else {}),
    }


def _kept(spec: EngineSpec) -> tuple[str, ...]:
    return tuple(spec.model.keep_fp32.get(spec.precision, ()))


def build_plan(onnx_path: Path, spec: EngineSpec, timing_cache: bytes | None = None) -> tuple[bytes, bytes]:
    """The serialized plan and the timing cache after the build (seeded with `timing_cache`)."""
    trt = trt_compat.import_tensorrt()
    logger = trt_compat.Logger(trt)
    builder = trt.Builder(logger)
    network_flags, builder_flags = trt_compat.build_flags(trt, spec.precision, spec.typed_graph)
    network = builder.create_network(network_flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, spec.workspace)
    trt_compat.apply_builder_flags(trt, config, builder_flags)
    if _kept(spec):
        keep_fp32(trt, network, config, onnx_path, _kept(spec))
    config.builder_optimization_level = spec.optimization_level
    batch = _batch(spec)
    for opt in batch.opts:  # one optimization profile per opt batch; the runner picks between them
        profile = builder.create_optimization_profile()
        for name, (lo, mid, hi) in spec.model.profile_shapes(opt, batch).items():
            profile.set_shape(name, lo, mid, hi)  # every dynamic axis: batch and e.g. sequence
        config.add_optimization_profile(profile)
    timing = config.create_timing_cache(timing_cache or b"")
    if timing is None or not config.set_timing_cache(timing, ignore_mismatch=False):
        log.warning("the cached timing cache is unusable for this build; starting an empty one")
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineBuildError(f"TensorRT failed to build {onnx_path} ({spec}): {logger.errors()}")
    return bytes(plan), bytes(config.get_timing_cache().serialize())


def _log_fields(spec: EngineSpec) -> dict:
    return {"model": spec.model.name, "precision": spec.precision, "typed_graph": spec.typed_graph,
            "profile": str(_batch(spec)), "optimization_level": spec.optimization_level}


def runner_test_spec(model: ModelSpec, profile: BatchProfile, workspace: int = DEFAULT_WORKSPACE) -> EngineSpec:
    """FP32, one engine holding every opt batch's optimization profile: what the runner's own tests
    (profile switching, graphs, shape binding) run on. The backends deploy one engine per opt batch
    instead (engine_set.py); where that set is this one engine (one opt batch, no static batch), it
    is the deployed engine, else it exists for those tests only and is built at optimization level
    0: its tactics matter to no test, and level 5 cost minutes of a cold run."""
    deployed = profile.engine_profiles() == [profile]
    return EngineSpec(model, profile=profile, workspace=workspace,
                      optimization_level=DEFAULT_OPTIMIZATION_LEVEL if deployed else 0)


def engine_for_onnx(onnx_path: str | Path, spec: EngineSpec,
                    cache_dir: str | Path = cache.DEFAULT_CACHE) -> Engine:
    slots = build_slots.slots()  # a bad setting fails here, before any build
    trt = trt_compat.import_tensorrt()
    reason = cuda_rt.gpu_unavailable_reason()
    if reason:
        raise BackendUnavailable(f"TensorRT needs a GPU: {reason}")
    onnx_path = Path(onnx_path)
    identity = _identity(onnx_path, spec, trt)
    folder = Path(cache_dir) / "engines"
    # One timing cache per TensorRT and GPU generation, refined by every build: last writer wins, which
    # loses nothing a plan depends on (a timing cache only speeds builds up); it travels with the
    # artifact cache (CI keeps it). Merging caches of builds running at once through
    # ITimingCache.combine crashed the GPU workers (TensorRT 8.6, H100) and was withdrawn.
    timing_key = {"tensorrt": trt.__version__, "compute_capability": identity["compute_capability"]}
    timing_name = f"timing-{trt.__version__}-sm{identity['compute_capability']}.cache"

    name = f"{spec.model.name}-{spec.precision}-{cache.key(identity)}.plan"

    def build(tmp: Path) -> None:
        with build_slots.build_slot(cuda_rt.pci_address(), slots) as waited:
            timing = cache.load(folder, timing_name, timing_key)  # what the build before this one left
            build_log.record(folder, "started", name, _log_fields(spec), waited)
            started = time.perf_counter()
            try:
                plan, refined = build_plan(onnx_path, spec, timing.path.read_bytes() if timing else None)
            except BaseException:
                build_log.record(folder, "failed", name, _log_fields(spec), waited, time.perf_counter() - started)
                raise
            seconds = time.perf_counter() - started
            build_log.record(folder, "built", name, _log_fields(spec), waited, seconds)
            log.info("built %s in %.1f s", name, seconds)

            def write_timing(timing_tmp: Path) -> None:
                timing_tmp.write_bytes(refined)

            cache.store(folder, timing_name, timing_key, write_timing)
        tmp.write_bytes(plan)

    art = cache.get_or_build(folder, name, identity, build)
    return Engine(art.path, art.sidecar, rebuilt=art.built)


def keep_fp32(trt, network, config, onnx_path, names) -> list[str]:
    """Keep the layers of the ONNX nodes `names` in float32 (precision, output types, and the
    builder obeying them). A layer belongs to a node by the node's name or by an output tensor."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    wanted = set(names)
    unknown = sorted(wanted - {n.name for n in graph.node})
    if unknown:
        raise ValueError(f"keep_fp32: {unknown} are not nodes of {onnx_path}")
    outputs = {o for n in graph.node if n.name in wanted for o in n.output}

    def belongs(layer) -> bool:
        return layer.name in wanted or any(layer.get_output(j).name in outputs for j in range(layer.num_outputs))
    kept = trt_compat.keep_layers_fp32(trt, network, config, belongs)
    log.info("kept %d TensorRT layers in float32 for %d ONNX nodes", len(kept), len(wanted))
    return kept
