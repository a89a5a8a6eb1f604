"""Batch profiles with several opt batches, and how a TensorRT runner picks between them."""
import pytest

from model.profile import DEFAULT_PROFILE, BatchProfile, nearest_opt


@pytest.mark.parametrize("text, profile", [
    ("1,32,4096", BatchProfile(1, (32,), 4096)),
    ("1,32/4096,4096", BatchProfile(1, (32, 4096), 4096)),
    ("2,8/4/16,16", BatchProfile(2, (8, 4, 16), 16)),
])
def test_parse_and_spec_round_trip(text, profile):
    assert BatchProfile.parse(text) == profile
    assert BatchProfile.parse(profile.spec()) == profile


def test_default_tunes_for_latency_and_for_throughput():
    assert DEFAULT_PROFILE == BatchProfile(1, (32, 4096), 4096)
    assert str(DEFAULT_PROFILE) == "min=1 opt=32/4096 max=4096"


@pytest.mark.parametrize("text", ["1,32", "1,,4096", "a,32,4096", "1,32/,4096"])
def test_malformed_profile_text_is_refused(text):
    with pytest.raises(ValueError, match="a batch profile is MIN,OPT,MAX"):
        BatchProfile.parse(text)


@pytest.mark.parametrize("lo, opts, hi", [(0, (1,), 4), (8, (4,), 16), (1, (32,), 16), (1, (8, 8), 16), (1, (), 16)])
def test_inconsistent_profile_is_refused(lo, opts, hi):
    with pytest.raises(ValueError, match="needs 1 <= min <= each distinct opt <= max"):
        BatchProfile(lo, opts, hi)


# The boundary is the geometric mean of the opts: sqrt(32 * 4096) = 362.
@pytest.mark.parametrize("batch, expected", [(1, 32), (32, 32), (256, 32), (362, 32), (363, 4096), (1024, 4096), (4096, 4096)])
def test_nearest_opt_is_nearest_on_a_log_scale(batch, expected):
    opts = [32, 4096]
    assert opts[nearest_opt(batch, opts)] == expected


def _profiles(ranges, active=0):
    """A TrtRunner's profile choice over made-up engine profiles (no GPU needed)."""
    from model.runners.trt_runner import TrtRunner

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
