"""Tolerances scale with the outputs, and a reference that cannot tell right from wrong is a failure,
never a pass: a freshly seeded torchvision classifier's logits of 1e-10 pass any absolute bound."""
import re
from dataclasses import replace

import numpy as np
import pytest

from model.compare import TOLERANCES, compare, compare_outputs, degenerate


def _values(scale: float, seed: int = 0) -> np.ndarray:
    ref = np.random.default_rng(seed).standard_normal((32, 100)) * scale
    ref[0, 0] = 0.0  # an exact zero: where only the absolute floor holds
    return ref.astype(np.float32)


def test_an_output_in_the_thousands_is_held_to_its_own_scale():
    ref = _values(1000.0)
    rounding = ref.copy()
    rounding[0, 0] = 2e-3  # float32 rounding of sums of values ~1e3 (1e-5 of the spread is 1e-2)
    result = compare(ref, rounding, "fp32")
    assert result and result.scale == pytest.approx(1000, rel=0.05) and "scale 1" in result.message
    wrong = ref.copy()
    wrong[0, 0] = 0.5  # far beyond float32 arithmetic at this scale
    assert not compare(ref, wrong, "fp32")


def test_outputs_of_the_usual_size_keep_the_absolute_floor():
    """The shipped models' outputs have spreads of 0.1 to 2: their bound is the floor, as before."""
    ref = _values(1.5)
    out = ref.copy()
    out[0, 0] = 1.5 * TOLERANCES["fp32"].atol
    result = compare(ref, out, "fp32")
    assert not result and result.max_abs == pytest.approx(1.5e-4) and "|err| <= 0.0001 +" in result.message


@pytest.mark.parametrize("make, why", [
    (lambda: _values(1.0) * 1e-10, r"every \|value\| is below 1e-06 \(largest [\d.]+e-10\)"),
    (lambda: np.full((4, 10), 0.25, np.float32), r"it is constant \(0.25 in all 40 values"),
    (lambda: np.where(np.eye(4, 10, dtype=bool), np.nan, _values(1.0)[:4, :10]).astype(np.float32),
     "it holds 4 NaN/Inf values"),
], ids=["near-zero", "constant", "non-finite"])
def test_a_degenerate_reference_fails_even_an_identical_output(make, why):
    ref = make()
    result = compare_outputs({"logits": ref}, {"logits": ref.copy()}, "fp32")
    assert not result
    assert result.message.startswith("output logits: FAIL [fp32] the reference is degenerate over this feed: ")
    assert re.search(why, result.message), result.message
    assert "warm BatchNorm's statistics" in result.message


def test_a_reference_inside_the_absolute_floor_fails():
    """Features of 1e-5 (a network whose BatchNorm statistics barely moved) are above the near-zero
    mark, but FP32's floor of 1e-4 covers them all: zeros would pass. Logits (decisions judged) keep
    their bound: their top-1 agreement is the check there."""
    ref = _values(1.0)[:, None, :] * 1e-5
    features = replace(TOLERANCES["fp32"], min_top1_agreement=0.0, tie_margin=float("inf"))  # as ModelSpec.tolerance gives a non-logit output
    result = compare(ref, np.zeros_like(ref), "fp32", features)
    assert not result and "degenerate for this tolerance: every |value| is within its absolute floor 0.0001" in result.message
    assert compare(ref * 1e4, ref * 1e4, "fp32", features)  # the same values at a scale the floor can judge
    assert not compare(ref[:, 0], np.roll(ref[:, 0], 1, axis=1), "fp32")  # logits: decisions flip


def test_integer_outputs_and_single_values_are_not_degenerate():
    assert degenerate(np.zeros((4, 3), np.int64)) is None  # class ids: compared exactly
    assert degenerate(np.array([[0.5]], np.float32)) is None  # one value has no spread to judge


@pytest.fixture(scope="module")
def classifier():
    """torchvision's MobileNetV3-Small, seeded, no weights downloaded: its fresh logits are ~1e-9."""
    torch = pytest.importorskip("torch")
    tv = pytest.importorskip("torchvision", reason="torchvision is not installed in this Python")
    torch.manual_seed(0)
    return tv.models.mobilenet_v3_small(weights=None, num_classes=10).eval()


def _logits(torch, model, x):
    with torch.inference_mode():
        return model(x).numpy()


def test_a_fresh_torchvision_classifier_fails_and_warmed_statistics_judge_it(classifier):
    import torch

    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    fresh = _logits(torch, classifier, x)
    result = compare_outputs({"logits": fresh}, {"logits": fresh.copy()}, "fp32")
    assert not result and "the reference is degenerate" in result.message and "BatchNorm" in result.message

    for layer in classifier.modules():  # a cumulative average: MobileNetV3's momentum of 0.01 would take 100s of batches
        if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm):
            layer.momentum = None
    classifier.train()
    with torch.no_grad():
        for i in range(3):
            classifier(torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(10 + i)))
    classifier.eval()
    warmed = _logits(torch, classifier, x)
    # Row by row: another summation order, the float32 rounding a second backend brings.
    rows = np.concatenate([_logits(torch, classifier, x[i : i + 1]) for i in range(len(x))])
    judged = compare_outputs({"logits": warmed}, {"logits": rows}, "fp32")
    assert judged, judged.message
    scale = judged.scales["logits"]["scale"]
    assert scale == pytest.approx(float(warmed.std()), rel=1e-6) and scale > 1e-3 and f"scale {scale:.3g}" in judged.message
    off = rows.copy()
    off[3, 2] += 10 * TOLERANCES["fp32"].atol
    assert not compare_outputs({"logits": warmed}, {"logits": off}, "fp32")


def test_the_report_shows_each_error_beside_its_scale_and_names_a_degenerate_reference():
    from model.evaluate import _scales
    from model.report import markdown_table

    ref = {"logits": _values(1.0) * 1e-10, "features": _values(3.0)}
    out = {"logits": ref["logits"].copy(), "features": ref["features"] + 0.01}
    row = {"available": True, "precision": "fp32", "accuracy": None, "top1_agreement": None, "latency_ms": {},
           "file_mb": 1.0}
    table = markdown_table([{**row, "backend": "pytorch-cpu", "max_abs_error": None, "outputs": _scales(ref, None)},
                            {**row, "backend": "onnxruntime-cpu", "max_abs_error": 0.01, "outputs": _scales(ref, out)}],
                           [])
    scale = float(ref["features"].astype(np.float64).std())
    assert f"| 0.01 (scale {scale:.2g}) |" in table
    assert "- pytorch-cpu: reference output 'logits' is degenerate over the feed (every |value| is below 1e-06" in table
    assert "'features' is degenerate" not in table
