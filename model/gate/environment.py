"""Like with like: both sides of a comparison must have run on the same GPU and the same stack.

pytest-benchmark only warns when machine_info differs; a gate that compares a TensorRT 10 run with a
TensorRT 8.6 baseline measures the upgrade, not the change. The fields come from the machine_info
that benchmarks/conftest.py stores (model.machine: "gpu" and "libraries") and pytest-benchmark's
own "cpu" block.
"""
from __future__ import annotations

# (label, path into machine_info)
FIELDS = (
    ("GPU", ("gpu", "gpu")),
    ("GPU compute capability", ("gpu", "compute_capability")),
    ("CUDA driver", ("gpu", "cuda_driver")),
    ("CUDA runtime", ("gpu", "cuda_runtime")),
    ("TensorRT", ("libraries", "tensorrt")),
    ("ONNX Runtime", ("libraries", "onnxruntime")),
    ("torch", ("libraries", "torch")),
    ("numpy", ("libraries", "numpy")),
    ("Python", ("libraries", "python")),
    ("CPU", ("cpu", "brand_raw")),
)


class EnvironmentMismatch(RuntimeError):
    pass


def identity(machine_info: dict) -> dict[str, object]:
    """The fields a comparison must hold equal; a missing field reads as None."""
    out = {}
    for label, path in FIELDS:
        value = machine_info
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        out[label] = value
    return out


def differences(a: dict, b: dict) -> list[str]:
    ia, ib = identity(a), identity(b)
    return [f"{label}: {ia[label]!r} vs {ib[label]!r}" for label in ia if ia[label] != ib[label]]


def require_same(infos: dict[str, list[dict]]) -> dict[str, object]:
    """infos: side name -> machine_info of each of its processes. Raises EnvironmentMismatch naming
    every differing field (first process of the first side against each other process); returns
    the common identity."""
    (first_side, first_list), *_ = infos.items()
    reference = first_list[0]
    problems = []
    for side, items in infos.items():
        for i, info in enumerate(items):
            diff = differences(reference, info)
            if diff:
                problems.append(f"{first_side} process 1 vs {side} process {i + 1}: " + "; ".join(diff))
    if problems:
        raise EnvironmentMismatch("the two sides did not run on the same machine and stack, so their timings "
                                  "cannot be compared:\n  " + "\n  ".join(problems))
    return identity(reference)
