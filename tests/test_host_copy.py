"""How the runner copies host inputs into pinned memory (model/backends/tensorrt/host_copy.py), on
the CPU: torch's parallel copy gives np.copyto's bytes for every layout and dtype a feed can have,
and the TensorRT runner (on the fake GPU of tests/fake_gpu.py) stages the first sub-batch on the
calling thread, the later ones on one feeder thread, and fails and recovers as in one copy."""
import threading
import time
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model.backends.tensorrt import host_copy
from model.backends.tensorrt import staging as host_staging
from tests import fake_gpu
from tests.fake_gpu import ROW_BYTES, same_refusal
from tests.fake_gpu import images as _images


class _Recording(host_copy.TorchCopy):
    """TorchCopy from any size (MIN_BYTES 0), counting the copies torch made."""

    def __init__(self) -> None:
        super().__init__()
        self.torch_copies, self._dst = 0, None
        real = self._from_numpy

        def from_numpy(a):
            t = real(a)
            if a is not self._dst:
                self.torch_copies += 1  # the source was taken: torch copies it
            return t
        self._from_numpy = from_numpy

    def __call__(self, dst, src):
        self._dst = dst
        with mock.patch.object(host_copy, "MIN_BYTES", 0):
            super().__call__(dst, src)


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 200), dtype=st.sampled_from(["<f4", "<f2", ">f4", "<i8", "<i4", "|b1", "<u2"]),
       layout=st.sampled_from(["c", "fortran", "reversed", "strided", "read-only"]))
def test_torch_copy_writes_what_np_copyto_writes(rows, dtype, layout):
    """Torch copies every source it can take (native byte order, writable, no negative strides)
    and numpy the others; the bytes are np.copyto's either way."""
    copy = _Recording()
    base = np.random.default_rng(rows).integers(-1000, 1000, (rows * 2, 700)).astype(dtype)
    src = {"c": base[:rows], "fortran": np.asfortranarray(base[:rows]), "reversed": base[:rows][::-1],
           "strided": base[::2], "read-only": base[:rows].copy()}[layout]
    if layout == "read-only":
        src.flags.writeable = False
    want, got = np.empty(src.shape, src.dtype), np.empty(src.shape, src.dtype)
    np.copyto(want, src)
    copy(got, src)
    assert got.tobytes() == want.tobytes()
    torch_takes = dtype != ">f4" and layout in ("c", "fortran", "strided")
    assert copy.torch_copies == int(torch_takes)


def test_torch_copy_narrows_int64_ids_as_numpy_does():
    ids = np.arange(-70_000, 70_000, dtype=np.int64).reshape(200, 700) * 40_000  # past int32 as well
    want, got = np.empty(ids.shape, np.int32), np.empty(ids.shape, np.int32)
    np.copyto(want, ids, casting="unsafe")
    copy = _Recording()
    copy(got, ids)
    np.testing.assert_array_equal(got, want)
    assert copy.torch_copies == 1


def test_under_min_bytes_numpy_copies():
    copy = _Recording()
    x = np.ones((4, 700), np.float32)
    with mock.patch.object(host_copy, "MIN_BYTES", x.nbytes + 1):
        host_copy.TorchCopy.__call__(copy, np.empty_like(x), x)
    assert copy.torch_copies == 0


def test_each_subbatch_is_one_copy_the_first_by_the_caller_the_rest_by_one_feeder(fake, monkeypatch):
    """The feeder thread starts only after the calling thread's first copy (which had the host to
    itself); every sub-batch is staged once, in one piece, and uploaded once staged."""
    gpu, make = fake
    runner = make()
    real_stage, real_launch = host_staging.stage_rows, host_staging.Staging._launch
    staged, launched = [], []
    monkeypatch.setattr(host_staging, "stage_rows", lambda items, a, b: staged.append(
        (a, b, threading.current_thread() is threading.main_thread(), len(launched))) or real_stage(items, a, b))
    monkeypatch.setattr(host_staging.Staging, "_launch", lambda self: launched.append(len(staged)) or real_launch(self))
    x = _images(4096)
    np.testing.assert_array_equal(runner.infer({"input": x})["output"], fake_gpu.stand_in_model(x))
    plan = runner.plan(4096, ROW_BYTES)
    assert len(plan) == 4
    assert sorted((a, b) for a, b, _, _ in staged) == [(sb.start, sb.stop) for sb in plan]
    assert staged[0][:4] == (0, plan[0].stop, True, 0)  # the caller's, before any feeder was started
    assert launched == [1]  # once, after that first copy
    feeder = [a for a, _, caller, _ in staged if not caller]
    assert feeder == sorted(feeder)


@pytest.mark.parametrize("kernels", [True, False], ids=["gpu-check", "host-check"])
@pytest.mark.parametrize("row", [0, 2000, 4095], ids=["first", "middle", "last"])
def test_a_nan_is_refused_as_in_one_copy_and_nothing_is_written_after(fake, kernels, row):
    """Refused with the message of the whole batch staged at once (the graph path's way), and no
    feeder writes into the pinned buffer once the call has failed."""
    gpu, make = fake
    plain, runner = make(kernels=kernels, graph_max_bytes=64 << 20), make(kernels=kernels)
    x = _images(4096)
    x[row, 0, 1, 2] = np.nan
    same_refusal(plain, runner, {"input": x})
    pinned = runner.host["input"].array.copy()
    time.sleep(0.05)  # a feeder still copying would change it now
    np.testing.assert_array_equal(runner.host["input"].array, pinned)
    clean = _images(4096, seed=3)
    np.testing.assert_array_equal(runner.infer({"input": clean})["output"], fake_gpu.stand_in_model(clean))


def test_a_feeders_error_is_raised_at_its_subbatch_and_the_next_call_is_right(fake, monkeypatch):
    gpu, make = fake
    runner = make()
    real = host_staging.stage_rows

    def failing_feeder(items, a, b):
        if threading.current_thread() is not threading.main_thread():
            raise MemoryError("the feeder could not stage its sub-batch")
        return real(items, a, b)
    monkeypatch.setattr(host_staging, "stage_rows", failing_feeder)
    real_enqueue = runner.enqueue
    monkeypatch.setattr(runner, "enqueue", lambda: time.sleep(0.05) or real_enqueue())  # the feeder claims meanwhile
    with pytest.raises(MemoryError, match="the feeder could not stage its sub-batch"):
        runner.infer({"input": _images(4096)})
    monkeypatch.setattr(runner, "enqueue", real_enqueue)
    monkeypatch.setattr(host_staging, "stage_rows", real)
    clean = _images(4096, seed=5)
    np.testing.assert_array_equal(runner.infer({"input": clean})["output"], fake_gpu.stand_in_model(clean))
