"""The gate's decision on synthetic samples (no benchmark runs): identical distributions pass, shifted
ones fail, too few samples or a noisy process spread are reported as too noisy, and the correction
over many benchmarks keeps a family of A/A comparisons quiet."""
from __future__ import annotations

import math

import numpy as np
import pytest

# The gate is a CI tool with scipy in requirements.txt; the GPU kit's Python runs the models, not it.
pytest.importorskip("scipy", reason="the regression gate needs scipy (requirements.txt)")

from model.gate import environment
from model.gate.stats import IMPROVED, REGRESSED, TOO_NOISY, UNCHANGED, Settings, holm, judge, process_spread, resolution


def groups(rng, median: float, n_processes: int = 2, rounds: int = 50, cv: float = 0.02, process_cv: float = 0.0):
    out = []
    for _ in range(n_processes):
        centre = median * (1 + process_cv * rng.standard_normal())
        out.append(list(centre * np.exp(cv * rng.standard_normal(rounds))))
    return out


def one(base, head, clock="wall", **settings):
    (verdict,) = judge({"b": {"clock": clock, "base": base, "head": head}}, Settings(**settings))
    return verdict


def test_identical_distributions_are_unchanged():
    rng = np.random.default_rng(1)
    v = one(groups(rng, 1e-3), groups(rng, 1e-3))
    assert v.verdict == UNCHANGED, v
    assert 0.05 <= v.sdr < 0.1 and v.noise_floor < 0.02 and abs(v.change) < 0.02


def test_a_shift_beyond_the_sdr_regresses_and_the_reverse_improves():
    rng = np.random.default_rng(2)
    base, slower = groups(rng, 1e-3), groups(rng, 1.2e-3)
    v = one(base, slower)
    assert v.verdict == REGRESSED and v.significant and v.change == pytest.approx(0.2, abs=0.02), v
    assert one(slower, base).verdict == IMPROVED


def test_a_significant_shift_below_the_minimum_effect_does_not_fail():
    rng = np.random.default_rng(3)
    v = one(groups(rng, 1e-3, cv=0.002), groups(rng, 1.03e-3, cv=0.002))
    assert v.significant and v.verdict == UNCHANGED and v.sdr == pytest.approx(0.05), v


def test_process_to_process_noise_raises_the_floor_instead_of_failing():
    # Rounds inside a process are tight (0.5%), processes differ by ~10%: the pooled test is
    # significant, but the change is within what unchanged code does between processes.
    base = [[1.00e-3] * 40, [1.10e-3] * 40]
    head = [[1.12e-3] * 40, [1.03e-3] * 40]
    v = one([list(np.array(g) * (1 + 0.005 * np.sin(np.arange(40)))) for g in base],
            [list(np.array(g) * (1 + 0.005 * np.cos(np.arange(40)))) for g in head])
    assert v.noise_floor == pytest.approx(0.1, abs=0.01) and v.sdr == pytest.approx(0.2, abs=0.02)
    assert v.verdict == UNCHANGED, v


def test_one_head_process_inside_the_base_range_is_too_noisy_not_a_regression_nor_a_pass():
    # Pooled, the head is 30% slower and significant, but its first process ran like the base:
    # one odd process (or one odd pair of base processes) must not decide alone either way.
    base = [[1.0, 1.01, 0.99] * 10, [1.02, 1.03, 1.01] * 10]
    head = [[1.01, 1.02, 1.0] * 10, [1.6, 1.61, 1.59] * 10]
    v = one(base, head, min_effect=0.05, floor_factor=0.1)
    assert v.significant and v.change > v.sdr and v.separated == 0 and v.verdict == TOO_NOISY, v
    assert "processes of the two sides overlap" in v.notes[-1]
    assert one(base, [head[1], head[1]], min_effect=0.05, floor_factor=0.1).verdict == REGRESSED


def test_too_few_samples_or_one_process_are_too_noisy_never_a_pass():
    few = one([[1.0, 1.1], [1.05]], [[2.0], [2.1, 2.2]])
    assert math.isinf(few.resolution) and few.verdict == TOO_NOISY and "too few samples" in few.notes[0]
    rng = np.random.default_rng(4)
    lone = one(groups(rng, 1e-3, n_processes=1), groups(rng, 1e-3, n_processes=1))
    assert lone.noise_floor is None and lone.verdict == TOO_NOISY and "two processes" in lone.notes[0]


def test_a_stored_spread_enters_the_noise_floor():
    rng = np.random.default_rng(5)
    b = {"clock": "gpu", "base": groups(rng, 1e-4), "head": groups(rng, 1.15e-4), "stored_spread": 0.1}
    (v,) = judge({"x": b})
    assert v.noise_floor == pytest.approx(0.1) and v.verdict == UNCHANGED  # 15% < 2 x 10%
    (v,) = judge({"x": {**b, "stored_spread": 0.01}})
    assert v.verdict == REGRESSED


def test_resolution_shrinks_with_more_samples_and_is_inf_when_alpha_is_out_of_reach():
    rng = np.random.default_rng(6)
    x = np.exp(0.05 * rng.standard_normal(200))
    assert resolution(x[:20], 0.001) > resolution(x, 0.001) > 0
    assert math.isinf(resolution(x[:3], 0.001))


def test_holm_rejects_step_down_and_stops_at_the_first_acceptance():
    assert holm([0.001, 0.04, 0.03], 0.05) == [True, False, False]
    assert holm([0.001, 0.02, 0.012], 0.05) == [True, True, True]
    assert holm([0.2, 0.3], 0.05) == [False, False]


def test_many_aa_benchmarks_stay_quiet_and_a_real_regression_among_them_is_found():
    rng = np.random.default_rng(7)
    family = {f"b{i}": {"clock": "wall", "base": groups(rng, 1e-3, process_cv=0.01),
                        "head": groups(rng, 1e-3, process_cv=0.01)} for i in range(40)}
    verdicts = judge(family)
    assert [v.verdict for v in verdicts].count(REGRESSED) == 0
    family["b0"]["head"] = groups(rng, 1.3e-3, process_cv=0.01)
    assert [v.name for v in judge(family) if v.verdict == REGRESSED] == ["b0"]


def test_a_subset_is_corrected_for_the_whole_family():
    base, head = [[1.0, 1.01, 0.99] * 4, [1.0, 1.02, 0.98] * 4], [[1.2, 1.21, 1.19] * 4, [1.2, 1.22, 1.18] * 4]
    alone = judge({"x": {"clock": "wall", "base": base, "head": head}})[0]
    in_family = judge({"x": {"clock": "wall", "base": base, "head": head}}, family_size=10_000)[0]
    assert alone.resolution < in_family.resolution


def test_bad_settings_and_timings_are_named():
    with pytest.raises(ValueError, match=r"alpha=1.5: expected a number in \(0, 1\)"):
        Settings(alpha=1.5)
    with pytest.raises(ValueError, match="benchmark b: expected positive timings"):
        one([[1.0, 0.0]], [[1.0, 1.0]])


def test_process_spread_is_the_ratio_of_process_medians():
    assert process_spread([[1.0, 1.0, 5.0], [1.2, 1.2]]) == pytest.approx(0.2)
    assert process_spread([[1.0]]) is None


def test_a_different_tensorrt_is_an_error_naming_the_difference():
    a = {"gpu": {"gpu": "NVIDIA H200", "cuda_driver": 12080}, "libraries": {"tensorrt": "8.6.1", "torch": "2.11"}}
    b = {"gpu": {"gpu": "NVIDIA H200", "cuda_driver": 12080}, "libraries": {"tensorrt": "10.3.0", "torch": "2.11"}}
    assert environment.require_same({"base": [a, a], "head": [a]})["TensorRT"] == "8.6.1"
    with pytest.raises(environment.EnvironmentMismatch, match=r"base process 1 vs head process 2: TensorRT: '8.6.1' vs '10.3.0'$"):
        environment.require_same({"base": [a], "head": [a, b]})
