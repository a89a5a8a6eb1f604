"""Comparing a backend's outputs with the reference: runners never assert, this does.

Tolerances live here and nowhere else. FP32 backends must match PyTorch FP32 elementwise;
reduced precisions are judged on their error bound and on how often they pick the same class.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Tolerance:
    """|error| <= max(atol, scale_tol * spread) + rtol * |reference| elementwise, where `spread` is
    the reference output's standard deviation over the feed: the absolute floor holds at exact
    zeros, and an output of values in the thousands is held to its own scale, not to 1e-4."""

    atol: float
    rtol: float
    min_top1_agreement: float  # fraction of decisions (positions off the class axis) whose argmax equals the reference's
    tie_margin: float  # a flip is a near-tie when the reference's two logits differ by at most this
    scale_tol: float = 0.0


# Spread-relative bounds, each equal to its precision's absolute floor at a spread of 10, so outputs
# of the usual size (the shipped models' have spreads of 0.1 to 2) are judged exactly as by atol:
# FP32 1e-5 of the spread is ~80 float32 epsilons (sums of thousands of terms), FP16 5e-3 five half
# epsilons.
# INT8 logits drift by whole units (3.6 at most over 4,096 held-out images on ONNX Runtime CPU),
# so INT8 is judged on decisions, not values: top-1 agreement (in batches under 100 rows, no flip
# of a clear decision), and the accuracy gate below. FP32 allows no flip at all, near-tie or not.
TOLERANCES = {
    "fp32": Tolerance(atol=1e-4, rtol=1e-3, min_top1_agreement=1.0, tie_margin=0.0, scale_tol=1e-5),
    "fp16": Tolerance(atol=5e-2, rtol=5e-2, min_top1_agreement=0.99, tie_margin=0.1, scale_tol=5e-3),
    "int8": Tolerance(atol=float("inf"), rtol=0.0, min_top1_agreement=0.90, tie_margin=1.5),
}
# A float reference whose every |value| is below this says nothing: the tightest absolute floor
# (FP32, 1e-4) is 100 times larger, so any output within the floor of zero would pass. A freshly
# seeded torchvision classifier (BatchNorm at its initial statistics) gives logits of 1e-10 to 1e-13.
NEAR_ZERO = 1e-6
# Variation below this fraction of the largest |value| is a few float32 ulps: the feed moved
# nothing and the outputs are one constant.
CONSTANT = 1e-6
DEGENERATE_FIX = ("the comparison would pass whatever the backend returned near it. Compare a model "
                  "that computes something on this feed: load trained weights, or warm BatchNorm's "
                  "statistics (model.train(); run a few batches; model.eval()) before export; or feed "
                  "inputs that reach the output")
# Accuracy gates on the held-out split: how many points of top-1 a precision may lose vs FP32.
MAX_ACCURACY_DROP = {"fp32": 0.0, "fp16": 0.003, "int8": 0.010}

# Below this many rows an agreement fraction says little (one flip in 7 is 86%); there, a flip
# passes only where the reference itself was a near-tie (within `tie_margin`).
MIN_ROWS_FOR_AGREEMENT = 100


@dataclass(frozen=True)
class Comparison:
    passed: bool
    message: str
    max_abs: float = float("nan")
    max_rel: float = float("nan")
    worst_index: tuple | None = None
    top1_agreement: float = float("nan")
    scale: float = float("nan")  # the reference's spread (std over the feed) of the worst output
    scales: dict = field(default_factory=dict)  # output -> {"max_abs", "scale"}, from compare_outputs

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        return self.message


def compare(reference: np.ndarray, output: np.ndarray, precision: str = "fp32",
            tolerance: Tolerance | None = None, class_axis: int = -1) -> Comparison:
    tol = tolerance or TOLERANCES[precision]
    output = np.asarray(output)
    if output.shape != reference.shape:
        return Comparison(False, f"shape mismatch: received {output.shape}, expected {reference.shape}")
    problem = degenerate(reference)
    if problem:
        return Comparison(False, f"FAIL [{precision}] the reference is degenerate over this feed: {problem}; "
                                 + DEGENERATE_FIX)
    if not np.isfinite(output).all():
        return Comparison(False, f"output holds {int((~np.isfinite(output)).sum())} NaN/Inf values")
    ref = reference.astype(np.float64)
    out = output.astype(np.float64)
    spread = float(ref.std()) if ref.size else 0.0
    diff = np.abs(out - ref)
    worst = np.unravel_index(int(diff.argmax()), diff.shape) if diff.size else None
    max_abs = float(diff.max()) if diff.size else 0.0
    max_rel = float((diff / np.maximum(np.abs(ref), np.finfo(np.float32).tiny)).max()) if diff.size else 0.0
    floor = max(tol.atol, tol.scale_tol * spread)
    peak = float(np.abs(ref).max()) if ref.size else 0.0
    # Where decisions are judged (top-1 agreement), a loose value bound is by design (INT8's is inf).
    values_only = ref.ndim < 2 or tol.min_top1_agreement <= 0
    if values_only and np.issubdtype(reference.dtype, np.floating) and ref.size and peak <= floor:
        return Comparison(False, f"FAIL [{precision}] the reference is degenerate for this tolerance: every |value| "
                                 f"is within its absolute floor {floor:.3g} (largest {peak:.3g}), so an output of zeros "
                                 f"would pass; {DEGENERATE_FIX}; or give the model tolerances of this output's size",
                          scale=spread)
    close = bool(np.all(diff <= floor + tol.rtol * np.abs(ref)))
    agreement, agreement_ok = _agreement(ref, out, tol, class_axis)
    passed = close and agreement_ok
    message = (f"{'PASS' if passed else 'FAIL'} [{precision}] max_abs={max_abs:.3g} (scale {spread:.3g}) "
               f"max_rel={max_rel:.3g} at {worst} top1_agreement={agreement:.4f} (|err| <= {floor:.3g} + "
               f"{tol.rtol} |ref|: atol={tol.atol}, scale_tol={tol.scale_tol}, min_top1={tol.min_top1_agreement})")
    return Comparison(passed, message, max_abs, max_rel, worst, agreement, spread)


def degenerate(reference: np.ndarray) -> str | None:
    """Why a float reference cannot tell a right output from a wrong one (non-finite, all near zero,
    constant), or None. Integer outputs (class ids, token ids) are compared exactly and never are."""
    reference = np.asarray(reference)
    if not np.issubdtype(reference.dtype, np.floating) or not reference.size:
        return None
    bad = int((~np.isfinite(reference)).sum())
    if bad:
        return f"it holds {bad} NaN/Inf values"
    peak = float(np.abs(reference).max())
    if peak < NEAR_ZERO:
        return f"every |value| is below {NEAR_ZERO:g} (largest {peak:.3g})"
    spread = float(reference.astype(np.float64).std())
    if reference.size > 1 and spread <= CONSTANT * peak:
        return f"it is constant ({float(reference.flat[0]):.6g} in all {reference.size} values, spread {spread:.3g})"
    return None


def _agreement(ref: np.ndarray, out: np.ndarray, tol: Tolerance, class_axis: int = -1) -> tuple[float, bool]:
    """Top-1 agreement over the class axis, each other position one decision: a classifier's row,
    each token of a decoder's (batch, seq, vocab) logits, each pixel of a segmentation's (N, C, H, W)."""
    if ref.ndim < 2 or not ref.size:
        return 1.0, True
    ref, out = np.moveaxis(ref, class_axis, -1), np.moveaxis(out, class_axis, -1)
    ref, out = ref.reshape(-1, ref.shape[-1]), out.reshape(-1, out.shape[-1])
    ref_top, out_top = ref.argmax(-1), out.argmax(-1)
    agreement = float((ref_top == out_top).mean())
    if len(ref) >= MIN_ROWS_FOR_AGREEMENT:
        return agreement, agreement >= tol.min_top1_agreement
    rows = np.arange(len(ref))
    gap = ref[rows, ref_top] - ref[rows, out_top]
    return agreement, bool(np.all(gap <= tol.tie_margin)) and (tol.min_top1_agreement < 1.0 or agreement == 1.0)


def compare_outputs(reference: dict, outputs: dict, precision: str = "fp32", spec=None) -> Comparison:
    """Every output against the reference's, each at the model's tolerance for it (`spec`), the
    first failure reported by output name."""
    if not isinstance(outputs, dict) or set(outputs) != set(reference):
        got = sorted(outputs) if isinstance(outputs, dict) else type(outputs).__name__
        return Comparison(False, f"outputs {got} differ from the reference's {sorted(reference)}")
    results = {}
    for name in reference:
        result = compare(reference[name], outputs[name], precision, spec.tolerance(precision, name) if spec else None,
                         spec.class_axis if spec and name in spec.logits else -1)
        if not result:
            return Comparison(False, f"output {name}: {result.message}", result.max_abs, result.max_rel,
                              result.worst_index, result.top1_agreement, result.scale,
                              {name: {"max_abs": result.max_abs, "scale": result.scale}})
        results[name] = result
    worst = max(results.values(), key=lambda r: r.max_abs)
    return Comparison(True, "; ".join(f"{n}: {r.message}" for n, r in results.items()), worst.max_abs,
                      worst.max_rel, worst.worst_index, min(r.top1_agreement for r in results.values()), worst.scale,
                      {n: {"max_abs": r.max_abs, "scale": r.scale} for n, r in results.items()})

