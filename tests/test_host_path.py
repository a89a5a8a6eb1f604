"""The TensorRT runner's host path on the CPU: its real code with the CUDA runtime and the
TensorRT context replaced by the fake GPU of tests/fake_gpu.py, which moves the data, runs a
stand-in model and fails any engine read not ordered after the upload it reads (streams and
events). What it cannot show: real CUDA/TensorRT behaviour (tests/test_tensorrt.py on a GPU)."""
import weakref

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model.backends.base import InputError
from model.backends.tensorrt import staging as host_staging
from tests import fake_gpu
from tests.fake_gpu import IMAGE, ROW_BYTES, counted, on_gpu
from tests.fake_gpu import images as _images

NO_KERNELS = {"kernels": False}  # the GPU kernels failed to load: the host checks (the fallback)


# -- planning -----------------------------------------------------------------------------------

def test_row_alignment_keeps_every_tensor_256_byte_aligned():
    assert host_staging.row_alignment([ROW_BYTES, 400]) == 16  # SimpleCNN: 12 KiB in, 100 float32 out
    assert host_staging.row_alignment([ROW_BYTES]) == 1 and host_staging.row_alignment([6, 10]) == 128
    assert all(16 * k * size % 256 == 0 for size in (ROW_BYTES, 400) for k in range(1, 5))


@pytest.mark.parametrize("batch, row_bytes, sub, min_rows, align", [
    (4096, ROW_BYTES, 12 << 20, 1, 16), (4096, ROW_BYTES, 12 << 20, 1, 1), (257, ROW_BYTES, 1 << 20, 1, 1),
    (301, ROW_BYTES, 1 << 20, 1, 1), (4001, ROW_BYTES, 12 << 20, 1, 16), (301, ROW_BYTES, 1 << 20, 20, 16),
    (5, ROW_BYTES, 1, 2, 1), (4096, 0, 12 << 20, 1, 16), (1000, ROW_BYTES, 0, 1, 16), (7, 10, 1 << 20, 1, 1),
], ids=["4096", "4096-unaligned", "257-small-units", "301-odd", "4001-aligned", "301-aligned-min-rows-20",
        "min-rows-2", "nothing-to-stage", "no-subbatches", "tiny"])
def test_plan_covers_the_batch_in_order(batch, row_bytes, sub, min_rows, align):
    plan = host_staging.plan(batch, row_bytes, subbatch_bytes=sub, min_rows=min_rows, row_align=align)
    assert plan[0].start == 0 and plan[-1].stop == batch
    assert all(a.stop == b.start for a, b in zip(plan, plan[1:]))
    assert all(sb.start % align == 0 for sb in plan)  # every sub-batch's tensors stay aligned
    rows = [sb.rows for sb in plan]
    assert len(set(rows)) <= 3 and min(rows) >= min_rows  # at most three engine shapes
    assert max(rows[:-1] or rows) - min(rows[:-1] or rows) <= align  # near-equal but for the remainder
    if sub == 0:
        assert len(plan) == 1
    elif align == 1 and min_rows == 1:
        assert len(plan) == max(1, min(batch * row_bytes // sub, batch))


def test_plan_refuses_an_empty_batch():
    with pytest.raises(ValueError, match="at least one row, received 0"):
        host_staging.plan(0, ROW_BYTES)


@pytest.mark.parametrize("batch, options", [
    (4096, {}), (300, {"subbatch_bytes": 1 << 20, "graph_max_bytes": 1 << 20}),
    (301, {"subbatch_bytes": 1 << 20, "graph_max_bytes": 1 << 20}), (256, {"subbatch_bytes": 0, "graph_max_bytes": 1 << 20}),
    (1000, {}), (4096, NO_KERNELS),
], ids=["bs4096-defaults", "bs300-3-subbatches", "bs301-odd", "bs256-one-run", "bs1000", "bs4096-host-check"])
def test_large_batch_is_uploaded_and_run_in_subbatches(fake, batch, options):
    gpu, make = fake
    runner = make(**options)
    x = _images(batch)
    out, calls = counted(gpu, lambda: runner.infer({"input": x})["output"])
    np.testing.assert_array_equal(out, fake_gpu.stand_in_model(x))
    plan = runner.plan(batch, ROW_BYTES)
    assert plan == host_staging.plan(batch, ROW_BYTES, subbatch_bytes=runner.subbatch_bytes, row_align=16)
    assert all(sb.start % 16 == 0 for sb in plan)
    assert calls["h2d"] == calls["execute"] == calls["d2h"] == len(plan)  # one upload, run, download per sub-batch
    checked = runner._gpu_checked == {"input"}
    assert checked is not bool(options.get("kernels") is False)
    # per sub-batch: its uploads landed, its outputs copied; the check stream joined once at the end
    assert calls["event_record"] == 2 * len(plan) + checked
    assert calls["stream_wait"] == (1 + checked) * len(plan)  # the engine (and the check) wait for the uploads
    assert calls["finite_kernel"] == len(plan) * checked
    assert calls["set_input_shape"] <= 3  # near-equal sub-batches: at most three shapes per call
    assert not runner.replaying


def test_results_are_a_fresh_array_per_call(fake):
    gpu, make = fake
    runner = make()
    first = runner.infer({"input": _images(2048, seed=1)})["output"]
    kept = first.copy()
    runner.infer({"input": _images(2048, seed=2)})
    np.testing.assert_array_equal(first, kept)


def test_non_contiguous_large_input_is_staged_from_its_own_layout(fake):
    gpu, make = fake
    x = _images(512)
    fed = np.asfortranarray(x)
    np.testing.assert_array_equal(make().infer({"input": fed})["output"], fake_gpu.stand_in_model(x))


def test_a_nan_in_the_last_subbatch_fails_and_the_runner_recovers(fake):
    gpu, make = fake
    runner = make()
    x = _images(4096)
    x[-1, 2, 31, 31] = np.nan
    x[-2, 0, 0, 0] = np.inf
    with pytest.raises(InputError, match=r"^Input tensor: input \| Received 2 NaN/Inf values \| Expected finite values "
                                         r"\(pass allow_nonfinite=True to the runner to send them anyway\)$"):
        runner.infer({"input": x})
    clean = _images(4096, seed=3)
    np.testing.assert_array_equal(runner.infer({"input": clean})["output"], fake_gpu.stand_in_model(clean))


def test_nonfinite_values_pass_when_allowed(fake):
    gpu, make = fake
    x = np.full((1024, *IMAGE), np.inf, np.float32)
    out = make(allow_nonfinite=True).infer({"input": x})["output"]
    assert np.isinf(out).all()


@pytest.mark.parametrize("kernels", [True, False], ids=["gpu-check", "host-check"])
def test_a_pinned_feed_is_uploaded_without_staging(fake, monkeypatch, kernels):
    gpu, make = fake
    runner = make(subbatch_bytes=1 << 20, kernels=kernels)
    staged = []
    real = host_staging.stage_rows
    monkeypatch.setattr(host_staging, "stage_rows", lambda items, a, b: staged.append([i.pinned for i in items]) or real(items, a, b))
    buffers = runner.pinned_inputs(1000)
    assert runner.pinned_inputs(1000)["input"] is buffers["input"]
    x = _images(1000)
    buffers["input"][:] = x
    out, calls = counted(gpu, lambda: runner.infer(buffers)["output"])
    np.testing.assert_array_equal(out, fake_gpu.stand_in_model(x))
    plan = runner.plan(1000, ROW_BYTES)
    assert calls["execute"] == len(plan) > 1
    assert calls["h2d"] == len(plan)
    if kernels:  # the host never touches it: each sub-batch uploaded at once and checked on the GPU
        assert staged == [] and calls["finite_kernel"] == len(plan)
    else:  # checked for NaN/Inf on the host sub-batch by sub-batch, never copied
        assert staged and all(p is None for task in staged for p in task)
        assert calls["finite_kernel"] == 0


def test_pinned_inputs_refuse_a_batch_outside_the_range(fake):
    gpu, make = fake
    with pytest.raises(InputError, match=r"Input tensor: input \| Received batch 4097 for pinned_inputs outside the supported range \[1, 4096\]"):
        make().pinned_inputs(4097)


# -- small batches and GPU feeds -----------------------------------------------------------------

def test_small_batch_replays_a_graph_from_the_second_call(fake):
    gpu, make = fake
    runner = make()
    x = _images(7)
    for call in range(3):
        out, calls = counted(gpu, lambda: runner.infer({"input": x})["output"])
        np.testing.assert_array_equal(out, fake_gpu.stand_in_model(x))
        assert calls["h2d"] == calls["execute"] == calls["d2h"] == 1
        assert runner.replaying == (call >= 1)
    runner.infer({"input": _images(4096)})  # the pipelined path moves the addresses: no stale graph
    assert not runner.replaying
    np.testing.assert_array_equal(runner.infer({"input": x})["output"], fake_gpu.stand_in_model(x))


class FakeDeviceTensor:
    """Data placed in the fake GPU's memory (`offset` bytes into an allocation), exposed as a CUDA
    producer would."""

    def __init__(self, gpu, host: np.ndarray, offset: int = 0) -> None:
        self.ptr = gpu.alloc(host.nbytes + offset) + offset
        gpu.bytes_at(self.ptr, host.nbytes)[:] = host.reshape(-1).view(np.uint8)
        self.__cuda_array_interface__ = {"shape": host.shape, "typestr": "<f4", "data": (self.ptr, False),
                                         "version": 3, "strides": None, "stream": None}


@pytest.mark.parametrize("batch", [7, 4096])
def test_gpu_feed_is_read_where_it_is(fake, batch):
    gpu, make = fake
    runner = make()
    x = _images(batch)
    out, calls = counted(gpu, lambda: runner.infer({"input": FakeDeviceTensor(gpu, x)})["output"])
    np.testing.assert_array_equal(out, fake_gpu.stand_in_model(x))
    assert calls["h2d"] == calls["d2d"] == 0 and calls["execute"] == 1 and calls["d2h"] == 1
    assert runner.context.addresses["input"] != runner.device["input"].ptr


@pytest.mark.parametrize("batch", [7, 4096])
def test_a_gpu_feed_tensorrt_cannot_address_is_copied_on_the_device_first(fake, batch):
    gpu, make = fake
    runner = make()
    x = _images(batch)
    out, calls = counted(gpu, lambda: runner.infer({"input": FakeDeviceTensor(gpu, x, offset=4)})["output"])
    np.testing.assert_array_equal(out, fake_gpu.stand_in_model(x))
    assert calls["d2d"] == 1 and calls["h2d"] == 0
    assert runner.context.addresses["input"] == runner.device["input"].ptr


@pytest.mark.parametrize("batch", [7, 4096])
def test_device_outputs_are_views_of_the_runners_buffers(fake, batch):
    gpu, make = fake
    runner = make()
    x = _images(batch)
    out, calls = counted(gpu, lambda: runner.infer({"input": x}, outputs="device")["output"])
    assert calls["d2h"] == 0
    cai = out.__cuda_array_interface__
    assert cai["shape"] == (batch, fake_gpu.CLASSES) and cai["typestr"] == "<f4" and cai["data"][0] == runner.device["output"].ptr
    np.testing.assert_array_equal(on_gpu(gpu, out), fake_gpu.stand_in_model(x))


def test_a_producer_stream_is_waited_for_on_the_device(fake):
    gpu, make = fake
    runner = make()
    tensor = FakeDeviceTensor(gpu, _images(7))
    tensor.__cuda_array_interface__["stream"] = 1
    _, calls = counted(gpu, lambda: runner.infer({"input": tensor}))
    assert calls["event_record"] == 1 and calls["stream_wait"] == 1


@pytest.mark.parametrize("batch", [22, 32, 85])
def test_the_host_check_refuses_a_nan_anywhere_in_a_graph_path_feed(fake, batch):
    gpu, make = fake
    runner = make(**NO_KERNELS)
    x = _images(batch)
    np.testing.assert_array_equal(runner.infer({"input": x})["output"], fake_gpu.stand_in_model(x))
    x[-1, 0, 0, 0] = np.nan  # in the last row
    with pytest.raises(InputError, match=r"Received 1 NaN/Inf values"):
        runner.infer({"input": x})
    x[-1, 0, 0, 0] = 0
    x[0, 0, 0, 0] = np.inf  # in the first
    with pytest.raises(InputError, match=r"Received 1 NaN/Inf values"):
        runner.infer({"input": x})


def test_a_host_feed_never_replays_the_graph_of_a_copied_gpu_feed(fake):
    """An unaligned GPU feed and a host feed both end up in the runner's buffer: only the host
    feed's graph uploads, so the two must not share one."""
    gpu, make = fake
    runner = make()
    x, y = _images(7, seed=1), _images(7, seed=2)
    for _ in range(3):
        runner.infer({"input": FakeDeviceTensor(gpu, x, offset=4)})
    np.testing.assert_array_equal(runner.infer({"input": y})["output"], fake_gpu.stand_in_model(y))


# -- the NaN/Inf check, the calling thread's staging, GPU feeds fed again ------------------------

_FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32),
                    st.sampled_from([3.4e38, -3.4e38, 1e19, -1e19, 1e30]))  # finite values that overflow x.x and sums


@settings(max_examples=200)
@given(values=st.lists(_FLOATS, max_size=300), dtype=st.sampled_from([np.float32, np.float64, np.float16]))
def test_the_host_check_answers_as_isfinite(values, dtype):
    """A NaN/Inf anywhere makes x.x and the sum non-finite; finite values that overflow them only
    send the check to its exact fallback. So its answer is np.isfinite's, always."""
    with np.errstate(over="ignore", invalid="ignore"):
        x = np.array(values, np.float64).astype(dtype)
    with np.errstate(over="ignore", invalid="ignore"):  # the overflow is the point, not a fault
        assert host_staging.all_finite(x) == bool(np.isfinite(x).all())


def test_an_overflowing_but_finite_batch_passes_and_a_single_nan_fails():
    x = np.full(4096, 3e38, np.float32)  # x.x and the sum overflow to inf: the exact check decides
    with np.errstate(over="ignore"):
        assert host_staging.all_finite(x) and host_staging.all_finite(x.astype(np.float64) ** 8)
        x[1234] = np.nan
        assert not host_staging.all_finite(x)


def test_where_the_kernels_cannot_load_the_host_checks_and_float32_is_uploaded(fake, caplog):
    import logging

    gpu, make = fake
    with caplog.at_level(logging.WARNING, logger="model.backends.tensorrt.runner"):
        runner = make(upload_half=True, **NO_KERNELS)
    assert "the GPU kernels cannot load (no driver to JIT the PTX (forced by a test)); checking on the host, uploading " \
           "float32" in caplog.text
    assert runner._finite_gpu is None and runner._gpu_checked == frozenset() and not runner.upload_half
    assert runner._host_checks("input", np.float32) and not runner._host_checks("input", np.int32)
    x = _images(4096)
    out, calls = counted(gpu, lambda: runner.infer({"input": x})["output"])
    np.testing.assert_array_equal(out, fake_gpu.stand_in_model(x))
    assert calls["finite_kernel"] == calls["widen_kernel"] == 0 and calls["h2d_bytes"] == x.nbytes
    x[2000, 1, 2, 3] = np.nan
    with pytest.raises(InputError, match=r"^Input tensor: input \| Received 1 NaN/Inf values"):
        runner.infer({"input": x})


def test_a_gpu_feed_fed_again_is_not_located_again(fake, monkeypatch):
    gpu, make = fake
    runner = make()
    located = []
    real = runner._gpu.locate
    monkeypatch.setattr(runner, "_gpu", runner._gpu.__class__(0, lambda p: located.append(p) or real(p), runner._gpu.stream))
    x = _images(7)
    tensor = FakeDeviceTensor(gpu, x)
    for _ in range(3):
        np.testing.assert_array_equal(runner.infer({"input": tensor})["output"], fake_gpu.stand_in_model(x))
    assert located == [tensor.ptr]
    other = FakeDeviceTensor(gpu, _images(7, seed=9))  # another object: checked and located afresh
    runner.infer({"input": other})
    assert located == [tensor.ptr, other.ptr]
    tensor.__cuda_array_interface__["typestr"] = "<f2"  # the same object and dict, saying something else now
    with pytest.raises(InputError, match=r"^Input tensor: input \| Received dtype float16 \| Expected float32"):
        runner.infer({"input": tensor})


def test_a_gpu_feed_is_checked_again_once_its_object_is_gone(fake):
    """The memo holds the object weakly: a new object at a reused id is not taken for the old one."""
    gpu, make = fake
    runner = make()
    tensor = FakeDeviceTensor(gpu, _images(7))
    runner.infer({"input": tensor})
    gone = weakref.ref(tensor)
    del tensor
    assert gone() is None  # the memo did not keep it alive
    host = FakeDeviceTensor(gpu, _images(7))
    host.__cuda_array_interface__ = dict(host.__cuda_array_interface__, data=(np.zeros(1).ctypes.data, False))
    with pytest.raises(InputError, match=r"Received host memory behind __cuda_array_interface__ v3"):
        runner.infer({"input": host})


def test_a_small_batch_is_checked_while_its_graph_runs_and_fails_after_it(fake):
    gpu, make = fake
    runner = make()
    x = _images(7)
    for _ in range(3):
        runner.infer({"input": x})
    assert runner.replaying
    bad = x.copy()
    bad[3, 1, 2, 3] = np.nan
    with pytest.raises(InputError, match=r"^Input tensor: input \| Received 1 NaN/Inf values"):
        counted(gpu, lambda: runner.infer({"input": bad}))
    assert runner.replaying  # the same shapes and addresses: the graph stays
    np.testing.assert_array_equal(runner.infer({"input": x})["output"], fake_gpu.stand_in_model(x))


def test_after_a_failed_call_no_feeder_writes_into_the_pinned_buffer(fake, monkeypatch):
    """A NaN in the second sub-batch fails the call; a feeder still staging later sub-batches must
    be stopped and waited for before `infer` raises."""
    import threading
    import time

    gpu, make = fake
    runner = make(subbatch_bytes=3 << 20, **NO_KERNELS)  # checked as staged
    real = host_staging.stage_rows

    def slow_feeder(items, a, b):
        if threading.current_thread() is not threading.main_thread():
            time.sleep(0.02)
        return real(items, a, b)
    monkeypatch.setattr(host_staging, "stage_rows", slow_feeder)
    x = _images(1024)
    x[300, 0, 0, 0] = np.nan  # in the second sub-batch (of four), the caller's or the feeder's
    with pytest.raises(InputError, match=r"Received 1 NaN/Inf values"):
        runner.infer({"input": x})
    pinned = runner.host["input"].array.copy()
    time.sleep(0.1)
    np.testing.assert_array_equal(runner.host["input"].array, pinned)
    clean = _images(1024, seed=6)
    np.testing.assert_array_equal(runner.infer({"input": clean})["output"], fake_gpu.stand_in_model(clean))


def test_a_latch_gives_its_nan_or_raises_its_error():
    latch = host_staging.Latch()
    assert not latch._done.is_set()
    latch.release(1)
    assert latch.wait() == 1
    clean = host_staging.Latch()
    clean.release()
    assert clean.wait() == -1
    failed = host_staging.Latch()
    failed.release(error=ValueError("the feeder's"))
    with pytest.raises(ValueError, match="the feeder's"):
        failed.wait()


# -- what a call repeats (issue 12: nothing that is once may happen per call) ------------------------

@pytest.mark.parametrize("batch, pinned", [(32, False), (256, False), (256, True), (1024, False), (4096, False), (4096, True)],
                         ids=["bs32", "bs256", "bs256-pinned", "bs1024", "bs4096", "bs4096-pinned"])
@pytest.mark.parametrize("kernels", [True, False], ids=["gpu-check", "host-check"])
def test_a_repeated_call_rebinds_resyncs_reallocates_and_recaptures_nothing(fake, monkeypatch, batch, pinned, kernels):
    """At a batch the benchmarks use, once warm, a call sets no input shape, switches no profile,
    synchronizes no whole stream but the graph path's one, makes no event, buffer or graph: what is
    left per call is the copies, checks, engine runs and event waits the path needs."""
    gpu, make = fake
    runner = make(kernels=kernels)
    x = _images(batch)
    feed = {"input": x}
    if pinned:
        feed = runner.pinned_inputs(batch)
        feed["input"][:] = x
    for _ in range(3):
        runner.infer(feed)
    once = []
    monkeypatch.setattr(runner, "_select_profile", lambda index: once.append(("profile", index)))
    monkeypatch.setattr(runner, "_capture_io_graph", lambda *a: once.append("capture"))
    monkeypatch.setattr(runner, "_make_event", lambda: once.append("event") or fake_gpu.FakeEvent(gpu))
    monkeypatch.setattr(fake_gpu.FakeDeviceBuffer, "__init__", lambda *a: once.append("device buffer"))
    monkeypatch.setattr(fake_gpu.FakePinned, "__init__", lambda *a: once.append("pinned buffer"))
    syncs = []
    for stream in (runner.stream, runner.copy_stream, runner.check_stream):
        monkeypatch.setattr(stream, "synchronize", lambda s=stream, real=stream.synchronize: syncs.append(s.name) or real())
    graph, addresses = runner._io_graph, dict(runner._addresses)
    for _ in range(2):
        out, calls = counted(gpu, lambda: runner.infer(feed)["output"])
        np.testing.assert_array_equal(out, fake_gpu.stand_in_model(x))
        assert once == [] and calls["set_input_shape"] == 0
        if batch * ROW_BYTES <= runner.graph_max_bytes:  # one graph replay, one sync for it
            assert runner._io_graph is graph is not None and syncs == ["engine stream"] and calls["set_tensor_address"] == 0
            assert runner._addresses == addresses
        else:  # per sub-batch: its uploads, one run and download, the engine's addresses moved, no stream sync
            plan = runner.plan(batch, ROW_BYTES)
            assert len({sb.rows for sb in plan}) == 1  # one shape for all sub-batches: bound once, never again
            assert calls["h2d"] == calls["execute"] == calls["d2h"] == len(plan) and syncs == []
            assert calls["finite_kernel"] == (len(plan) if kernels else 0)
            assert calls["set_tensor_address"] == (2 * len(plan) if len(plan) > 1 else 0)
        syncs.clear()


# -- sub-batches: claimed in order, each uploaded once staged -----------------------------------------

FOUR = {"subbatch_bytes": 3 << 20}  # batch 1024: 4 sub-batches of 256 rows


def _feed(runner, x, kind):
    """`x` as a feed of `kind`: pageable numpy, the runner's own pinned buffers, or a Fortran-ordered copy."""
    if kind == "pinned":
        feed = runner.pinned_inputs(len(x))
        feed["input"][:] = x
        return feed
    return {"input": np.asfortranarray(x) if kind == "fortran" else x}


@pytest.mark.parametrize("batch, options", [
    (1024, FOUR), (4096, {}), (301, {"subbatch_bytes": 1 << 20, "graph_max_bytes": 1 << 20}),
    (256, {"subbatch_bytes": 0, "graph_max_bytes": 1 << 20}), (256, {}), (32, {}),
], ids=["bs1024-4-subbatches", "bs4096-defaults", "bs301-odd", "bs256-one-run", "bs256-graph", "bs32-graph"])
@pytest.mark.parametrize("kind", ["pageable", "pinned", "fortran"])
def test_the_gpu_checked_path_gives_the_host_checked_answers(fake, batch, options, kind):
    gpu, make = fake
    host, runner = make(**options, **NO_KERNELS), make(**options)
    graph = batch * ROW_BYTES <= runner.graph_max_bytes
    for seed in (1, 2):  # a second call on the same runner too
        x = _images(batch, seed=seed)
        want = host.infer(_feed(host, x, kind))["output"]
        out, calls = counted(gpu, lambda x=x: runner.infer(_feed(runner, x, kind))["output"])
        np.testing.assert_array_equal(out, want)
        np.testing.assert_array_equal(out, fake_gpu.stand_in_model(x))
        if graph:
            assert calls["h2d"] == 1  # in the graph (the fake graph replays its copy in too)
        else:
            plan = runner.plan(batch, ROW_BYTES)
            assert calls["h2d"] == calls["execute"] == calls["d2h"] == len(plan)
            assert calls["finite_kernel"] == len(plan)
        device = runner.infer(_feed(runner, x, kind), outputs="device")["output"]
        np.testing.assert_array_equal(on_gpu(gpu, device), want)


def test_the_engine_set_passes_runner_options_to_its_runners():
    from model.backends.tensorrt.engine_set import TrtEngineSet
    from model.profile import BatchProfile

    engines = TrtEngineSet({BatchProfile(): b""}, runner_options={"subbatch_bytes": 1 << 20})
    assert engines._make(b"").subbatch_bytes == 1 << 20
    assert TrtEngineSet({BatchProfile(): b""})._make(b"").subbatch_bytes == host_staging.SUBBATCH_BYTES


@pytest.mark.parametrize("kernels", [True, False], ids=["gpu-check", "host-check"])
def test_a_late_feeder_takes_fewer_subbatches_and_each_is_uploaded_once_staged(fake, monkeypatch, kernels):
    """A feeder that wakes after the calling thread has staged the first sub-batches does not hold
    them back: the caller takes them; every sub-batch is staged once, in order per thread; each is
    uploaded by the calling thread once staged, before its run."""
    import threading
    import time

    gpu, make = fake
    runner = make(**FOUR, kernels=kernels)
    real_stage, real_feed = host_staging.stage_rows, host_staging.Staging._feed
    staged, uploads, runs = [], [], []

    def late(self):
        time.sleep(0.05)
        return real_feed(self)
    monkeypatch.setattr(host_staging.Staging, "_feed", late)
    monkeypatch.setattr(host_staging, "stage_rows", lambda items, a, b: staged.append((a, threading.current_thread())) or real_stage(items, a, b))
    buf = runner.device["input"]
    real_upload = buf.copy_from_host_async
    monkeypatch.setattr(buf, "copy_from_host_async", lambda host, stream, offset=0: uploads.append(
        (offset // ROW_BYTES, threading.current_thread(), len(runs), len(staged))) or real_upload(host, stream, offset))
    real_enqueue = runner.enqueue
    monkeypatch.setattr(runner, "enqueue", lambda: runs.append(1) or real_enqueue())
    x = _images(1024)
    np.testing.assert_array_equal(runner.infer({"input": x})["output"], fake_gpu.stand_in_model(x))
    plan = runner.plan(1024, ROW_BYTES)
    assert len(plan) == 4
    assert sorted(a for a, _ in staged) == [sb.start for sb in plan]  # each once
    assert staged[0] == (0, threading.main_thread())  # the feeder was still asleep
    for thread in {t for _, t in staged}:
        mine = [a for a, t in staged if t is thread]
        assert mine == sorted(mine)  # claimed in order
    assert [(a, t) for a, t, _, _ in uploads] == [(sb.start, threading.main_thread()) for sb in plan]
    for k, (_, _, runs_before, staged_before) in enumerate(uploads):  # after its staging, before its run
        assert runs_before == k and staged_before >= k + 1


# -- the NaN/Inf check on the GPU (the default) ------------------------------------------------------

@pytest.mark.parametrize("row", [0, 100, 512, 700, 1023], ids=["first", "first-late", "middle", "middle-late", "last"])
@pytest.mark.parametrize("kind", ["pageable", "pinned", "fortran"])
@pytest.mark.parametrize("outputs", ["host", "device"])
def test_a_nan_anywhere_is_refused_as_by_the_host_check_and_the_next_call_is_right(fake, row, kind, outputs):
    """A NaN/Inf checked on the GPU after each upload (the default) fails the call with the host
    check's error, whichever sub-batch holds it; the next call is right."""
    gpu, make = fake
    plain, runner = make(**FOUR, **NO_KERNELS), make(**FOUR)
    assert plain._gpu_checked == frozenset() and runner._gpu_checked == {"input"}
    x = _images(1024)
    x[row, 1, 2, 3] = np.nan
    x[row // 2, 0, 0, 0] = np.inf  # a second one, earlier (in the first sub-batch when `row` is): counted alike
    with pytest.raises(InputError) as expected:
        plain.infer(_feed(plain, x, kind), outputs=outputs)
    before = dict(gpu.calls)
    with pytest.raises(InputError) as refused:
        runner.infer(_feed(runner, x, kind), outputs=outputs)
    assert str(refused.value) == str(expected.value)
    assert str(refused.value).startswith("Input tensor: input | Received 2 NaN/Inf values | Expected finite values")
    # The engine ran every sub-batch (beside the checks: harmless); nothing of it came back.
    assert gpu.calls["execute"] - before["execute"] == 4
    assert gpu.calls["finite_kernel"] - before["finite_kernel"] == 4  # one per sub-batch
    clean = _images(1024, seed=4)
    out = runner.infer(_feed(runner, clean, kind), outputs=outputs)["output"]
    if outputs == "device":
        out = on_gpu(gpu, out)
    np.testing.assert_array_equal(out, fake_gpu.stand_in_model(clean))


@pytest.mark.parametrize("batch", [1, 32, 256])
@pytest.mark.parametrize("kind", ["pageable", "pinned"])
def test_the_gpu_check_is_part_of_the_graph_and_refuses_a_nan_on_a_replay(fake, batch, kind):
    gpu, make = fake
    runner = make()
    clean = _images(batch)
    for _ in range(3):  # the second call captures the graph, the third replays it
        np.testing.assert_array_equal(runner.infer(_feed(runner, clean, kind))["output"], fake_gpu.stand_in_model(clean))
    assert runner.replaying
    bad = clean.copy()
    bad[-1, 2, 0, 0] = np.nan
    before = dict(gpu.calls)
    with pytest.raises(InputError, match=r"^Input tensor: input \| Received 1 NaN/Inf values"):
        runner.infer(_feed(runner, bad, kind))
    assert gpu.calls["finite_kernel"] - before["finite_kernel"] == 1  # the fake replays what was captured
    assert runner.replaying  # the graph stays: the same shapes and places come next
    np.testing.assert_array_equal(runner.infer(_feed(runner, clean, kind))["output"], fake_gpu.stand_in_model(clean))


def test_no_check_is_queued_when_nonfinite_values_are_allowed_or_the_feed_is_on_the_gpu(fake):
    gpu, make = fake
    x = _images(1024)
    before = dict(gpu.calls)
    make(allow_nonfinite=True).infer({"input": x})
    runner = make()
    runner.infer({"input": fake_gpu.FakeGpuArray(gpu, x)})
    assert gpu.calls["finite_kernel"] == before["finite_kernel"]
