"""The comparator catches what it must: the flat (3200,) output, drift, NaN, argmax flips."""
import numpy as np
import pytest

from model.compare import TOLERANCES, Tolerance, compare


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


def test_int8_is_judged_on_decisions():
    ref = np.zeros((4, 100), np.float32)
    ref[:, 0] = 10.0
    drifted = ref + np.random.default_rng(0).uniform(-2, 2, ref.shape).astype(np.float32)
    drifted[:, 0] = 10.0
    assert compare(ref, drifted, "int8")  # values drift, decisions hold
    flipped = ref.copy()
    flipped[2, 5] = 11.0  # a clear decision (margin 10) changed
    assert not compare(ref, flipped, "int8")


def test_tolerances_tighten_with_precision():
    assert TOLERANCES["fp32"].atol < TOLERANCES["fp16"].atol
    assert TOLERANCES["fp32"].min_top1_agreement >= TOLERANCES["fp16"].min_top1_agreement >= TOLERANCES["int8"].min_top1_agreement


def test_agreement_fraction_applies_to_large_batches():
    ref = np.random.default_rng(1).standard_normal((200, 100)).astype(np.float32)
    out = ref.copy()
    top = ref.argmax(1)
    for row in range(3):  # 3 of 200 rows pick another class: 98.5% < 99%
        out[row, (top[row] + 1) % 100] = ref[row, top[row]] + 1.0
    result = compare(ref, out, "fp16", Tolerance(atol=10.0, rtol=0.0, min_top1_agreement=0.99, tie_margin=0.1))
    assert not result and result.top1_agreement == pytest.approx(0.985)


def test_near_tie_flip_in_a_small_batch_is_not_a_failure():
    ref = np.zeros((1, 100), np.float32)
    ref[0, 3], ref[0, 4] = 5.0, 4.99  # the reference itself can barely tell 3 from 4
    out = ref.copy()
    out[0, 4] = 5.01
    assert compare(ref, out, "fp16")
    clear = ref.copy()
    clear[0, 4] = 1.0
    flipped = clear.copy()
    flipped[0, 3], flipped[0, 4] = 1.0, 5.0
    assert not compare(clear, flipped, "fp16")
