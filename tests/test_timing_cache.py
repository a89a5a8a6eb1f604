"""TensorRT's timing cache shared by every build (model/backends/tensorrt/build.py): builds that
run at once each add what they timed, none overwrites the others'. The merge's logic on a stand-in
TensorRT here; on a GPU, real builds into one cache."""
import logging
import types

import pytest

from model.backends.tensorrt.build import merged_timing


class _Cache:
    def __init__(self, blob: bytes, fail: bool) -> None:
        self.entries, self.fail = set(filter(None, blob.split(b","))), fail

    def combine(self, other, ignore_mismatch: bool) -> bool:
        assert ignore_mismatch is False  # a cache of another TensorRT or GPU must not be mixed in
        if self.fail:
            return False
        self.entries |= other.entries
        return True

    def serialize(self) -> bytes:
        return b",".join(sorted(self.entries))


def _stand_in(fail: bool = False):
    class ILogger:
        def __init__(self) -> None:
            pass

    config = types.SimpleNamespace(create_timing_cache=lambda blob: _Cache(bytes(blob), fail))
    builder = lambda logger: types.SimpleNamespace(create_builder_config=lambda: config)  # noqa: E731
    return types.SimpleNamespace(ILogger=ILogger, Builder=builder)


def test_a_build_keeps_what_another_build_stored_meanwhile():
    assert merged_timing(_stand_in(), b"conv1,conv2", b"conv2,gemm") == b"conv1,conv2,gemm"


def test_nothing_stored_meanwhile_keeps_the_build_s_own():
    assert merged_timing(_stand_in(), b"conv1", None) == b"conv1"
    assert merged_timing(_stand_in(), b"conv1", b"conv1") == b"conv1"


def test_a_cache_that_will_not_combine_is_dropped_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        assert merged_timing(_stand_in(fail=True), b"conv1", b"gemm") == b"conv1"
    assert "timing caches not combined" in caplog.text


@pytest.mark.needs_trt
def test_two_builds_into_one_cache_keep_both_builds_timings(model_artifacts):
    """Two plans (FP32 and FP16) built from empty timing caches: their merge holds at least what
    either build alone timed, and seeds a third build. Batch 1 only, optimization level 1 (level 0
    times nothing): seconds, not the minutes of a deployed plan."""
    from model.backends.tensorrt import compat
    from model.backends.tensorrt.build import EngineSpec, build_plan
    from model.profile import BatchProfile

    trt = compat.import_tensorrt()
    tiny = {"profile": BatchProfile(1, (1,), 1), "optimization_level": 1}
    _, fp32 = build_plan(model_artifacts.onnx, EngineSpec(model_artifacts.spec, **tiny))
    _, fp16 = build_plan(model_artifacts.onnx, EngineSpec(model_artifacts.spec, precision="fp16", **tiny))
    both = merged_timing(trt, fp16, fp32)
    assert len(both) >= max(len(fp32), len(fp16))
    plan, refined = build_plan(model_artifacts.onnx, EngineSpec(model_artifacts.spec, **tiny), both)
    assert plan and len(refined) >= len(fp32)
