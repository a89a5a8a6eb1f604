"""The comparator catches what it must: the flat (3200,) output, drift, NaN, argmax flips."""
import numpy as np
import pytest

from model.compare import TOLERANCES, compare


@pytest.fixture
def ref():
    return np.random.default_rng(0).standard_normal((32, 100)).astype(np.float32) * 5


def test_identical_passes(ref):
    result = compare(ref, ref.copy())
    assert result and result.max_abs == 0 and result.top1_agreement == 1.0


def test_flat_output_of_the_unset_shape_bug_fails(ref):
    result = compare(ref, ref.reshape(-1))
    assert not result and "shape mismatch: received (3200,), expected (32, 100)" in result.message


def test_drift_beyond_fp32_tolerance_fails_and_reports_worst_index(ref):
    out = ref.copy()
    out[3, 17] += 0.05
    result = compare(ref, out, "fp32")
    assert not result and result.worst_index == (3, 17) and result.max_abs == pytest.approx(0.05, rel=1e-3)


def test_small_drift_passes_fp16_but_argmax_flips_count(ref):
    out = ref + 0.01
    assert compare(ref, out, "fp16")
    flipped = ref.copy()
    flipped[0] = -flipped[0]  # one row of 32 disagrees: 96.9% < 99%
    result = compare(ref, flipped, "fp16")
    assert not result and result.top1_agreement == pytest.approx(31 / 32)


def test_nan_output_fails(ref):
    out = ref.copy()
    out[0, 0] = np.nan
    assert "NaN/Inf" in compare(ref, out).message


def test_tolerances_tighten_with_precision():
    assert TOLERANCES["fp32"].atol < TOLERANCES["fp16"].atol
    assert TOLERANCES["fp32"].min_top1_agreement >= TOLERANCES["fp16"].min_top1_agreement >= TOLERANCES["int8"].min_top1_agreement
