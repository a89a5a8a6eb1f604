"""The decision for one benchmark: significance (Mann-Whitney U) *and* an effect beyond the noise.

Samples come in groups, one group per fresh process. A test on the pooled samples alone cries wolf:
two processes of the same code differ by more than the rounds inside one process do (memory layout,
clocks, whatever ran beside it), and pooled rounds hide that. So a change must also exceed the
*noise floor*, the spread between processes of the same code, measured on each side (and, for a
stored baseline, when it was recorded), and every head process must sit on the same side of every
base process (per-process medians fully separated), so one odd process cannot decide alone.
The *smallest detectable regression* (SDR) is the largest
of: the minimum effect worth failing for, `floor_factor` x the noise floor, and the smallest slowdown
of the base's own samples the test would call significant at the corrected alpha (the resolution
that the number and spread of samples allow). A benchmark whose SDR exceeds `max_detectable` is
"too noisy to gate": reported as such, never counted as a pass.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import mannwhitneyu

REGRESSED, IMPROVED, UNCHANGED, TOO_NOISY = "regressed", "improved", "unchanged", "too noisy to gate"


@dataclass(frozen=True)
class Settings:
    alpha: float = 0.01          # family-wise error rate over all benchmarks of one comparison (Holm)
    min_effect: float = 0.05     # a change smaller than this never fails the gate
    floor_factor: float = 2.0    # how many noise floors a change must exceed
    max_detectable: float = 0.5  # an SDR above this: the benchmark is too noisy to gate

    def __post_init__(self):
        for name, value, lo, hi in (("alpha", self.alpha, 0, 1), ("min_effect", self.min_effect, 0, math.inf),
                                    ("floor_factor", self.floor_factor, 0, math.inf),
                                    ("max_detectable", self.max_detectable, 0, math.inf)):
            if not lo < value < hi:
                raise ValueError(f"gate setting {name}={value!r}: expected a number in ({lo}, {hi})")


@dataclass
class Verdict:
    name: str
    clock: str                  # "gpu" (CUDA events) or "wall"
    base_median: float
    head_median: float
    ratio: float                # head / base: > 1 is slower
    p_value: float              # two-sided Mann-Whitney U on the pooled samples
    noise_floor: float | None   # relative spread between processes of the same code
    resolution: float           # smallest slowdown the test could call significant (inf: too few samples)
    sdr: float                  # smallest detectable regression
    verdict: str = UNCHANGED
    significant: bool = False
    separated: int = 0          # +1: every head process slower than every base process; -1 faster; 0 overlap
    samples: tuple[int, int] = (0, 0)
    processes: tuple[int, int] = (0, 0)
    notes: list[str] = field(default_factory=list)

    @property
    def change(self) -> float:
        return self.ratio - 1.0


def process_spread(groups: list[np.ndarray]) -> float | None:
    """max/min - 1 of the per-process medians; None with fewer than two processes."""
    if len(groups) < 2:
        return None
    medians = [float(np.median(g)) for g in groups]
    return max(medians) / min(medians) - 1.0


def resolution(samples: np.ndarray, alpha: float) -> float:
    """The smallest relative slowdown d such that `samples` against `samples * (1 + d)` gives p < alpha.

    Uses the base's own samples, so it reflects their count and their spread. inf when even an
    11-fold slowdown could not reach alpha (too few samples)."""
    samples = np.asarray(samples, dtype=float)

    def p_at(d: np.ndarray) -> np.ndarray:  # one vectorized test per candidate slowdown
        shifted = samples[None, :] * (1.0 + d[:, None])
        return mannwhitneyu(samples[None, :], shifted, axis=-1, alternative="two-sided", method="asymptotic").pvalue

    grid = np.concatenate([[0.0], np.geomspace(1e-4, 10.0, 60)])
    ok = np.flatnonzero(p_at(grid) < alpha)
    if not len(ok):
        return math.inf
    lo, hi = grid[max(ok[0] - 1, 0)], grid[ok[0]]
    fine = np.linspace(lo, hi, 41)[1:]  # refine within the coarse step (~17%) to under 0.5% of d
    return float(fine[np.flatnonzero(p_at(fine) < alpha)[0]])


def holm(p_values: list[float], alpha: float) -> list[bool]:
    """Holm's step-down procedure: which hypotheses are rejected at family-wise error rate alpha."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    rejected = [False] * len(p_values)
    m = len(p_values)
    for rank, i in enumerate(order):
        if p_values[i] > alpha / (m - rank):
            break
        rejected[i] = True
    return rejected


def _pool(groups: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(g, dtype=float) for g in groups])


def judge(benchmarks: dict[str, dict], settings: Settings = Settings(), family_size: int = 0) -> list[Verdict]:
    """benchmarks: name -> {"clock", "base": [group, ...], "head": [group, ...], "stored_spread": float|None}.

    Holm's correction runs over max(len(benchmarks), family_size) tests: a caller gating a subset
    of a larger comparison passes the larger size, so that a subset is never judged more leniently."""
    m = max(len(benchmarks), family_size, 1)
    strictest = settings.alpha / m
    verdicts = []
    for name, b in benchmarks.items():
        base, head = _pool(b["base"]), _pool(b["head"])
        if min(len(base), len(head)) == 0 or (base <= 0).any() or (head <= 0).any():
            raise ValueError(f"benchmark {name}: expected positive timings on both sides, received "
                             f"{len(base)} base and {len(head)} head samples")
        spreads = [s for s in (process_spread(b["base"]), process_spread(b["head"]), b.get("stored_spread")) if s is not None]
        floor = max(spreads) if spreads else None
        res = resolution(base, strictest)
        sdr = max(settings.min_effect, settings.floor_factor * floor if floor is not None else math.inf, res)
        p = float(mannwhitneyu(base, head, alternative="two-sided").pvalue)
        bm, hm = float(np.median(base)), float(np.median(head))
        v = Verdict(name, b["clock"], bm, hm, hm / bm, p, floor, res, sdr,
                    samples=(len(base), len(head)), processes=(len(b["base"]), len(b["head"])))
        base_meds, head_meds = [float(np.median(g)) for g in b["base"]], [float(np.median(g)) for g in b["head"]]
        v.separated = 1 if min(head_meds) > max(base_meds) else -1 if max(head_meds) < min(base_meds) else 0
        if floor is None:
            v.notes.append("no noise floor: needs at least two processes on one side")
        if math.isinf(res):
            v.notes.append(f"too few samples ({len(base)}) to reach p < {strictest:.2g}")
        verdicts.append(v)
    padded = [v.p_value for v in verdicts] + [1.0] * (m - len(verdicts))
    for v, significant in zip(verdicts, holm(padded, settings.alpha)):
        v.significant = significant
        if significant and v.ratio > 1 + v.sdr and v.separated == 1:
            v.verdict = REGRESSED
        elif significant and v.ratio < 1 / (1 + v.sdr) and v.separated == -1:
            v.verdict = IMPROVED
        elif significant and not 1 / (1 + v.sdr) <= v.ratio <= 1 + v.sdr:
            # A change beyond the SDR that not every process shows: neither a pass nor a failure.
            v.verdict = TOO_NOISY
            v.notes.append("the change exceeds the SDR, but the processes of the two sides overlap")
        elif v.sdr > settings.max_detectable:
            v.verdict = TOO_NOISY
        else:
            v.verdict = UNCHANGED
    return verdicts
