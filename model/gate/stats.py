"""The decision for one benchmark, with the process as the unit of measurement.

Samples come in groups, one group per fresh process. Rounds inside one process agree more closely
than processes do (memory layout, the cores the scheduler gave it, clocks, neighbours), so a test on
pooled rounds treats one process's luck as thousands of independent observations and cries wolf:
on the H200 it failed unchanged code 2 times in 2 (a 0.2% spread between two processes, +6.7%
between sides). Here each process gives one number per benchmark, the median of its rounds (robust
to the odd slow round), and the comparison is between those numbers:

- the noise floor is the process-to-process standard deviation of log(median), pooled over both
  sides (each side around its own mean, so a real change does not inflate it);
- the test is a two-sample t-test on the log medians (df = processes - 2), Holm-corrected over the
  family of benchmarks at `alpha`: with n processes per side a change must exceed
  t(alpha / m, df) x sd x sqrt(2 / n), which is the *smallest detectable regression* (SDR) reported,
  never below `min_effect`; few processes or a large spread give a large SDR, and an SDR above
  `max_detectable` is reported as "too noisy to gate", never as a pass;
- a rank guard that assumes no distribution: every head process must be slower than every base
  process (probability 1 / C(2n, n) under no change: 1/252 for 5 + 5), so one odd process cannot
  decide alone even where the normal tail of the t-test is too thin.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import t as student_t

REGRESSED, IMPROVED, UNCHANGED, TOO_NOISY = "regressed", "improved", "unchanged", "too noisy to gate"


@dataclass(frozen=True)
class Settings:
    alpha: float = 0.01          # family-wise error rate over all benchmarks of one comparison (Holm)
    min_effect: float = 0.05     # a change smaller than this never fails the gate
    max_detectable: float = 0.5  # an SDR above this: the benchmark is too noisy to gate
    min_gated: float = 0.5       # a run that could gate fewer than this share of its benchmarks is blind: it fails

    def __post_init__(self):
        for name, value, lo, hi in (("alpha", self.alpha, 0, 1), ("min_effect", self.min_effect, 0, math.inf),
                                    ("max_detectable", self.max_detectable, 0, math.inf)):
            if not lo < value < hi:
                raise ValueError(f"gate setting {name}={value!r}: expected a number in ({lo}, {hi})")
        if not 0 <= self.min_gated <= 1:
            raise ValueError(f"gate setting min_gated={self.min_gated!r}: expected a share in [0, 1]")


@dataclass
class Verdict:
    name: str
    clock: str                  # "gpu" (CUDA events) or "wall"
    base_median: float          # geometric mean of the per-process medians of each side
    head_median: float
    ratio: float                # head / base: > 1 is slower
    p_value: float              # two-sided t-test on the per-process log medians
    noise_floor: float | None   # process-to-process standard deviation, relative (exp(sd) - 1)
    resolution: float           # smallest change the test could call significant at alpha / m (inf: unreachable)
    sdr: float                  # smallest detectable regression: max(min_effect, resolution)
    verdict: str = UNCHANGED
    significant: bool = False
    separated: int = 0          # +1: every head process slower than every base process; -1 faster; 0 overlap
    samples: tuple[int, int] = (0, 0)
    processes: tuple[int, int] = (0, 0)
    notes: list[str] = field(default_factory=list)

    @property
    def change(self) -> float:
        return self.ratio - 1.0


def log_medians(groups: list) -> np.ndarray:
    """One number per process: log of the median of its rounds."""
    return np.log([float(np.median(np.asarray(g, dtype=float))) for g in groups])


def process_sd(*sides: np.ndarray) -> tuple[float | None, int]:
    """Pooled standard deviation of per-process log medians, each side around its own mean, and its
    degrees of freedom; (None, 0) with fewer than two processes on every side."""
    df = sum(len(x) - 1 for x in sides if len(x))
    if df < 1:
        return None, 0
    ss = sum(float(((x - x.mean()) ** 2).sum()) for x in sides if len(x))
    return math.sqrt(ss / df), df


def detectable(sd: float | None, df: int, n_base: int, n_head: int, alpha: float) -> float:
    """The smallest relative change a two-sided t-test at `alpha` calls significant with this spread
    and these process counts (inf without a spread)."""
    if sd is None or df < 1:
        return math.inf
    return math.expm1(float(student_t.isf(alpha / 2, df)) * sd * math.sqrt(1 / n_base + 1 / n_head))


def process_spread(groups: list) -> float | None:
    """max/min - 1 of the per-process medians (what a reader sees at a glance); None with one process."""
    if len(groups) < 2:
        return None
    x = log_medians(groups)
    return math.expm1(float(x.max() - x.min()))


def gated_share(verdicts: list) -> float:
    """The share of benchmarks the run could judge (anything but too noisy); 0 with none."""
    return sum(v.verdict != TOO_NOISY for v in verdicts) / len(verdicts) if verdicts else 0.0


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


def _t_test(xa: np.ndarray, xb: np.ndarray, sd: float | None, df: int) -> float:
    diff = float(xb.mean() - xa.mean())
    if sd is None:
        return 1.0
    se = sd * math.sqrt(1 / len(xa) + 1 / len(xb))
    if se == 0:
        return 0.0 if diff else 1.0
    return float(2 * student_t.sf(abs(diff) / se, df))


def judge(benchmarks: dict[str, dict], settings: Settings = Settings(), family_size: int = 0) -> list[Verdict]:
    """benchmarks: name -> {"clock", "base": [group, ...], "head": [group, ...]} (one group of
    samples per process).

    Holm's correction runs over max(len(benchmarks), family_size) tests: a caller gating a subset
    of a larger comparison passes the larger size, so that a subset is never judged more leniently."""
    m = max(len(benchmarks), family_size, 1)
    strictest = settings.alpha / m
    verdicts = []
    for name, b in benchmarks.items():
        sizes = [len(g) for g in (*b["base"], *b["head"])]
        values = np.concatenate([np.asarray(g, dtype=float) for g in (*b["base"], *b["head"])]) if sizes else np.array([])
        if not b["base"] or not b["head"] or min(sizes) == 0 or (values <= 0).any():
            raise ValueError(f"benchmark {name}: expected positive timings from at least one process on each side, "
                             f"received {len(b['base'])} base and {len(b['head'])} head processes")
        xa, xb = log_medians(b["base"]), log_medians(b["head"])
        sd, df = process_sd(xa, xb)
        res = detectable(sd, df, len(xa), len(xb), strictest)
        v = Verdict(name, b["clock"], math.exp(xa.mean()), math.exp(xb.mean()), math.exp(xb.mean() - xa.mean()),
                    _t_test(xa, xb, sd, df), None if sd is None else math.expm1(sd), res,
                    max(settings.min_effect, res), samples=(sum(map(len, b["base"])), sum(map(len, b["head"]))),
                    processes=(len(xa), len(xb)))
        v.separated = 1 if xb.min() > xa.max() else -1 if xb.max() < xa.min() else 0
        if sd is None:
            v.notes.append("no noise floor: needs at least two processes on one side")
        verdicts.append(v)
    padded = [v.p_value for v in verdicts] + [1.0] * (m - len(verdicts))
    for v, significant in zip(verdicts, holm(padded, settings.alpha)):
        v.significant = significant
        beyond = abs(math.log(v.ratio)) > math.log1p(settings.min_effect)
        if significant and beyond and v.separated == (1 if v.ratio > 1 else -1):
            v.verdict = REGRESSED if v.ratio > 1 else IMPROVED
        elif significant and beyond:
            # Significant on the process means, but some process of one side ran like the other's:
            # neither a pass nor a failure.
            v.verdict = TOO_NOISY
            v.notes.append("the change is significant, but the processes of the two sides overlap")
        elif v.sdr > settings.max_detectable:
            v.verdict = TOO_NOISY
        else:
            v.verdict = UNCHANGED
    return verdicts
