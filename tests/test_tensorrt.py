"""TensorRT-specific behaviour: profile bounds, shape binding, graph replay, and the engine cache."""
import json
import logging
import shutil

import numpy as np
import pytest

from model import cache
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


@pytest.mark.parametrize("how", ["truncated", "corrupted", "other_tensorrt", "other_gpu", "junk_sidecar", "no_sidecar"])
def test_bad_cached_plan_is_rebuilt_never_used(model_artifacts, golden, tmp_path, caplog, how):
    from model.runners.trt_runner import TrtRunner

    good = model_artifacts.engine("fp32")
    engines = tmp_path / "engines"
    shutil.copytree(good.path.parent, engines)  # the plan, its sidecar and the timing cache
    plan_path = engines / good.path.name
    _damage(plan_path, cache.sidecar_path(plan_path), how)
    with caplog.at_level(logging.WARNING):
        engine = engine_for_onnx(model_artifacts.onnx, EngineSpec(profile=model_artifacts.profile), tmp_path)
    assert engine.rebuilt and engine.path == plan_path
    assert f"not using cached {plan_path}" in caplog.text
    x, ref = golden[7]
    with TrtRunner(engine.plan()) as runner:
        assert compare(ref, runner.infer({INPUT_NAME: x})[OUTPUT_NAME])


def test_engine_key_separates_precisions(model_artifacts):
    assert model_artifacts.engine("fp32").path != model_artifacts.engine("fp16").path
    fp32, fp16 = model_artifacts.engine("fp32").sidecar, model_artifacts.engine("fp16").sidecar
    assert fp32["key"]["precision"] == "fp32" and fp16["key"]["precision"] == "fp16"


def test_damaged_timing_cache_is_not_fed_to_the_builder(model_artifacts, tmp_path, caplog):
    good = model_artifacts.engine("fp32")
    engines = tmp_path / "engines"
    shutil.copytree(good.path.parent, engines)
    (timing,) = engines.glob("timing-*.cache")
    blob = timing.read_bytes()
    timing.write_bytes(blob[: len(blob) // 2] + bytes(64) + blob[len(blob) // 2 + 64:])  # same size
    cache.sidecar_path(engines / good.path.name).unlink()  # so the plan is built, reading the timing cache
    with caplog.at_level(logging.WARNING):
        engine = engine_for_onnx(model_artifacts.onnx, EngineSpec(profile=model_artifacts.profile), tmp_path)
    assert engine.rebuilt and f"not using cached {timing}" in caplog.text
    rewritten = json.loads(cache.sidecar_path(timing).read_text())
    assert cache.problem(timing, rewritten["key"]) == (None, rewritten)  # the refined one is whole
