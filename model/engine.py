"""ONNX -> TensorRT engine plan, built once per (model, TensorRT, GPU, precision, profile).

The plan is cached as `<key>.plan` beside `<key>.json`, a sidecar holding what the key was made
of and the plan's sha256. A plan is used only when its sidecar matches what would be built now
and its bytes hash to what the sidecar says; anything else (truncated, corrupted, built by another
TensorRT or for another GPU) is rebuilt with a warning.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from model import artifacts, cuda_rt, trt_compat
from model.profile import BatchProfile
from model.runners.base import BackendUnavailable
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


def _identity(onnx_path: Path, spec: EngineSpec, trt) -> dict:
    network_flags, builder_flags = trt_compat.build_flags(trt, spec.precision, spec.typed_graph)
    return {
        "model": spec.model.name,
        "shapes": {str(opt): {n: [list(s) for s in shapes] for n, shapes in spec.model.profile_shapes(opt, _batch(spec)).items()}
                   for opt in _batch(spec).opts},
        "onnx_sha256": artifacts.sha256_file(onnx_path),
        "tensorrt": trt.__version__,
        **cuda_rt.device_identity(),
        "precision": spec.precision,
        "network_flags": network_flags,
        "builder_flags": sorted(str(f) for f in builder_flags),
        # What the builder is given, as JSON reads it back (static batches are engines of their own).
        "profile": {"min": _batch(spec).min, "opts": list(_batch(spec).opts), "max": _batch(spec).max},
        "workspace": spec.workspace,
        "optimization_level": spec.optimization_level,
    }


def _batch(spec: EngineSpec) -> BatchProfile:
    return spec.profile or spec.model.profile


def cached_plan_problem(plan_path: Path, sidecar: dict | None, identity: dict) -> str | None:
    """Why a cached plan must not be used, or None when it is sound."""
    if not plan_path.exists():
        return "no cached plan"
    if sidecar is None:
        return "its sidecar is missing or unreadable"
    stale = {k: (sidecar.get("identity", {}).get(k), v) for k, v in identity.items()
             if sidecar.get("identity", {}).get(k) != v}
    if stale:
        return "it was built for something else: " + ", ".join(f"{k}: cached {a!r} vs now {b!r}" for k, (a, b) in stale.items())
    if plan_path.stat().st_size != sidecar.get("size"):
        return f"it is truncated or padded ({plan_path.stat().st_size} bytes, sidecar says {sidecar.get('size')})"
    if artifacts.sha256_file(plan_path) != sidecar.get("sha256"):
        return "its bytes do not match the sidecar's sha256 (corrupted)"
    return None


def build_plan(onnx_path: Path, spec: EngineSpec, timing_cache_path: Path | None = None) -> bytes:
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
    config.builder_optimization_level = spec.optimization_level
    batch = _batch(spec)
    for opt in batch.opts:  # one optimization profile per opt batch; the runner picks between them
        profile = builder.create_optimization_profile()
        for name, (lo, mid, hi) in spec.model.profile_shapes(opt, batch).items():
            profile.set_shape(name, lo, mid, hi)  # every dynamic axis: batch and e.g. sequence
        config.add_optimization_profile(profile)
    if timing_cache_path is not None:
        blob = timing_cache_path.read_bytes() if timing_cache_path.exists() else b""
        cache = config.create_timing_cache(blob)
        if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
            log.warning("timing cache %s is unusable; starting an empty one", timing_cache_path)
            config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineBuildError(f"TensorRT failed to build {onnx_path} ({spec}): {logger.errors()}")
    if timing_cache_path is not None:
        artifacts.atomic_write_bytes(timing_cache_path, bytes(config.get_timing_cache().serialize()))
    return bytes(plan)


def engine_for_onnx(onnx_path: str | Path, spec: EngineSpec,
                    cache_dir: str | Path = artifacts.DEFAULT_CACHE) -> Engine:
    trt = trt_compat.import_tensorrt()
    reason = cuda_rt.gpu_unavailable_reason()
    if reason:
        raise BackendUnavailable(f"TensorRT needs a GPU: {reason}")
    onnx_path = Path(onnx_path)
    identity = _identity(onnx_path, spec, trt)
    key = artifacts.config_key(identity)
    folder = Path(cache_dir) / "engines"
    plan_path = folder / f"{spec.model.name}-{spec.precision}-{key}.plan"
    sidecar_path = plan_path.with_suffix(".json")
    problem = cached_plan_problem(plan_path, artifacts.read_json(sidecar_path), identity)
    if problem is None:
        return Engine(plan_path, artifacts.read_json(sidecar_path), rebuilt=False)
    if plan_path.exists():
        log.warning("rebuilding TensorRT engine %s: %s", plan_path.name, problem)
    timing = folder / f"timing-{trt.__version__}-sm{identity['compute_capability']}.cache"
    plan = build_plan(onnx_path, spec, timing)
    artifacts.atomic_write_bytes(plan_path, plan)
    sidecar = {"identity": identity, "size": len(plan), "sha256": artifacts.sha256_file(plan_path)}
    artifacts.atomic_write_json(sidecar_path, sidecar)
    return Engine(plan_path, sidecar, rebuilt=True)
