"""Half-precision uploads (`upload_half`, model/backends/tensorrt/runner.py) on the CPU, through
the fake GPU of tests/fake_gpu.py: a float32 batch crosses in float16 (half the bytes) and is
widened back before the engine reads it, so the engine sees exactly the input rounded to float16;
small batches and the runner's own pinned buffers go as float32; a NaN is refused as with float32
uploads, and a value float16 cannot hold gets its float32 answer and turns half uploads off."""
import logging
import re

import numpy as np
import pytest

from model.backends.base import InputError
from model.backends.tensorrt import host_copy
from model.backends.tensorrt.runner import TrtRunner
from tests import fake_gpu
from tests.fake_gpu import ROW_BYTES, counted, on_gpu, same_refusal
from tests.fake_gpu import images as _images

HALF = {"upload_half": True}
# (batch, runner options): the pipelined path in four sub-batches, an odd batch pipelined in 1 MiB
# sub-batches, and the graph path (staged, captured, replayed).
PATHS = {"4096-pipelined": (4096, {}), "301-pipelined": (301, {"graph_max_bytes": 1 << 20, "subbatch_bytes": 1 << 20}),
         "256-graph": (256, {})}


def _rounded(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float16).astype(np.float32)


@pytest.mark.parametrize("path", PATHS, ids=list(PATHS))
def test_half_uploads_carry_half_the_bytes_and_the_engine_reads_the_rounded_input(fake, path):
    gpu, make = fake
    batch, options = PATHS[path]
    runner = make(**HALF, **options)
    x = _images(batch)
    for _ in range(3):
        out, calls = counted(gpu, lambda: runner.infer({"input": x})["output"])
        np.testing.assert_array_equal(out, fake_gpu.stand_in_model(_rounded(x)))
        assert calls["h2d_bytes"] == x.nbytes // 2
        engine_runs = calls["execute"]
        assert engine_runs >= 1 and calls["widen_kernel"] == engine_runs  # one widening before each engine run
        assert calls["finite_kernel"] == 0  # the widening is the check
    if batch == 4096:
        assert engine_runs == len(runner.plan(batch, ROW_BYTES)) == 4
    device = runner.infer({"input": x}, outputs="device")["output"]  # outputs left on the GPU: the same
    np.testing.assert_array_equal(on_gpu(gpu, device), fake_gpu.stand_in_model(_rounded(x)))
    assert runner.upload_half and runner.half_inputs({"input": x}) == {"input"}


def test_small_batches_and_the_runners_own_pinned_buffers_go_as_float32(fake):
    gpu, make = fake
    runner = make(**HALF)
    small = _images(int(host_copy.MIN_BYTES // ROW_BYTES))  # just under the cut
    assert small.nbytes < host_copy.MIN_BYTES
    out, calls = counted(gpu, lambda: runner.infer({"input": small})["output"])
    np.testing.assert_array_equal(out, fake_gpu.stand_in_model(small))
    assert calls["widen_kernel"] == 0 and calls["h2d_bytes"] == small.nbytes
    x = _images(4096, seed=1)
    pinned = runner.pinned_inputs(4096)
    pinned["input"][:] = x
    out, calls = counted(gpu, lambda: runner.infer(pinned)["output"])
    np.testing.assert_array_equal(out, fake_gpu.stand_in_model(x))
    assert calls["widen_kernel"] == 0 and calls["h2d_bytes"] == x.nbytes
    read_only = x.copy()
    read_only.flags.writeable = False  # torch would not take it: numpy's float16 conversion is too slow to pay
    assert runner.half_inputs({"input": read_only}) == frozenset()


@pytest.mark.parametrize("path", PATHS, ids=list(PATHS))
def test_a_nan_is_refused_as_with_float32_uploads_and_half_uploads_stay_on(fake, path):
    gpu, make = fake
    batch, options = PATHS[path]
    plain, runner = make(**options), make(**HALF, **options)
    for row in (0, batch - 1):
        x = _images(batch)
        x[row, 2, 31, 31] = np.nan
        message = same_refusal(plain, runner, {"input": x})
        assert message.startswith("Input tensor: input | Received 1 NaN/Inf values")
        with pytest.raises(InputError, match=re.escape(message)):
            runner.infer({"input": x}, outputs="device")
    assert runner.upload_half
    clean = _images(batch, seed=4)
    out, calls = counted(gpu, lambda: runner.infer({"input": clean})["output"])
    np.testing.assert_array_equal(out, fake_gpu.stand_in_model(_rounded(clean)))
    assert calls["widen_kernel"] >= 1


@pytest.mark.parametrize("path", PATHS, ids=list(PATHS))
def test_a_value_beyond_float16s_range_gets_its_float32_answer_and_turns_half_uploads_off(fake, caplog, path):
    gpu, make = fake
    batch, options = PATHS[path]
    runner = make(**HALF, **options)
    x = _images(batch)
    x[batch // 2, 0, 0, 0] = 1e5  # finite in float32, Inf in float16 (max 65504)
    with caplog.at_level(logging.WARNING, logger="model.backends.tensorrt.runner"):
        out = runner.infer({"input": x})["output"]
    np.testing.assert_array_equal(out, fake_gpu.stand_in_model(x))
    assert out[batch // 2, 0] == 2e5 + 1
    assert "holds values float16 cannot hold (or NaN/Inf); uploading float32 from now on" in caplog.text
    assert not runner.upload_half
    clean = _images(batch, seed=6)
    out, calls = counted(gpu, lambda: runner.infer({"input": clean})["output"])
    np.testing.assert_array_equal(out, fake_gpu.stand_in_model(clean))
    assert calls["widen_kernel"] == 0 and calls["h2d_bytes"] == clean.nbytes

@pytest.mark.parametrize("value, falls_back", [(65504.0, False), (65519.99, False), (-65519.99, False), (65520.0, True),
                                               (-65520.0, True), (1e30, True), (1e-9, False)])
def test_float16s_rounding_decides_at_its_edge(fake, value, falls_back):
    """A value that rounds to a finite float16 (up to 65519.99..., which rounds to 65504; 1e-9 to
    0) is sent rounded; one that rounds to Inf (65520 and beyond) gets its float32 answer."""
    _, make = fake
    runner = make(**HALF)
    x = _images(256)
    x[100, 0, 0, 3] = value
    out = runner.infer({"input": x})["output"]
    want = x if falls_back else _rounded(x)
    np.testing.assert_array_equal(out, fake_gpu.stand_in_model(want))
    assert runner.upload_half is not falls_back


def test_allowed_nonfinite_values_pass_as_with_float32_uploads(fake):
    _, make = fake
    runner = make(**HALF, allow_nonfinite=True)
    assert runner._gpu_checked == frozenset()  # nothing to check; the kernels load for the widening alone
    x = _images(4096)
    x[7, 0, 0, 1], x[4000, 0, 0, 2] = np.nan, -np.inf
    out = runner.infer({"input": x})["output"]
    np.testing.assert_array_equal(out, fake_gpu.stand_in_model(x))  # NaN where the stand-in reads one
    assert np.isnan(out[7, 1]) and out[4000, 2] == -np.inf


@pytest.mark.parametrize("label, options, expected", [
    ("fp16", {}, True), ("fp16-typed", {}, True), ("fp32", {}, False), ("int8", {}, False),
    ("fp32", HALF, True), ("fp16", {"upload_half": False}, False)])
def test_half_uploads_default_to_fp16_engines(label, options, expected):
    """An FP16 engine rounds its input to float16 anyway; INT8 engines quantize from float32 and
    keep it."""
    assert TrtRunner(b"", label=label, **options).upload_half is expected
