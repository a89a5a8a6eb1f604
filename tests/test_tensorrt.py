"""TensorRT-specific behaviour, for every model: profile bounds over every dynamic axis, shape
binding, graph replay, and the engine cache."""
import json
import logging
import re
import shutil

import numpy as np
import pytest

from model import cache
from model.backends.base import InputError
from model.backends.tensorrt.build import EngineSpec, engine_for_onnx
from model.compare import compare_outputs
from model.profile import nearest_opt, serving_profile

pytestmark = pytest.mark.needs_trt


@pytest.fixture(scope="module")
def trt(model_artifacts, runner_test_engine):
    """A runner on one engine holding every opt batch's profile (the backends run one engine per
    opt batch instead: see the engine-set tests below)."""
    from model.backends.tensorrt.runner import TrtRunner

    with TrtRunner(runner_test_engine.plan(), label="fp32",
                   declared=model_artifacts.spec.input_metadata()) as runner:
        yield runner


def _extreme_shapes(spec, batch: int, which: str) -> dict:
    return spec.shapes(batch, **{a.name: getattr(a, which) for a in spec.axes})


def test_metadata_declares_the_profile_on_every_axis(trt, model_spec, profile):
    declared = model_spec.input_metadata()
    for name, meta in trt.input_metadata().items():
        assert (meta.shape, meta.dtype) == (declared[name].shape, declared[name].dtype), name
        assert meta.ranges == declared[name].ranges, name
    assert all((m.min_batch, m.max_batch) == (profile.min, profile.max) for m in trt.input_metadata().values())


def _ok(ref, out, spec):
    return compare_outputs(ref, out, "fp32", spec)


@pytest.mark.parametrize("end", ["min", "max"], ids=["profile_min", "profile_max"])
def test_profile_extremes(trt, golden, profile, model_spec, end):
    feed, ref = golden[getattr(profile, end)]
    assert _ok(ref, trt.infer(feed), model_spec)


def test_each_batch_runs_on_the_profile_tuned_nearest_it(trt, golden, profile, model_spec):
    assert trt.engine.num_optimization_profiles == len(profile.opts)
    assert sorted(trt.profile_opts) == sorted(profile.opts)
    for batch in (32, profile.max, 7, profile.max):  # switching away and back
        feed, ref = golden[batch]
        assert _ok(ref, trt.infer(feed), model_spec)
        assert trt.profile_opts[trt.active_profile] == profile.opts[nearest_opt(batch, list(profile.opts))]


def test_engine_set_serves_each_batch_from_its_own_engine(runner_pool, golden, profile, model_spec):
    engines = runner_pool("tensorrt-fp32")
    profiles = profile.engine_profiles()
    assert list(engines.runners) == profiles
    assert all(r.engine.num_optimization_profiles == 1 for r in engines.runners.values())
    for p, runner in engines.runners.items():  # each engine was built for its own range, every axis
        lo, hi = _extreme_shapes(model_spec, p.min, "min"), _extreme_shapes(model_spec, p.max, "max")
        assert runner.shape_range == {n: (lo[n], hi[n]) for n in model_spec.input_names}
    for batch in sorted({n for n in (32, profile.max, 7, *profile.static) if n in golden}):
        feed, ref = golden[batch]
        assert _ok(ref, engines.infer(feed), model_spec)
        assert engines.runner_for(batch) is engines.runners[profiles[serving_profile(batch, profiles)]]


def test_engine_set_declares_the_whole_range(runner_pool, profile, model_spec):
    metas = runner_pool("tensorrt-fp32").input_metadata()
    assert {n: m.ranges for n, m in metas.items()} == {n: m.ranges for n, m in model_spec.input_metadata().items()}


def _past_max(spec, profile) -> dict:
    return _extreme_shapes(spec, profile.max + 1, "max")


def test_tensorrt_itself_rejects_a_shape_past_the_profile(trt, profile, model_spec):
    name = model_spec.input_names[0]
    lo, hi = _extreme_shapes(model_spec, profile.min, "min")[name], _extreme_shapes(model_spec, profile.max, "max")[name]
    with pytest.raises(InputError, match=rf"Input tensor: {name} \| TensorRT rejected shape .*profile's min "
                                         rf"{re.escape(str(lo))} and max {re.escape(str(hi))}"):
        trt.bind(_past_max(model_spec, profile))


def test_runner_recovers_after_a_rejected_shape(trt, golden, profile, model_spec):
    with pytest.raises(InputError):
        trt.bind(_past_max(model_spec, profile))
    feed, ref = golden[7]
    assert _ok(ref, trt.infer(feed), model_spec)


def test_input_shape_is_set_only_when_it_changes(trt, golden):
    class Counting:
        def __init__(self, context):
            self._context, self.calls = context, 0

        def set_input_shape(self, *args):
            self.calls += 1
            return self._context.set_input_shape(*args)

        def __getattr__(self, name):
            return getattr(self._context, name)

    trt.bind({n: v.shape for n, v in golden[7][0].items()})  # start from a known state: bound to 7
    real = trt.context
    trt.context = counting = Counting(real)
    try:
        for n in (7, 7, 7, 32, 32, 7):
            trt.infer(golden[n][0])
    finally:
        trt.context = real
    assert counting.calls == 2 * len(golden[7][0])  # each input for 32, then for 7 again: never for a repeat


def test_cuda_graph_replay_gives_the_same_outputs(trt, golden, model_spec):
    feed, ref = golden[32]
    trt.upload(feed)
    graph = trt.capture_graph()
    for _ in range(3):
        graph.launch()
    out = trt.download()
    trt.release_graph()
    assert _ok(ref, out, model_spec)


def test_repeated_shape_is_replayed_from_a_graph_with_the_same_answers(trt, golden, model_spec):
    feed, ref = golden[7]
    outs = [trt.infer(feed) for _ in range(4)]
    assert trt.replaying
    assert all(_ok(ref, out, model_spec) for out in outs)
    assert all(np.array_equal(outs[0][n], outs[-1][n]) for n in ref)
    feed32, ref32 = golden[32]
    out32 = trt.infer(feed32)  # a new shape drops the graph
    assert not trt.replaying and _ok(ref32, out32, model_spec)


def test_graphs_can_be_turned_off(runner_test_engine, golden, model_spec):
    from model.backends.tensorrt.runner import TrtRunner

    feed, ref = golden[7]
    with TrtRunner(runner_test_engine.plan(), graphs=False, declared=model_spec.input_metadata()) as runner:
        outs = [runner.infer(feed) for _ in range(3)]
        assert not runner.replaying
    assert all(_ok(ref, out, model_spec) for out in outs)


# -- the engine cache --------------------------------------------------------------------------

def test_second_request_reuses_the_cached_plan(model_artifacts):
    profile, first = next(iter(model_artifacts.engine_set("fp32").items()))  # a deployed plan
    again = engine_for_onnx(model_artifacts.onnx, EngineSpec(model_artifacts.spec, profile=profile,
                                                             workspace=model_artifacts.workspace), model_artifacts.cache_dir)
    assert again.path == first.path and not again.rebuilt


def _damage(plan_path, sidecar_path, how):
    blob = plan_path.read_bytes()
    if how == "truncated":
        plan_path.write_bytes(blob[: len(blob) // 2])
    elif how == "corrupted":  # same size: only the hash can tell
        middle = len(blob) // 2
        plan_path.write_bytes(blob[:middle] + bytes(4096) + blob[middle + 4096:])
    elif how in ("other_tensorrt", "other_gpu"):  # a sound record of a plan built elsewhere
        sidecar = json.loads(sidecar_path.read_text())
        key = "tensorrt" if how == "other_tensorrt" else "gpu"
        sidecar["key"][key] = "7.2.3" if key == "tensorrt" else "Tesla K80"
        sidecar_path.write_text(json.dumps(cache.seal(sidecar)))
    elif how == "junk_sidecar":
        sidecar_path.write_text("[]")
    elif how == "no_sidecar":
        sidecar_path.unlink()


@pytest.fixture(scope="module")
def quick_engine(model_artifacts, tmp_path_factory):
    """A plan built at builder optimization level 0 (seconds, not minutes) in a cache of its own: what
    these tests exercise is the cache's refusal of a bad plan, not the deployed engine's tactics."""
    folder = tmp_path_factory.mktemp("engine-cache")
    return engine_for_onnx(model_artifacts.onnx, EngineSpec(model_artifacts.spec, optimization_level=0), folder)


@pytest.mark.parametrize("how", ["truncated", "corrupted", "other_tensorrt", "other_gpu", "junk_sidecar", "no_sidecar"])
def test_bad_cached_plan_is_rebuilt_never_used(model_artifacts, quick_engine, golden, tmp_path, caplog, how):
    from model.backends.tensorrt.runner import TrtRunner

    good = quick_engine
    engines = tmp_path / "engines"
    shutil.copytree(good.path.parent, engines)  # the plan, its sidecar and the timing cache
    plan_path = engines / good.path.name
    _damage(plan_path, cache.sidecar_path(plan_path), how)
    with caplog.at_level(logging.WARNING):
        engine = engine_for_onnx(model_artifacts.onnx, EngineSpec(model_artifacts.spec, optimization_level=0), tmp_path)
    assert engine.rebuilt and engine.path == plan_path
    assert f"not using cached {plan_path}" in caplog.text
    feed, ref = golden[7]
    with TrtRunner(engine.plan(), declared=model_artifacts.spec.input_metadata()) as runner:
        assert _ok(ref, runner.infer(feed), model_artifacts.spec)


def test_engine_key_separates_precisions(model_artifacts):
    fp32, fp16 = model_artifacts.engine_set("fp32"), model_artifacts.engine_set("fp16")
    assert not {e.path for e in fp32.values()} & {e.path for e in fp16.values()}
    assert all(e.sidecar["key"]["precision"] == "fp32" for e in fp32.values())
    assert all(e.sidecar["key"]["precision"] == "fp16" for e in fp16.values())


def test_damaged_timing_cache_is_not_fed_to_the_builder(model_artifacts, quick_engine, tmp_path, caplog):
    good = quick_engine
    engines = tmp_path / "engines"
    shutil.copytree(good.path.parent, engines)
    (timing,) = engines.glob("timing-*.cache")
    blob = timing.read_bytes()
    timing.write_bytes(blob[: len(blob) // 2] + bytes(64) + blob[len(blob) // 2 + 64:])  # same size
    cache.sidecar_path(engines / good.path.name).unlink()  # so the plan is built, reading the timing cache
    with caplog.at_level(logging.WARNING):
        engine = engine_for_onnx(model_artifacts.onnx, EngineSpec(model_artifacts.spec, optimization_level=0), tmp_path)
    assert engine.rebuilt and f"not using cached {timing}" in caplog.text
    rewritten = json.loads(cache.sidecar_path(timing).read_text())
    assert cache.problem(timing, rewritten["key"]) == (None, rewritten)  # the refined one is whole


# -- the host path and zero-copy feeds (model/backends/tensorrt/staging.py, model/backends/device_arrays.py) ---------

@pytest.fixture(scope="module")
def trt_fp32_set(runner_pool):
    return runner_pool("tensorrt-fp32")


def _narrowed(runner, batch: int) -> list[str]:
    engine = runner.runner_for(batch)
    return [n for n in engine.inputs if engine.narrowed(n)]


@pytest.mark.parametrize("end", ["probe", "max"], ids=["bs7-graph-path", "max-pipelined"])
def test_gpu_feed_gives_the_same_answers(trt_fp32_set, golden, profile, model_spec, end):
    from model.backends.tensorrt import cuda as cuda_rt

    feed, ref = golden[7 if end == "probe" else profile.max]
    batch = next(iter(feed.values())).shape[0]
    tensors = {n: cuda_rt.DeviceArray.from_host(x) for n, x in feed.items()}
    try:
        narrowed = _narrowed(trt_fp32_set, batch)
        if narrowed:  # int64 ids that TensorRT runs as int32: refused on the GPU, by name
            with pytest.raises(InputError, match=rf"Input tensor: {narrowed[0]} \| Received int64 on the GPU"):
                trt_fp32_set.infer(tensors)
            return
        for _ in range(3):  # the second call at a shape captures a graph: replays must agree
            assert _ok(ref, trt_fp32_set.infer(tensors), model_spec)
        device_out = trt_fp32_set.infer(tensors, outputs="device")
        assert _ok(ref, {n: cuda_rt.to_host(v) for n, v in device_out.items()}, model_spec)
    finally:
        for t in tensors.values():
            t.free()


@pytest.mark.parametrize("wanted", [7, 300, None], ids=["bs7", "bs300", "max"])
def test_pinned_feed_and_device_outputs_give_the_same_answers(trt_fp32_set, golden, profile, model_spec, wanted):
    from model.backends.tensorrt import cuda as cuda_rt

    batch = min(wanted or profile.max, profile.max)
    full, full_ref = golden[profile.max]
    feed, ref = golden.get(batch) or ({n: v[:batch] for n, v in full.items()}, {n: v[:batch] for n, v in full_ref.items()})
    if any(d is None for m in trt_fp32_set.input_metadata().values() for d in m.shape[1:]) or _narrowed(trt_fp32_set, batch):
        with pytest.raises(InputError, match="pinned_inputs needs every dim but the batch fixed"):
            trt_fp32_set.pinned_inputs(batch)
    else:
        buffers = trt_fp32_set.pinned_inputs(batch)
        for n, x in feed.items():
            buffers[n][:] = x
        assert _ok(ref, trt_fp32_set.infer(buffers), model_spec)
    device_out = trt_fp32_set.infer(feed, outputs="device")
    assert _ok(ref, {n: cuda_rt.to_host(v) for n, v in device_out.items()}, model_spec)


def test_subbatches_do_not_change_the_answers(runner_test_engine, golden, profile, model_spec):
    """Small sub-batches force many engine runs (two engine shapes per call) at the profile's max."""
    from model.backends.tensorrt.runner import TrtRunner

    feed, ref = golden[profile.max]
    cut = max(profile.min, profile.max - 95)
    with TrtRunner(runner_test_engine.plan(), declared=model_spec.input_metadata(),
                   subbatch_bytes=3 << 20) as runner:
        assert _ok(ref, runner.infer(feed), model_spec)
        assert _ok({n: v[:cut] for n, v in ref.items()}, runner.infer({n: v[:cut] for n, v in feed.items()}), model_spec)


@pytest.mark.parametrize("kernels", [False, True], ids=["host-check-fallback", "gpu-check"])
def test_the_host_check_fallback_gives_the_same_answers_and_refuses_the_same_nan(
        runner_test_engine, golden, profile, model_spec, kernels, monkeypatch):
    """Where the NaN/Inf kernels cannot load (forced here), the host checks each input as it is
    staged: pageable and own pinned feeds at the profile's max, in sub-batches, and a cut of them
    on the graph path agree with the reference, on host and device outputs; a NaN in the first or
    last row is refused as by the GPU check, and the next call is right."""
    from model.backends.tensorrt import cuda as cuda_rt
    from model.backends.tensorrt import finite_gpu
    from model.backends.tensorrt.runner import TrtRunner
    from tests.fake_gpu import KernelsMissing

    if not kernels:
        monkeypatch.setattr(finite_gpu, "GpuFiniteCheck", KernelsMissing)
    feed, ref = golden[profile.max]
    batch = next(iter(feed.values())).shape[0]
    with TrtRunner(runner_test_engine.plan(), declared=model_spec.input_metadata(),
                   subbatch_bytes=3 << 20) as runner:
        floats = any(finite_gpu.supports(runner.dtypes[n]) for n in runner.inputs)
        assert (runner._finite_gpu is not None) is (kernels and floats)  # int-only models load no kernel
        assert _ok(ref, runner.infer(feed), model_spec)
        cut = max(profile.min, min(batch, 256))
        for _ in range(3):  # the graph path: staged, captured, replayed
            assert _ok({n: v[:cut] for n, v in ref.items()}, runner.infer({n: v[:cut] for n, v in feed.items()}), model_spec)
        device_out = runner.infer(feed, outputs="device")
        assert _ok(ref, {n: cuda_rt.to_host(v) for n, v in device_out.items()}, model_spec)
        meta = runner.input_metadata()
        if not any(d is None for m in meta.values() for d in m.shape[1:]) and not any(runner.narrowed(n) for n in meta):
            buffers = runner.pinned_inputs(batch)
            for n, x in feed.items():
                buffers[n][:] = x
            assert _ok(ref, runner.infer(buffers), model_spec)
        name = next((t.name for t in model_spec.inputs if np.dtype(t.dtype).kind == "f"), None)
        if name is None:
            return
        for row in (0, -1):
            bad = {**feed, name: feed[name].copy()}
            bad[name].reshape(len(bad[name]), -1)[row, 0] = np.nan
            with pytest.raises(InputError, match=rf"^Input tensor: {name} \| Received 1 NaN/Inf values"):
                runner.infer(bad)
            assert _ok(ref, runner.infer(feed), model_spec)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_the_nan_kernels_flag_exactly_the_nonfinite_values(dtype):
    """finite_gpu's PTX, loaded and run by the driver: NaN, +Inf and -Inf flagged wherever they sit
    in the range checked; the largest finite values, subnormals and -0 not; values past `count`
    never read."""
    from model.backends.tensorrt import cuda as cuda_rt
    from model.backends.tensorrt import finite_gpu

    dt = np.dtype(dtype)
    edge = np.array([np.finfo(dt).max, -np.finfo(dt).max, np.finfo(dt).tiny / 4, -0.0, 1.0], dt)
    stream = cuda_rt.Stream()
    check = finite_gpu.GpuFiniteCheck(["a", "b"])
    try:
        n = 300_001  # more than one grid's worth of threads, odd
        for where in (0, 1, 12_345, n - 1):
            for bad in (np.nan, np.inf, -np.inf):
                x = np.resize(edge, n + 7)
                x[where] = bad
                x[n:] = np.nan  # past the count: must not be read
                device = cuda_rt.DeviceArray.from_host(x)
                try:
                    check.enqueue("b", device.buffer.ptr, n, dt, stream)
                    stream.synchronize()
                    assert check.flagged() == "b", (where, bad)
                    assert check.flagged() is None  # cleared once read
                finally:
                    device.free()
        clean = cuda_rt.DeviceArray.from_host(np.resize(edge, n))
        try:
            check.enqueue("a", clean.buffer.ptr, n, dt, stream)
            stream.synchronize()
            assert check.flagged() is None
        finally:
            clean.free()
    finally:
        check.free()
        stream.free()


def test_the_default_runner_checks_on_the_gpu_on_both_paths(runner_test_engine, golden, profile, model_spec):
    """The kernels load on this GPU (no fallback to the host check); a NaN is refused on the graph
    path (also on a replay) and the pipelined path, from pageable and own pinned feeds, and the
    next call is right."""
    from model.backends.tensorrt.runner import TrtRunner

    name = _float_input(model_spec)
    with TrtRunner(runner_test_engine.plan(), declared=model_spec.input_metadata()) as runner:
        assert name in runner._gpu_checked
        small = min(b for b in golden if b >= profile.min)
        for batch in sorted({small, profile.max}):
            feed, ref = golden[batch]
            for _ in range(3):  # on the graph path: plain, captured, replayed
                assert _ok(ref, runner.infer(feed), model_spec)
            bad = {**feed, name: feed[name].copy()}
            bad[name].reshape(len(bad[name]), -1)[-1, -1] = np.inf
            with pytest.raises(InputError, match=rf"^Input tensor: {name} \| Received 1 NaN/Inf values"):
                runner.infer(bad)
            assert _ok(ref, runner.infer(feed), model_spec)
            meta = runner.input_metadata()
            if not any(d is None for m in meta.values() for d in m.shape[1:]) and not any(runner.narrowed(n) for n in meta):
                buffers = runner.pinned_inputs(batch)
                for n, x in bad.items():
                    buffers[n][:] = x
                with pytest.raises(InputError, match=rf"^Input tensor: {name} \| Received 1 NaN/Inf values"):
                    runner.infer(buffers)
                buffers[name][:] = feed[name]
                assert _ok(ref, runner.infer(buffers), model_spec)


def _float_input(spec):
    t = next((t for t in spec.inputs if np.dtype(t.dtype).kind == "f"), None)
    if t is None:
        pytest.skip(f"{spec.name} has no float input to hold a NaN")
    return t.name


def test_a_nan_in_a_late_subbatch_is_refused_and_the_next_call_is_right(trt_fp32_set, golden, profile, model_spec):
    name = _float_input(model_spec)
    feed, ref = golden[profile.max]
    bad = {**feed, name: feed[name].copy()}
    bad[name].reshape(len(bad[name]), -1)[-1, 0] = np.nan
    with pytest.raises(InputError, match=rf"Input tensor: {name} \| Received 1 NaN/Inf values"):
        trt_fp32_set.infer(bad)
    assert _ok(ref, trt_fp32_set.infer(feed), model_spec)


def test_host_memory_behind_a_gpu_interface_is_refused_by_cuda_pointer_attributes(trt_fp32_set, golden, model_spec):
    feed, _ = golden[7]
    name = model_spec.input_names[0]
    x = feed[name]

    class HostBehindCai:
        __cuda_array_interface__ = {"shape": x.shape, "typestr": x.dtype.str, "data": (x.ctypes.data, False),
                                    "version": 3, "strides": None, "stream": None}

    with pytest.raises(InputError, match=rf"Input tensor: {name} \| Received host memory behind __cuda_array_interface__ v3"):
        trt_fp32_set.infer({**feed, name: HostBehindCai()})


# -- half-precision uploads (TrtRunner's upload_half; tests/test_half_uploads.py on the fake GPU) ---------------------

def _fp16_sets(model_artifacts, model_spec, **options):
    """The typed FP16 engines (every TensorRT version builds them) behind two engine sets: half
    uploads (their default) and float32 uploads."""
    from model.backends.tensorrt.engine_set import TrtEngineSet

    if "fp16" not in model_spec.precisions:
        pytest.skip(f"{model_spec.name} is not offered in fp16: {model_spec.precision_notes}")
    if not any(np.dtype(t.dtype) == np.float32 for t in model_spec.inputs):
        pytest.skip(f"{model_spec.name} has no float32 input: nothing is uploaded in half precision")
    plans = {p: e.plan() for p, e in model_artifacts.engine_set("fp16", typed_graph=True).items()}

    def make(**more):
        return TrtEngineSet(plans, label="fp16-typed", declared=model_spec.input_metadata(),
                            runner_options={**options, **more})
    return make(), make(upload_half=False)


def _half_cases(golden, profile) -> dict[str, dict]:
    """The profile's max (sub-batches) and a cut of 256 rows or fewer (the graph path), each at
    least host_copy.MIN_BYTES so that half uploads apply."""
    from model.backends.tensorrt import host_copy

    feed, _ = golden[profile.max]
    batch = next(iter(feed.values())).shape[0]
    cut = max(profile.min, min(batch, 256))
    cases = {"max": feed, "cut": {n: v[:cut] for n, v in feed.items()}}
    small = [k for k, f in cases.items() if sum(v.nbytes for v in f.values() if v.dtype == np.float32) < host_copy.MIN_BYTES]
    if small:
        pytest.skip(f"the {small} feed holds under {host_copy.MIN_BYTES} bytes of float32: uploaded as it is")
    return cases


@pytest.mark.parametrize("case", ["max", "cut"], ids=["max-pipelined", "cut-graph-path"])
def test_half_uploads_give_the_engine_exactly_the_input_rounded_to_float16(model_artifacts, golden, profile, model_spec, case):
    """The widening kernel (finite_gpu.widen) on the real GPU: what the FP16 engine computes from a
    half upload is bit for bit what it computes from a float32 upload of the input rounded to
    float16, on both paths and on graph replays; and it stays within the FP16 tolerance of the
    reference, with no value flagged."""
    half, full = _fp16_sets(model_artifacts, model_spec)
    feed = _half_cases(golden, profile)[case]
    batch = next(iter(feed.values())).shape[0]
    ref = {n: v[:batch] for n, v in golden[profile.max][1].items()}
    rounded = {n: v.astype(np.float16).astype(np.float32) if v.dtype == np.float32 else v for n, v in feed.items()}
    with half, full:
        runner = half.runner_for(batch)
        assert runner.half_inputs(feed)
        expected = full.infer(rounded)
        for _ in range(3):  # staged, captured, replayed (the graph path)
            out = half.infer(feed)
            for n in expected:
                np.testing.assert_array_equal(out[n], expected[n], err_msg=n)
        assert compare_outputs(ref, out, "fp16", model_spec)
        assert runner.upload_half


@pytest.mark.parametrize("case", ["max", "cut"], ids=["max-pipelined", "cut-graph-path"])
def test_half_uploads_refuse_a_nan_and_give_float32_answers_beyond_float16s_range(
        model_artifacts, golden, profile, model_spec, case, caplog):
    half, full = _fp16_sets(model_artifacts, model_spec)
    feed = _half_cases(golden, profile)[case]
    name = next(n for n, v in feed.items() if v.dtype == np.float32)
    with half, full:
        runner = half.runner_for(next(iter(feed.values())).shape[0])
        for row in (0, -1):
            bad = {**feed, name: feed[name].copy()}
            bad[name].reshape(len(bad[name]), -1)[row, 0] = np.nan
            with pytest.raises(InputError, match=rf"^Input tensor: {name} \| Received 1 NaN/Inf values"):
                half.infer(bad)
        assert runner.upload_half
        big = {**feed, name: feed[name].copy()}
        big[name].reshape(len(big[name]), -1)[-1, 0] = 1e5  # finite in float32, Inf in float16
        with caplog.at_level(logging.WARNING, logger="model.backends.tensorrt.runner"):
            out = half.infer(big)
        expected = full.infer(big)
        for n in expected:
            np.testing.assert_array_equal(out[n], expected[n], err_msg=n)
        assert "uploading float32 from now on" in caplog.text and not runner.upload_half


def test_the_widening_kernel_writes_every_float16_as_float32_and_flags_nonfinite_values():
    """finite_gpu.widen, loaded and run by the driver: every one of the 65536 float16 bit patterns
    (subnormals, -0, +-65504, Inf, NaN) widened exactly as numpy widens it, over more than one
    grid's worth of values; a NaN/Inf flags, finite values do not; nothing past `count` is written."""
    from model.backends.tensorrt import cuda as cuda_rt
    from model.backends.tensorrt import finite_gpu

    patterns = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    n = 300_001
    every = np.resize(patterns, n)
    finite = np.resize(patterns[np.isfinite(patterns)], n)
    stream = cuda_rt.Stream()
    check = finite_gpu.GpuFiniteCheck(["x"])
    try:
        for src, flagged in ((every, "x"), (finite, None)):
            sentinel = np.full(n + 5, 7.0, np.float32)
            source, target = cuda_rt.DeviceArray.from_host(src), cuda_rt.DeviceArray.from_host(sentinel)
            try:
                check.widen("x", source.buffer.ptr, target.buffer.ptr, n, stream)
                stream.synchronize()
                assert check.flagged() == flagged
                got = cuda_rt.to_host(target)
                np.testing.assert_array_equal(got[:n], src.astype(np.float32))
                assert (got[n:] == 7.0).all()
            finally:
                source.free()
                target.free()
    finally:
        check.free()
        stream.free()
