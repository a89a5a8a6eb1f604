"""A one-line description of the machine and library versions, for reports and benchmark JSON."""
from __future__ import annotations

import os
import platform


def library_versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in ("torch", "onnxruntime", "onnx", "tensorrt", "numpy"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            versions[name] = None
    return versions


def gpu_info() -> dict:
    from model import capabilities
    from model.backends.tensorrt import cuda as cuda_rt

    if capabilities.gpu():
        return {}
    return {**cuda_rt.device_identity(), **cuda_rt.driver_and_runtime_versions()}


def copy_bandwidth() -> dict:
    """Host-to-device copy bandwidth from pinned and pageable memory, measured now (GB/s), or
    why not: {} without a GPU, {"unavailable": reason} without cuda-python."""
    from model import capabilities
    from model.backends.base import BackendUnavailable
    from model.backends.tensorrt import cuda as cuda_rt

    if capabilities.gpu():
        return {}
    try:
        return cuda_rt.copy_bandwidth_gbs()
    except BackendUnavailable as exc:
        return {"unavailable": str(exc)}


def describe() -> str:
    gpu = gpu_info()
    cpu = f"{platform.machine()} {platform.processor() or ''}".strip()
    where = f"{gpu['gpu']} (sm {gpu['compute_capability']})" if gpu else f"CPU only, {os.cpu_count()} cores"
    libs = ", ".join(f"{k} {v}" for k, v in library_versions().items() if v)
    return f"{where}; {cpu}; {libs}"
