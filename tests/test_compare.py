"""The comparator catches what it must: the flat (3200,) output, drift, NaN, argmax flips."""
from dataclasses import replace

import numpy as np
import pytest

from model.compare import TOLERANCES, Tolerance, compare, compare_outputs
from tests.tiny_models import segmenter_spec


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


def decided(rows: int) -> np.ndarray:
    """Logits whose top class (5.0) leads the runner-up (4.7) by more than FP16's tie margin."""
    logits = np.random.default_rng(1).uniform(-3, 3, (rows, 100)).astype(np.float32)
    logits[:, 3], logits[:, 4] = 5.0, 4.7
    return logits


def flip(logits: np.ndarray, rows) -> np.ndarray:
    """Swap the decision in `rows` by moving both logits 0.16: inside FP16's value tolerance."""
    out = logits.copy()
    out[rows, 3] -= 0.16
    out[rows, 4] += 0.16
    return out


VALUES_ONLY = Tolerance(atol=5e-2, rtol=5e-2, min_top1_agreement=0.0, tie_margin=float("inf"))


def test_small_drift_passes_fp16(ref):
    assert compare(ref, ref + 0.01, "fp16")


def test_flip_of_a_clear_decision_fails_a_small_batch_even_within_value_tolerance():
    ref = decided(32)
    out = flip(ref, [0])
    assert compare(ref, out, tolerance=VALUES_ONLY)  # the values alone would pass
    result = compare(ref, out, "fp16")
    assert not result and result.top1_agreement == pytest.approx(31 / 32)


def test_large_batches_are_judged_on_the_agreement_fraction():
    ref = decided(200)
    one = compare(ref, flip(ref, [0]), "fp16")  # 99.5% >= 99%
    assert one and one.top1_agreement == pytest.approx(199 / 200)
    out = flip(ref, [0, 1, 2])  # 98.5% < 99%
    assert compare(ref, out, tolerance=VALUES_ONLY)
    three = compare(ref, out, "fp16")
    assert not three and three.top1_agreement == pytest.approx(197 / 200)


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
    clear = decided(1)
    flipped = flip(clear, [0])
    assert compare(clear, flipped, tolerance=VALUES_ONLY) and not compare(clear, flipped, "fp16")


def test_a_decoders_per_token_logits_are_judged_by_their_decisions():
    """Logits of (batch, seq, vocab), as a decoder returns them: every token position is a decision.
    INT8 (judged on decisions alone) passes value noise that keeps every argmax, where a rank-3 output
    used to be called degenerate; a flipped token fails FP16 where it used to pass unjudged."""
    rng = np.random.default_rng(1)
    ref = rng.standard_normal((8, 16, 50)).astype(np.float32)
    top = ref.argmax(-1)
    ref[np.arange(8)[:, None], np.arange(16)[None, :], top] += 5.0  # clear decisions
    noisy = ref + rng.uniform(-0.3, 0.3, ref.shape).astype(np.float32)
    result = compare(ref, noisy, "int8")
    assert result and result.top1_agreement == 1.0, result.message
    flipped = ref.copy()
    for b, t in ((2, 5), (4, 0), (7, 15)):  # three tokens now decide otherwise, by a clear margin
        flipped[b, t, (top[b, t] + 1) % 50] += 10.0
    result = compare(ref, flipped, "fp16", replace(TOLERANCES["fp16"], atol=100.0, rtol=1.0))
    assert not result and result.top1_agreement == pytest.approx(125 / 128), result.message


def test_a_segmentations_pixels_are_judged_by_their_class_over_the_class_axis():
    """(N, classes, H, W): each pixel is a decision over axis 1. An argmax over the width, where a
    classifier's classes would be, compares pixel positions and misses flipped classes."""
    spec = segmenter_spec(1)
    rng = np.random.default_rng(2)
    ref = rng.standard_normal((2, 5, 16, 16)).astype(np.float32)
    top = spec.decisions(ref)
    n, h, w = np.indices(top.shape)
    ref[n, top, h, w] += 5.0  # every pixel a clear decision
    flipped = ref.copy()
    flipped[0, (top[0, 3, 4] + 1) % 5, 3, 4] += 10.0  # one pixel of 512 now decides another class
    result = compare_outputs({"mask": ref}, {"mask": flipped}, "fp16", spec)
    assert not result and result.top1_agreement == pytest.approx(511 / 512), result.message
    assert compare_outputs({"mask": ref}, {"mask": ref + 0.01}, "fp16", spec)


def test_a_class_axis_on_a_dynamic_dim_is_refused():
    """The default class axis (the last) of a (N, classes, H, W) output is its width: refused, not
    computed into an agreement figure that means nothing."""
    from model.spec import SpecError

    with pytest.raises(SpecError, match=r"logits output 'mask' \('batch', 5, 'h', 'w'\) has the dynamic dim 'w' on its "
                                        r"class axis \(-1\).*set class_axis to the axis of the classes"):
        segmenter_spec(-1)
    with pytest.raises(SpecError, match="class_axis 4 lies outside logits output 'mask'"):
        segmenter_spec(4)
