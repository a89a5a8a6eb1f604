"""Batch profiles with several opt batches, and how a TensorRT runner picks between them."""
import numpy as np
import pytest

from model.backends.base import BackendUnavailable, TensorMeta
from model.profile import DEFAULT_PROFILE, BatchProfile, nearest_opt, serving_profile


@pytest.mark.parametrize("text, profile", [
    ("1,32,4096", BatchProfile(1, (32,), 4096)),
    ("1,32/4096,4096", BatchProfile(1, (32, 4096), 4096)),
    ("2,8/4/16,16", BatchProfile(2, (8, 4, 16), 16)),
    ("1,32/4096,4096,1", BatchProfile(1, (32, 4096), 4096, (1,))),
    ("1,32,4096,1/7", BatchProfile(1, (32,), 4096, (1, 7))),
])
def test_parse_and_spec_round_trip(text, profile):
    assert BatchProfile.parse(text) == profile
    assert BatchProfile.parse(profile.spec()) == profile


def test_default_tunes_for_latency_and_for_throughput():
    assert DEFAULT_PROFILE == BatchProfile(1, (32, 4096), 4096, (1,))
    assert str(DEFAULT_PROFILE) == "min=1 opt=32/4096 max=4096 static=1"
    assert DEFAULT_PROFILE.spec() == "1,32/4096,4096,1"


@pytest.mark.parametrize("text", ["1,32", "1,,4096", "a,32,4096", "1,32/,4096", "1,32,4096,", "1,32,4096,1,2"])
def test_malformed_profile_text_is_refused(text):
    with pytest.raises(ValueError, match=r"a batch profile is MIN,OPT,MAX\[,STATIC\]"):
        BatchProfile.parse(text)


@pytest.mark.parametrize("lo, opts, hi", [(0, (1,), 4), (8, (4,), 16), (1, (32,), 16), (1, (8, 8), 16), (1, (), 16)])
def test_inconsistent_profile_is_refused(lo, opts, hi):
    with pytest.raises(ValueError, match="needs 1 <= min <= each distinct opt <= max"):
        BatchProfile(lo, opts, hi)


@pytest.mark.parametrize("static", [(0,), (4097,), (1, 1)])
def test_static_batches_outside_the_range_or_repeated_are_refused(static):
    with pytest.raises(ValueError, match="static batches must be distinct and lie in min..max"):
        BatchProfile(1, (32,), 4096, static)


def test_engine_profiles_one_per_opt_over_the_range_and_one_per_static_batch():
    assert DEFAULT_PROFILE.engine_profiles() == [
        BatchProfile(1, (32,), 4096), BatchProfile(1, (4096,), 4096), BatchProfile(1, (1,), 1)]
    assert BatchProfile(2, (8,), 16).engine_profiles() == [BatchProfile(2, (8,), 16)]


# The boundary is the geometric mean of the opts: sqrt(32 * 4096) = 362.
@pytest.mark.parametrize("batch, expected", [(1, 32), (32, 32), (256, 32), (362, 32), (363, 4096), (1024, 4096), (4096, 4096)])
def test_nearest_opt_is_nearest_on_a_log_scale(batch, expected):
    opts = [32, 4096]
    assert opts[nearest_opt(batch, opts)] == expected


def _profiles(ranges, active=0):
    """A TrtRunner's profile choice over made-up engine profiles (no GPU needed)."""
    from model.backends.tensorrt.runner import TrtRunner

    runner = TrtRunner(b"")
    runner.profiles = [{"input": ((lo, 3, 32, 32), (opt, 3, 32, 32), (hi, 3, 32, 32))} for lo, opt, hi in ranges]
    runner.profile_opts = [opt for _, opt, _ in ranges]
    runner._active_profile = active
    return runner


@pytest.mark.parametrize("batch, expected", [(1, 0), (32, 0), (256, 0), (2048, 1), (4096, 1)])
def test_runner_serves_a_batch_from_the_nearest_tuned_profile(batch, expected):
    runner = _profiles([(1, 32, 4096), (1, 4096, 4096)])
    assert runner.profile_for({"input": (batch, 3, 32, 32)}) == expected


def test_runner_only_considers_profiles_whose_range_holds_the_batch():
    runner = _profiles([(1, 32, 64), (65, 4096, 4096)])
    assert runner.profile_for({"input": (64, 3, 32, 32)}) == 0
    assert runner.profile_for({"input": (65, 3, 32, 32)}) == 1


def test_a_shape_no_profile_holds_stays_on_the_active_profile_for_tensorrt_to_reject():
    runner = _profiles([(1, 32, 4096), (1, 4096, 4096)], active=1)
    assert runner.profile_for({"input": (4097, 3, 32, 32)}) == 1
    assert runner.profile_for({"input": (8, 3, 16, 16)}) == 1


# -- a set of one-profile engines (what the TensorRT backends run) ------------------------------

@pytest.mark.parametrize("batch, expected", [(1, 2), (2, 0), (32, 0), (362, 0), (363, 1), (4096, 1)])
def test_a_batch_is_served_by_its_static_engine_else_the_engine_tuned_nearest_it(batch, expected):
    assert serving_profile(batch, DEFAULT_PROFILE.engine_profiles()) == expected


def test_a_static_engine_wins_a_tie_with_a_dynamic_one_tuned_for_the_same_batch():
    profiles = [BatchProfile(1, (8,), 64), BatchProfile(8, (8,), 8)]
    assert serving_profile(8, profiles) == 1
    assert serving_profile(9, profiles) == 0


def test_engines_whose_range_misses_the_batch_are_passed_over():
    profiles = [BatchProfile(1, (32,), 64), BatchProfile(65, (4096,), 4096)]
    assert serving_profile(64, profiles) == 0
    assert serving_profile(65, profiles) == 1


class _FakeEngineRunner:
    def __init__(self, lo, hi, fail=False):
        batch = lo if lo == hi else None  # what TrtRunner declares for a static engine
        self.meta = {"input": TensorMeta(np.dtype(np.float32), (batch, 3, 32, 32), ((lo, hi), None, None, None))}
        self.fail, self.active = fail, False

    def activate(self):
        if self.fail:
            raise BackendUnavailable("no GPU here")
        self.active = True
        return self

    def deactivate(self):
        self.active = False

    def input_metadata(self):
        return self.meta


def _engine_set(profiles):
    from model.backends.tensorrt.engine_set import TrtEngineSet

    engines = TrtEngineSet({p: b"" for p in profiles})
    engines.runners = {p: _FakeEngineRunner(p.min, p.max) for p in profiles}
    return engines


@pytest.mark.parametrize("order", [[0, 1, 2], [2, 1, 0]])
def test_engine_set_dispatches_each_batch_and_declares_the_whole_dynamic_range(order):
    profiles = [DEFAULT_PROFILE.engine_profiles()[i] for i in order]
    engines = _engine_set(profiles)
    for batch, expected in [(1, BatchProfile(1, (1,), 1)), (7, BatchProfile(1, (32,), 4096)),
                            (4096, BatchProfile(1, (4096,), 4096))]:
        assert engines.runner_for(batch) is engines.runners[expected]
    meta = engines._input_metadata()["input"]
    assert (meta.shape, meta.min_batch, meta.max_batch) == ((None, 3, 32, 32), 1, 4096)


def test_engine_set_releases_what_it_activated_when_one_engine_fails(monkeypatch):
    from model.backends.tensorrt.engine_set import TrtEngineSet

    made = []

    def make(self, plan):
        made.append(_FakeEngineRunner(1, 4096, fail=len(made) == 1))
        return made[-1]

    monkeypatch.setattr(TrtEngineSet, "_make", make)
    with pytest.raises(BackendUnavailable, match="no GPU here"):
        TrtEngineSet({p: b"" for p in DEFAULT_PROFILE.engine_profiles()}).activate()
    assert len(made) == 2 and not made[0].active


def test_engine_set_needs_a_plan():
    from model.backends.tensorrt.engine_set import TrtEngineSet

    with pytest.raises(ValueError, match="at least one plan"):
        TrtEngineSet({})
