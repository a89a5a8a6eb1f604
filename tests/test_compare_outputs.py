"""Verdicts over a model's whole output dict, and INT8's decision gate at its edge: a failing output
among passing ones is the verdict, outputs named otherwise fail, and INT8 below 90% agreement
over a large batch fails however close its values."""
import numpy as np
import pytest

from model.compare import TOLERANCES, compare, compare_outputs
from tests.test_compare import decided, flip


@pytest.fixture
def outputs():
    rng = np.random.default_rng(2)
    return {"logits": decided(8), "hidden": rng.standard_normal((8, 16)).astype(np.float32)}


def test_a_failing_output_among_passing_ones_fails_by_name(outputs):
    drifted = {**outputs, "hidden": outputs["hidden"] + 0.05}
    result = compare_outputs(outputs, drifted, "fp32")
    assert not result and result.message.startswith("output hidden: FAIL [fp32]")
    assert result.max_abs == pytest.approx(0.05, rel=1e-3)
    assert compare_outputs(outputs, {k: v.copy() for k, v in outputs.items()}, "fp32")


@pytest.mark.parametrize("names", [("logits",), ("logits", "hidden", "extra"), ("logits", "renamed")])
def test_outputs_named_otherwise_fail(outputs, names):
    got = {n: outputs.get(n, outputs["hidden"]) for n in names}
    result = compare_outputs(outputs, got, "fp32")
    assert not result and f"outputs {sorted(names)} differ from the reference's ['hidden', 'logits']" in result.message


def test_int8_fails_below_its_agreement_gate_on_a_large_batch():
    """200 rows: 19 changed decisions (90.5%) pass INT8's 90% gate, 21 (89.5%) fail it."""
    ref = decided(200)
    assert TOLERANCES["int8"].min_top1_agreement == 0.90
    within = compare(ref, flip(ref, range(19)), "int8")
    assert within and within.top1_agreement == pytest.approx(0.905)
    below = compare(ref, flip(ref, range(21)), "int8")
    assert not below and below.top1_agreement == pytest.approx(0.895)
