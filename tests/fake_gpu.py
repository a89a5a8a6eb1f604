"""The fake GPU of tools/trt-host-path-cost.py for the host-path tests: it moves the data, runs a
stand-in model and fails any engine read not ordered after the upload it reads."""
import importlib.util
from pathlib import Path

import numpy as np

_spec = importlib.util.spec_from_file_location("trt_host_path_cost", Path(__file__).parent.parent / "tools" / "trt-host-path-cost.py")
tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tool)

IMAGE = (3, 32, 32)
ROW_BYTES = 3 * 32 * 32 * 4


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *IMAGE)).astype(np.float32)


def counted(gpu, fn):
    """fn's result and the fake GPU's calls it made, per kind."""
    before = dict(gpu.calls)
    out = fn()
    return out, {k: gpu.calls[k] - before[k] for k in gpu.calls}


def on_gpu(gpu, view) -> np.ndarray:
    """What a float32 device output (a view the runner returned) holds in the fake GPU's memory."""
    cai = view.__cuda_array_interface__
    return gpu.bytes_at(cai["data"][0], view.nbytes).view(np.float32).reshape(cai["shape"])


def same_refusal(plain, runner, feed: dict) -> str:
    """The InputError both runners raise for `feed`, asserted to be the same; its message."""
    import pytest

    from model.backends.base import InputError

    with pytest.raises(InputError) as expected:
        plain.infer(feed)
    with pytest.raises(InputError) as refused:
        runner.infer(feed)
    assert str(refused.value) == str(expected.value)
    return str(refused.value)
