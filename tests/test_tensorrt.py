"""TensorRT-specific behaviour: profile bounds, shape binding, graph replay, and the engine cache."""
import logging
import shutil

import numpy as np
import pytest

from model.compare import compare
from model.engine import EngineSpec, engine_for_onnx
from model.profile import INPUT_NAME, OUTPUT_NAME, nearest_opt, serving_profile
from model.runners.base import InputError

pytestmark = pytest.mark.needs_trt


@pytest.fixture(scope="module")
def trt(model_artifacts):
    """A runner on one engine holding every opt batch's profile (the backends run one engine per
    opt batch instead: see the engine-set tests below)."""
    from model.runners.trt_runner import TrtRunner

    with TrtRunner(model_artifacts.engine("fp32").plan(), label="fp32") as runner:
        yield runner


def test_metadata_declares_the_profile(trt, profile):
    meta = trt.input_metadata()[INPUT_NAME]
    assert meta.shape == (None, 3, 32, 32) and meta.dtype == np.float32
    assert (meta.min_batch, meta.max_batch) == (profile.min, profile.max)


@pytest.mark.parametrize("end", ["min", "max"], ids=["profile_min", "profile_max"])
def test_profile_extremes(trt, golden, profile, end):
    batch = getattr(profile, end)
    x, ref = golden[batch]
    out = trt.infer({INPUT_NAME: x})[OUTPUT_NAME]
    assert out.shape == (batch, 100) and compare(ref, out)


def test_each_batch_runs_on_the_profile_tuned_nearest_it(trt, golden, profile):
    assert trt.engine.num_optimization_profiles == len(profile.opts)
    assert sorted(trt.profile_opts) == sorted(profile.opts)
    for batch in (32, profile.max, 7, profile.max):  # switching away and back
        x, ref = golden[batch]
        out = trt.infer({INPUT_NAME: x})[OUTPUT_NAME]
        assert out.shape == (batch, 100) and compare(ref, out)
        assert trt.profile_opts[trt.active_profile] == profile.opts[nearest_opt(batch, list(profile.opts))]


def test_engine_set_serves_each_batch_from_its_own_engine(runner_pool, golden, profile):
    engines = runner_pool("tensorrt-fp32")
    profiles = profile.engine_profiles()
    assert list(engines.runners) == profiles
    assert all(r.engine.num_optimization_profiles == 1 for r in engines.runners.values())
    for p, runner in engines.runners.items():  # each engine was built for its own range
        assert runner.shape_range[INPUT_NAME] == ((p.min, 3, 32, 32), (p.max, 3, 32, 32))
    for batch in sorted({32, profile.max, 7, *profile.static}):
        x, ref = golden[batch]
        out = engines.infer({INPUT_NAME: x})[OUTPUT_NAME]
        assert out.shape == (batch, 100) and compare(ref, out)
        assert engines.runner_for(batch) is engines.runners[profiles[serving_profile(batch, profiles)]]


def test_engine_set_declares_the_whole_range(runner_pool, profile):
    meta = runner_pool("tensorrt-fp32").input_metadata()[INPUT_NAME]
    assert (meta.min_batch, meta.max_batch) == (profile.min, profile.max)


def test_tensorrt_itself_rejects_a_shape_past_the_profile(trt, profile):
    with pytest.raises(InputError, match=rf"TensorRT rejected shape .*profile's min \({profile.min}, 3, 32, 32\) "
                                         rf"and max \({profile.max}, 3, 32, 32\)"):
        trt.bind({INPUT_NAME: (profile.max + 1, 3, 32, 32)})


def test_runner_recovers_after_a_rejected_shape(trt, golden, profile):
    with pytest.raises(InputError):
        trt.bind({INPUT_NAME: (profile.max + 1, 3, 32, 32)})
    x, ref = golden[7]
    assert compare(ref, trt.infer({INPUT_NAME: x})[OUTPUT_NAME])


def test_input_shape_is_set_only_when_it_changes(trt, golden):
    class Counting:
        def __init__(self, context):
            self._context, self.calls = context, 0

        def set_input_shape(self, *args):
            self.calls += 1
            return self._context.set_input_shape(*args)

        def __getattr__(self, name):
            return getattr(self._context, name)

    trt.bind({INPUT_NAME: golden[7][0].shape})  # start from a known state: bound to 7
    real = trt.context
    trt.context = counting = Counting(real)
    try:
        for n in (7, 7, 7, 32, 32, 7):
            trt.infer({INPUT_NAME: golden[n][0]})
    finally:
        trt.context = real
    assert counting.calls == 2  # 32, then 7 again: never for a repeated shape


def test_cuda_graph_replay_gives_the_same_outputs(trt, golden):
    x, ref = golden[32]
    trt.upload({INPUT_NAME: x})
    graph = trt.capture_graph()
    for _ in range(3):
        graph.launch()
    out = trt.download()[OUTPUT_NAME]
    trt.release_graph()
    assert compare(ref, out)


def test_repeated_shape_is_replayed_from_a_graph_with_the_same_answers(trt, golden):
    x, ref = golden[7]
    outs = [trt.infer({INPUT_NAME: x})[OUTPUT_NAME] for _ in range(4)]
    assert trt.replaying
    assert all(compare(ref, out) for out in outs)
    assert np.array_equal(outs[0], outs[-1])
    x32, ref32 = golden[32]
    out32 = trt.infer({INPUT_NAME: x32})[OUTPUT_NAME]  # a new shape drops the graph
    assert not trt.replaying and compare(ref32, out32)


def test_graphs_can_be_turned_off(model_artifacts, golden):
    from model.runners.trt_runner import TrtRunner

    x, ref = golden[7]
    with TrtRunner(model_artifacts.engine("fp32").plan(), graphs=False) as runner:
        outs = [runner.infer({INPUT_NAME: x})[OUTPUT_NAME] for _ in range(3)]
        assert not runner.replaying
    assert all(compare(ref, out) for out in outs)


# -- the engine cache --------------------------------------------------------------------------

def test_second_request_reuses_the_cached_plan(model_artifacts):
    first = model_artifacts.engine("fp32")
    again = engine_for_onnx(model_artifacts.onnx, EngineSpec(profile=model_artifacts.profile), model_artifacts.cache_dir)
    assert again.path == first.path and not again.rebuilt


def _damage(plan_path, sidecar_path, how):
    import json

    blob = plan_path.read_bytes()
    if how == "truncated":
        plan_path.write_bytes(blob[: len(blob) // 2])
    elif how == "corrupted":
        plan_path.write_bytes(blob[:1000] + bytes(b ^ 0x5A for b in blob[1000:2000]) + blob[2000:])
    elif how in ("other_tensorrt", "other_gpu"):
        sidecar = json.loads(sidecar_path.read_text())
        key = "tensorrt" if how == "other_tensorrt" else "gpu"
        sidecar["identity"][key] = "7.2.3" if key == "tensorrt" else "Tesla K80"
        sidecar_path.write_text(json.dumps(sidecar))
    elif how == "no_sidecar":
        sidecar_path.unlink()


@pytest.mark.parametrize("how", ["truncated", "corrupted", "other_tensorrt", "other_gpu", "no_sidecar"])
def test_bad_cached_plan_is_rebuilt_never_used(model_artifacts, golden, tmp_path, caplog, how):
    from model.runners.trt_runner import TrtRunner

    good = model_artifacts.engine("fp32")
    engines = tmp_path / "engines"
    shutil.copytree(good.path.parent, engines)  # the plan, its sidecar and the timing cache
    plan_path = engines / good.path.name
    _damage(plan_path, plan_path.with_suffix(".json"), how)
    with caplog.at_level(logging.WARNING):
        engine = engine_for_onnx(model_artifacts.onnx, EngineSpec(profile=model_artifacts.profile), tmp_path)
    assert engine.rebuilt and engine.path == plan_path
    assert "rebuilding TensorRT engine" in caplog.text
    x, ref = golden[7]
    with TrtRunner(engine.plan()) as runner:
        assert compare(ref, runner.infer({INPUT_NAME: x})[OUTPUT_NAME])


def test_engine_key_separates_precisions(model_artifacts):
    assert model_artifacts.engine("fp32").path != model_artifacts.engine("fp16").path
    fp32, fp16 = model_artifacts.engine("fp32").sidecar, model_artifacts.engine("fp16").sidecar
    assert fp32["identity"]["precision"] == "fp32" and fp16["identity"]["precision"] == "fp16"


# -- the host path and zero-copy feeds (model/runners/host_staging.py, device_arrays.py) ---------

@pytest.fixture(scope="module")
def trt_fp32_set(runner_pool):
    return runner_pool("tensorrt-fp32")


@pytest.mark.parametrize("batch", [7, 4096], ids=["bs7-graph-path", "bs4096-pipelined"])
def test_gpu_feed_gives_the_same_answers(trt_fp32_set, golden, batch):
    from model import cuda_rt

    x, ref = golden[batch]
    tensor = cuda_rt.DeviceArray.from_host(x)
    try:
        for _ in range(3):  # the second call at a shape captures a graph: replays must agree
            out = trt_fp32_set.infer({INPUT_NAME: tensor})[OUTPUT_NAME]
            assert compare(ref, out)
        device_out = trt_fp32_set.infer({INPUT_NAME: tensor}, outputs="device")[OUTPUT_NAME]
        assert compare(ref, cuda_rt.to_host(device_out))
    finally:
        tensor.free()


@pytest.mark.parametrize("batch", [7, 300, 4096])
def test_pinned_feed_and_device_outputs_give_the_same_answers(trt_fp32_set, golden, batch):
    from model import cuda_rt

    x, ref = golden.get(batch) or (golden[4096][0][:batch], golden[4096][1][:batch])
    buffers = trt_fp32_set.pinned_inputs(batch)
    buffers[INPUT_NAME][:] = x
    assert compare(ref, trt_fp32_set.infer(buffers)[OUTPUT_NAME])
    assert compare(ref, cuda_rt.to_host(trt_fp32_set.infer({INPUT_NAME: x}, outputs="device")[OUTPUT_NAME]))


def test_subbatches_chunks_and_threads_do_not_change_the_answers(model_artifacts, golden):
    """Small units force many sub-batches (two engine shapes per call) and uploads at 4096."""
    from model.runners.trt_runner import TrtRunner

    x, ref = golden[4096]
    options = {"subbatch_bytes": 3 << 20, "chunk_bytes": 1 << 18, "staging_threads": 3}
    with TrtRunner(model_artifacts.engine("fp32").plan(), **options) as runner:
        assert compare(ref, runner.infer({INPUT_NAME: x})[OUTPUT_NAME])
        assert compare(ref[:4001], runner.infer({INPUT_NAME: x[:4001]})[OUTPUT_NAME])


def test_a_nan_in_a_late_chunk_is_refused_and_the_next_call_is_right(trt_fp32_set, golden):
    x, ref = golden[4096]
    bad = x.copy()
    bad[-1, 0, 0, 0] = np.nan
    with pytest.raises(InputError, match=r"Input tensor: input \| Received 1 NaN/Inf values"):
        trt_fp32_set.infer({INPUT_NAME: bad})
    assert compare(ref, trt_fp32_set.infer({INPUT_NAME: x})[OUTPUT_NAME])


def test_host_memory_behind_a_gpu_interface_is_refused_by_cuda_pointer_attributes(trt_fp32_set, golden):
    x, _ = golden[7]

    class HostBehindCai:
        __cuda_array_interface__ = {"shape": x.shape, "typestr": "<f4", "data": (x.ctypes.data, False),
                                    "version": 3, "strides": None, "stream": None}

    with pytest.raises(InputError, match=r"Input tensor: input \| Received host memory behind __cuda_array_interface__ v3"):
        trt_fp32_set.infer({INPUT_NAME: HostBehindCai()})
