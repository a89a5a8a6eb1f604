"""The gate's decision on synthetic samples (no benchmark runs): identical distributions pass, shifted
ones fail, too few processes or a noisy process spread are reported as too noisy, and the correction
over many benchmarks keeps a family of A/A comparisons quiet."""
from __future__ import annotations

import math

import numpy as np
import pytest

# The gate is a CI tool with scipy in requirements.txt; the GPU kit's Python runs the models, not it.
pytest.importorskip("scipy", reason="the regression gate needs scipy (requirements.txt)")

from model.gate import environment
from model.gate.stats import IMPROVED, REGRESSED, TOO_NOISY, UNCHANGED, Settings, detectable, holm, judge, process_spread


def groups(rng, median: float, n_processes: int = 5, rounds: int = 50, cv: float = 0.02, process_cv: float = 0.0):
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


def test_process_to_process_noise_raises_the_sdr_instead_of_failing():
    # Rounds inside a process are tight (0.5%), processes differ by ~10%: a test on pooled rounds
    # would call +5% significant (p ~ 1e-20); the process is the unit here, and its spread sets the SDR.
    rng = np.random.default_rng(4)
    base, head = groups(rng, 1e-3, cv=0.005, process_cv=0.1), groups(rng, 1.05e-3, cv=0.005, process_cv=0.1)
    v = one(base, head)
    assert v.noise_floor == pytest.approx(0.1, abs=0.06) and v.sdr > 0.2 and v.verdict in (UNCHANGED, TOO_NOISY), v
    assert not v.significant


def test_one_head_process_inside_the_base_range_is_too_noisy_not_a_regression_nor_a_pass():
    # The head is 30% slower on average and the t-test calls it significant, but one head process ran
    # like the base: one odd process (or one odd pair of base processes) must not decide alone.
    base = [[1.0, 1.01, 0.99] * 10, [1.02, 1.03, 1.01] * 10, [1.01, 1.0, 1.02] * 10, [0.99, 1.0, 1.01] * 10]
    head = [[1.015, 1.02, 1.01] * 10, [1.6, 1.61, 1.59] * 10, [1.6, 1.62, 1.58] * 10, [1.61, 1.6, 1.59] * 10,
            [1.59, 1.6, 1.6] * 10, [1.6, 1.6, 1.61] * 10]
    v = one(base, head)
    assert v.significant and v.change > v.sdr and v.separated == 0 and v.verdict == TOO_NOISY, v
    assert "processes of the two sides overlap" in v.notes[-1]
    assert one(base, head[1:]).verdict == REGRESSED


def test_one_process_per_side_is_too_noisy_never_a_pass():
    rng = np.random.default_rng(5)
    lone = one(groups(rng, 1e-3, n_processes=1), groups(rng, 2e-3, n_processes=1))
    assert lone.noise_floor is None and math.isinf(lone.sdr) and lone.verdict == TOO_NOISY, lone
    assert "two processes" in lone.notes[0]


def test_two_processes_per_side_can_only_catch_gross_changes():
    # df = 2: the t quantile at 0.01 is 9.9, so the SDR is about 10 process sds, and it is reported.
    v = one([[1.0] * 9, [1.03] * 9], [[1.1] * 9, [1.133] * 9])
    assert v.noise_floor == pytest.approx(0.021, abs=0.001) and v.sdr == pytest.approx(0.23, abs=0.01), v
    assert v.separated == 1 and v.verdict == UNCHANGED


def test_detectable_shrinks_with_more_processes_and_is_inf_without_a_spread():
    sizes = [detectable(0.02, 2 * n - 2, n, n, 0.01 / 32) for n in (3, 5, 8)]
    assert sizes[0] > sizes[1] > sizes[2] > 0
    assert 0.07 < sizes[1] < 0.09  # 5 + 5 processes, sd 2%, 32 benchmarks: 7.9%
    assert math.isinf(detectable(None, 0, 1, 1, 0.01))


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


def test_process_effects_that_fool_a_pooled_rank_test_do_not_fail_the_gate():
    # What failed unchanged code on the H200: rounds inside a process agree to ~1%, processes differ by
    # ~3%. Pooled over rounds, a rank test calls such A/A pairs different; per process they are not.
    from scipy.stats import mannwhitneyu

    rng = np.random.default_rng(9)
    pooled_alarms = failures = 0
    for _ in range(10):
        family = {f"b{i}": {"clock": "wall", "base": groups(rng, 1e-4, rounds=200, cv=0.01, process_cv=0.03),
                            "head": groups(rng, 1e-4, rounds=200, cv=0.01, process_cv=0.03)} for i in range(32)}
        pooled_alarms += sum(mannwhitneyu(np.concatenate(b["base"]), np.concatenate(b["head"])).pvalue < 0.01 / 32
                             for b in family.values())
        failures += any(v.verdict == REGRESSED for v in judge(family))
    assert pooled_alarms > 50 and failures == 0, (pooled_alarms, failures)


def test_a_subset_is_corrected_for_the_whole_family():
    rng = np.random.default_rng(8)
    base, head = groups(rng, 1.0, process_cv=0.02), groups(rng, 1.2, process_cv=0.02)
    alone = judge({"x": {"clock": "wall", "base": base, "head": head}})[0]
    in_family = judge({"x": {"clock": "wall", "base": base, "head": head}}, family_size=10_000)[0]
    assert alone.resolution < in_family.resolution


def test_bad_settings_and_timings_are_named():
    with pytest.raises(ValueError, match=r"alpha=1.5: expected a number in \(0, 1\)"):
        Settings(alpha=1.5)
    with pytest.raises(ValueError, match="benchmark b: expected positive timings"):
        one([[1.0, 0.0]], [[1.0, 1.0]])
    with pytest.raises(ValueError, match="benchmark b: expected positive timings"):
        one([], [[1.0, 1.0]])


def test_process_spread_is_the_ratio_of_process_medians():
    assert process_spread([[1.0, 1.0, 5.0], [1.2, 1.2]]) == pytest.approx(0.2)
    assert process_spread([[1.0]]) is None


def test_a_different_tensorrt_is_an_error_naming_the_difference():
    a = {"gpu": {"gpu": "NVIDIA H200", "cuda_driver": 12080}, "libraries": {"tensorrt": "8.6.1", "torch": "2.11"}}
    b = {"gpu": {"gpu": "NVIDIA H200", "cuda_driver": 12080}, "libraries": {"tensorrt": "10.3.0", "torch": "2.11"}}
    assert environment.require_same({"base": [a, a], "head": [a]})["TensorRT"] == "8.6.1"
    with pytest.raises(environment.EnvironmentMismatch, match=r"base process 1 vs head process 2: TensorRT: '8.6.1' vs '10.3.0'$"):
        environment.require_same({"base": [a], "head": [a, b]})
