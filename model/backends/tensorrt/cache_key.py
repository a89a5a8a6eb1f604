"""`python -m model.backends.tensorrt.cache_key [--prefix]`: the key a CI cache (actions/cache)
keeps the artifact cache folder under: trained weights, ONNX exports, engine plans and TensorRT's
timing cache.

The key changes with whatever makes those artifacts stale: the TensorRT version, the GPU (name and
compute capability), the driver, and the code and settings that make the models and the engines
(the zoo, export, quantization, training, profiles, builder settings, requirements). A key that
misses starts from the newest cache of the same TensorRT, GPU and driver (`--prefix`, the restore
key): its timing cache still applies, and every artifact in it is used only where its own content
key (model/cache.py) matches what would be built now, so a stale one is rebuilt, never used.
"""
from __future__ import annotations

import argparse
import hashlib
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
# What the cached artifacts are made by, relative to the checkout.
SOURCES = ("model/zoo", "model/spec.py", "model/export.py", "model/quantize.py", "model/training.py",
           "model/network.py", "model/data.py", "model/profile.py", "model/artifacts.py",
           "model/backends/tensorrt/build.py", "model/backends/tensorrt/compat.py",
           "requirements.txt", "requirements-gpu.txt")


def sources_digest(root: Path = ROOT, sources=SOURCES) -> str:
    digest = hashlib.sha256()
    for rel in sources:
        path = root / rel
        if not path.exists():
            raise FileNotFoundError(f"cache key source {rel} is not in {root}; expected every path of {sources}")
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(str(file.relative_to(root)).encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", str(text)).strip("-").lower()


def environment() -> dict:
    """TensorRT, GPU and driver of this machine (raises BackendUnavailable, naming what is missing)."""
    from model.backends.base import BackendUnavailable
    from model.backends.tensorrt import compat, cuda

    trt = compat.import_tensorrt()
    reason = cuda.gpu_unavailable_reason()
    if reason:
        raise BackendUnavailable(f"no cache key without a GPU: {reason}")
    return {"tensorrt": trt.__version__, **cuda.device_identity(), **cuda.driver_and_runtime_versions()}


def prefix(env: dict) -> str:
    return (f"artifacts-trt{_slug(env['tensorrt'])}-{_slug(env['gpu'])}-sm{_slug(env['compute_capability'])}"
            f"-driver{env['cuda_driver']}-")


def key(env: dict, digest: str) -> str:
    return prefix(env) + digest


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m model.backends.tensorrt.cache_key", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prefix", action="store_true", help="print the restore key (TensorRT, GPU, driver) only")
    args = ap.parse_args(argv)
    from model.backends.base import BackendUnavailable

    try:
        env = environment()
    except BackendUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(prefix(env) if args.prefix else key(env, sources_digest()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
