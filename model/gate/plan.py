"""From a probe's measurements to the proof's settings (`python -m model.gate probe` prints this last).

For n processes per side, the gate's t-test flags a change above t(alpha/m, 2n-2) x sd x sqrt(2/n)
(model/gate/stats.py); to flag it in 9 trials of 10 the change must clear that by about 1.28
standard errors more (the one-sided 90% normal quantile). With the probe's per-process sd of each
judged benchmark, the injected effect it measured (else the nominal one), and its seconds per
process, this finds the fewest processes per side that give both injections that power and the
seconds the proof would take (its chains: --step = --copy-step = n, 2 whole-set
comparisons of 3 per side, one whole-set warm-up). `chain_seconds` is the one cost model: the proof's
printed projection (model/gate/proof.py) uses it too, with the rates it measured.
"""
from __future__ import annotations

import math
import statistics

import numpy as np
from scipy.stats import norm
from scipy.stats import t as student_t

from model.gate import sampling
from model.gate.stats import log_medians, process_sd

TRIALS, WHOLE_TRIALS, WHOLE_PER_SIDE, OVERHEAD_S = 10, 2, 3, 20.0
Z90 = float(norm.isf(0.10))


def needed(sd: float, n: int, alpha: float) -> float:
    """The relative change detected with 90% power by n + n processes at this sd."""
    return math.expm1((float(student_t.isf(alpha / 2, 2 * n - 2)) + Z90) * sd * math.sqrt(2 / n))


def counts(n: int, step: int, copy_step: int = 0, trials: int = TRIALS, whole_trials: int = WHOLE_TRIALS,
           whole_per_side: int = WHOLE_PER_SIDE) -> tuple[int, int, int]:
    """Processes of the selection chain, the injected copy's chain and the whole-set chain
    (`schedule` below), the warm-up not included."""
    _, _, n_main, n_copy = schedule(trials, n, step, copy_step)
    return n_main, n_copy, 2 * whole_per_side * whole_trials


def schedule(trials: int, processes: int, step: int, copy_step: int = 0) -> tuple[list, list, int, int]:
    """Windows of the main chain (unchanged code) and of the injected copy's chain.

    Comparison i takes main processes [i*step, i*step + 2m) in the roles A B B A ... (m = processes
    per side); detection i takes copy processes [i*cstep, i*cstep + m). step = 2m: no process serves
    two comparisons (independent trials); a smaller step lets neighbouring comparisons share
    processes, with rotating roles, to save device time."""
    roles = sampling.interleaved(["A", "B"], processes)
    cstep = copy_step or (processes if step >= 2 * processes else max(1, step // 2))
    main = [[(i * step + j, r) for j, r in enumerate(roles)] for i in range(trials)]
    copy = [[i * cstep + j for j in range(processes)] for i in range(trials)]
    return main, copy, (trials - 1) * step + 2 * processes, (trials - 1) * cstep + processes


def chain_seconds(n_main: int, n_copy: int, n_whole: int, t_sel: float, t_copy: float, t_whole: float) -> float:
    return n_main * t_sel + n_copy * t_copy + n_whole * t_whole


def proof_seconds(n: int, step: int, t_sel: float, t_copy: float, t_whole: float, copy_step: int = 0,
                  t_warm: float | None = None, **chains) -> float:
    """The whole proof: one warm-up (a whole-set process unless `t_warm`), the three chains, and
    OVERHEAD_S for the fork server, the copy and the decisions."""
    return ((t_whole if t_warm is None else t_warm) + chain_seconds(*counts(n, step, copy_step, **chains),
                                                                    t_sel, t_copy, t_whole) + OVERHEAD_S)


def _sd(side, name) -> float | None:
    groups = side.groups.get(name, []) if side else []
    return process_sd(log_medians(groups))[0] if len(groups) > 2 else None


def suggest(args, sides: dict, modes: list[str], injected, m: int, budget_s: float = 500.0) -> list[str]:
    alpha = args.alpha / m
    # Pinned or not: the mode whose median sd over the benchmarks is lower.
    scores = {md: statistics.median(s for s in (_sd(sides[md], n) for n in sides[md].groups) if s is not None)
              for md in modes if len(sides[md].seconds) > 2}
    if not scores:
        return ["no suggestion: fewer than 3 processes in every mode"]
    mode = min(scores, key=scores.get)
    ref = sides[mode]
    t_sel = statistics.median(ref.seconds)
    t_copy = injected.seconds[-1] if injected and injected.seconds else 0.6 * t_sel
    t_whole = sides["W"].seconds[0] if sides["W"].seconds else 3 * t_sel
    lines = [f"== suggestion: {'pinned' if mode == 'P' else 'unpinned'} (median sd {100 * scores[mode]:.2f}% vs "
             + ", ".join(f"{md} {100 * v:.2f}%" for md, v in scores.items() if md != mode) + f"); seconds per process: "
             f"selection {t_sel:.1f}, copy {t_copy:.1f}, whole set {t_whole:.1f} (fresh: an upper bound)"]
    targets = []
    for name in args.detect:
        sd = _sd(ref, name)
        if sd is None:
            continue
        median = float(np.exp(log_medians(ref.groups[name]).mean()))
        measured = None
        if injected is not None and name in injected.groups:
            measured = float(np.expm1(log_medians(injected.groups[name]).mean() - math.log(median)))
        nominal = args.gpu_fraction if ref.clocks[name] == "gpu" else args.host_us * 1e-6 / median
        effect = measured if measured is not None else nominal
        targets.append((name, ref.clocks[name], sd, effect, nominal))
    header = f"{'n/side':>6} {'STEP=n s':>9} {'STEP=2n s':>10}  " + "  ".join(
        f"{n.split('[')[-1].rstrip(']').replace('simplecnn-', '')[:26]:>26}" for n, *_ in targets)
    lines += [f"  {n.split('::')[-1]}: {clock} sd {100 * sd:.2f}%, injected effect {100 * e:+.1f}% (nominal {100 * nom:+.1f}%)"
              for n, clock, sd, e, nom in targets]
    lines.append("change needed for 90% detection (x = the injection clears it), projected proof seconds:")
    lines.append(header)
    chosen = {}
    for n in range(3, 11):
        half, full = proof_seconds(n, n, t_sel, t_copy, t_whole, n), proof_seconds(n, 2 * n, t_sel, t_copy, t_whole, n)
        cells = []
        for name, _, sd, effect, _ in targets:
            need = needed(sd, n, alpha)
            ok = effect >= need
            cells.append(f"{100 * need:>24.1f}%{'x' if ok else ' '}")
            if ok and half <= budget_s:
                chosen.setdefault(name, (n, half, full))
        lines.append(f"{n:>6} {half:>9.0f} {full:>10.0f}  " + "  ".join(cells))
    gpu = [c for c in chosen.items() if "device_resident" in c[0]]
    host = [c for c in chosen.items() if "device_resident" not in c[0]]
    if not gpu or not host:
        lines.append(f"no n up to 10 gives both injections 90% power within {budget_s:.0f} s: "
                     f"host {'ok' if host else 'not'}, GPU {'ok' if gpu else 'not'}; quote the SDRs as measured")
        return lines
    name, (n_host, *_) = min(host, key=lambda c: c[1][0])
    n = max(n_host, gpu[0][1][0])
    half, full = proof_seconds(n, n, t_sel, t_copy, t_whole, n), proof_seconds(n, 2 * n, t_sel, t_copy, t_whole, n)
    step = 2 * n if full <= budget_s else n
    cpus = f" --cpus {','.join(map(str, sorted(args.cpus)))}" if mode == "P" and args.cpus else ""  # else unpinned
    lines.append(f"suggested: python -m model.gate proof --processes {n} --step {step} --copy-step {n}{cpus} "
                 f"--detect-host '{name}' (with the probe's selection and injection; about "
                 f"{full if step == 2 * n else half:.0f} s; --step {step}: "
                 f"{'independent comparisons' if step == 2 * n else 'neighbours share half their processes'})")
    return lines
