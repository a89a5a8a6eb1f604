"""`python -m model.gate proof`: does the gate stay quiet on unchanged code and catch real slowdowns?

A chain of fresh processes of the unchanged checkout (M) and, spread between them, a chain of a
patched copy with injected slowdowns (C; model/gate/inject.py, appended to the copy's
benchmarks/conftest.py only) which runs only the benchmarks named by --detect-*. Comparison i takes
2m consecutive M processes in the roles A B B A (m = --processes): an A/A comparison of unchanged
code, exactly what the gate runs on a pull request. Detection i compares that comparison's A side
with m consecutive C processes, on the --detect-* benchmarks, corrected for the A/A family's size.
With --step 2m (the default) no process serves two comparisons: the counts are of independent
trials. A smaller step lets neighbouring comparisons share processes, roles rotating (a process that
was head is base in the next); each comparison is still a valid one, and the false-failure count
an unbiased count of comparisons, but the trials are not independent: the summary says so. The
host and GPU injections touch disjoint benchmarks (end-to-end vs device-resident), so one copy
carries both.
"""
from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path

from model.gate import report, sampling
from model.gate.stats import IMPROVED, REGRESSED

IGNORE = shutil.ignore_patterns(".git", ".venv", ".cache", "out", "__pycache__", ".pytest_cache", ".hypothesis",
                                ".benchmarks", "artifacts", "*.pyc")


def add_parser(sub) -> None:
    from model.gate.cli import _checkout, _common, _positive_int

    p = sub.add_parser("proof", help="A/A comparisons and injected slowdowns: false-failure and detection counts")
    p.add_argument("--checkout", type=_checkout, default=Path.cwd(), help="checkout to prove on (default: cwd)")
    p.add_argument("--trials", type=_positive_int, default=10, help="A/A and injection comparisons (default %(default)s)")
    p.add_argument("--step", type=int, default=0,
                   help="main-chain processes between the starts of neighbouring comparisons (default 2 x --processes: "
                        "independent comparisons; 1 shares processes between neighbours, see model/gate/proof.py)")
    p.add_argument("--focus", default="", help="substring of benchmark names whose A/A failures the summary counts apart")
    p.add_argument("--host-us", type=float, default=0.0, help="busy-wait added after each end-to-end infer() (us)")
    p.add_argument("--host-backend", default="tensorrt", help="backend-name prefix of the runners slowed (default %(default)s)")
    p.add_argument("--detect-host", action="append", default=[], metavar="NODEID",
                   help="benchmark node id the host slowdown must be flagged on (repeatable)")
    p.add_argument("--gpu-fraction", type=float, default=0.0, help="extra GPU work per TensorRT graph replay, e.g. 0.10")
    p.add_argument("--detect-gpu", action="append", default=[], metavar="NODEID",
                   help="benchmark node id the GPU slowdown must be flagged on (repeatable)")
    p.add_argument("--sdr-k", default="fp16", help="substring of the benchmarks whose SDR the summary lists")
    p.add_argument("--budget-s", type=float, default=0.0,
                   help="start no trial that would end past this many seconds (0: no limit); the summary says how many ran")
    _common(p, processes=2)


def injected_copy(checkout: Path, host_us: float, host_backend: str, gpu_fraction: float) -> Path:
    dst = Path(tempfile.mkdtemp(prefix="gate-proof-")) / "injected"
    shutil.copytree(checkout, dst, ignore=IGNORE)
    lines = ["", "# ---- added by model.gate.proof to this copy only: injected slowdowns ----",
             "from model.gate import inject as _gate_inject"]
    if host_us:
        lines.append(f"runner_pool = _gate_inject.host_delay_fixture({host_us * 1e-6!r}, {host_backend!r})")
    if gpu_fraction:
        lines.append(f"_gate_inject.pad_tensorrt_graphs({gpu_fraction!r})")
    with open(dst / "benchmarks" / "conftest.py", "a") as f:
        f.write("\n".join(lines) + "\n")
    return dst


def _with_cache(args_list: list[str], checkout: Path) -> list[str]:
    # Every side, the copy included, uses the checkout's trained weights and engines. One token: as two,
    # pytest would take the path for a test path before conftest.py declares the option, and load
    # the checkout's conftest.py into the copy's session.
    if any(a.startswith("--cache-dir") for a in args_list):
        return args_list
    return [*args_list, f"--cache-dir={checkout / '.cache'}"]


def merged(label: str, parts: list[sampling.Side]) -> sampling.Side:
    """One side made of several single-process sides."""
    side = sampling.Side(label, parts[0].checkout)
    for part in parts:
        side.machine_infos += part.machine_infos
        for name, groups in part.groups.items():
            if side.clocks.setdefault(name, part.clocks[name]) != part.clocks[name]:
                raise sampling.SamplingError(f"benchmark {name}: timed on different clocks in different processes")
            side.groups.setdefault(name, []).extend(groups)
    return side


def schedule(trials: int, processes: int, step: int) -> tuple[list, list, int, int]:
    """Windows of the main chain (unchanged code) and of the injected copy's chain.

    Comparison i takes main processes [i*step, i*step + 2m) in the roles A B B A ... (m = processes
    per side); detection i takes copy processes [i*cstep, i*cstep + m). step = 2m: no process serves
    two comparisons (independent trials); a smaller step lets neighbouring comparisons share
    processes, with rotating roles, to save device time."""
    roles = sampling.interleaved(["A", "B"], processes)
    cstep = processes if step >= 2 * processes else max(1, step // 2)
    main = [[(i * step + j, r) for j, r in enumerate(roles)] for i in range(trials)]
    copy = [[i * cstep + j for j in range(processes)] for i in range(trials)]
    return main, copy, (trials - 1) * step + 2 * processes, (trials - 1) * cstep + processes


def run(args, progress=print) -> dict:
    detect = [*args.detect_host, *args.detect_gpu]
    copy = injected_copy(args.checkout, args.host_us, args.host_backend, args.gpu_fraction) if detect else None
    try:
        return _run(args, progress, copy, detect)
    finally:  # a failed process must not leave the copy behind
        if copy is not None:
            shutil.rmtree(copy.parent, ignore_errors=True)


def _run(args, progress, copy: Path | None, detect: list[str]) -> dict:
    from model.gate.cli import decide, settings_of

    settings = settings_of(args)
    checkout = args.checkout
    common = _with_cache(list(args.pytest_args), checkout)
    main_args = [*(["-k", args.keyword] if args.keyword else []), *common]
    step = args.step or 2 * args.processes
    windows, cwindows, n_main, n_copy = schedule(args.trials, args.processes, step)
    if copy is None:
        n_copy = 0
    # Copy processes spread evenly between the main ones, so both chains see the same drift.
    order = sorted([(j / n_main, "M", j) for j in range(n_main)] + [((k + 0.5) / max(n_copy, 1), "C", k) for k in range(n_copy)])
    progress(f"plan: {n_main} processes of the checkout, {n_copy} of the injected copy, {args.trials} comparisons "
             f"(step {step}: {'independent' if step >= 2 * args.processes else 'neighbouring comparisons share processes'})")
    done: dict[tuple[str, int], sampling.Side] = {}
    seconds = {"M": [], "C": []}
    start = time.perf_counter()
    for _, kind, j in order:
        elapsed = time.perf_counter() - start
        if args.budget_s and seconds[kind] and elapsed + max(seconds[kind]) > args.budget_s:
            progress(f"budget: {elapsed:.0f} s spent; starting no more processes")
            break
        side = (sampling.Side(f"M{j + 1}", checkout, main_args) if kind == "M"
                else sampling.Side(f"C{j + 1}", copy, common, targets=detect))
        stem = args.out / "raw" / side.label
        side.add(sampling.run_process(side, args.python, stem.with_suffix(".json"), stem.with_suffix(".log")))
        seconds[kind].append(side.seconds[-1])
        done[(kind, j)] = side
        if kind == "C" and j == 0:  # what the GPU padding achieved (model/gate/inject.py logs it)
            for text in stem.with_suffix(".log").read_text(errors="replace").splitlines():
                if text.startswith("[gate proof]"):
                    progress(f"   C1: {text}")
    results = {"aa": [], "host": [], "gpu": [], "sdr": {}, "seconds": seconds, "planned": args.trials,
               "elapsed": time.perf_counter() - start, "step": step}
    for i, window in enumerate(windows):
        if not all(("M", j) in done for j, _ in window):
            continue
        a = merged("A", [done[("M", j)] for j, r in window if r == "A"])
        b = merged("B", [done[("M", j)] for j, r in window if r == "B"])
        verdicts, env, _ = decide(a, b, settings)
        report.write(args.out / f"aa-{i + 1}", verdicts, settings, env)
        bad = [v.name for v in verdicts if v.verdict == REGRESSED]
        improved = [v.name for v in verdicts if v.verdict == IMPROVED]
        focus = [n for n in bad if args.focus in n]
        results["aa"].append({"regressed": bad, "improved": improved, "n": len(verdicts), "focus": focus,
                              "n_focus": sum(args.focus in v.name for v in verdicts),
                              "too_noisy": sum(v.verdict.startswith("too") for v in verdicts)})
        for v in verdicts:
            if args.sdr_k in v.name:
                results["sdr"].setdefault(v.name, []).append((v.clock, v.noise_floor, v.sdr))
        line = (f"A/A {i + 1}: {len(bad)} regressed, {len(improved)} improved of {len(verdicts)}"
                f"{' (' + ', '.join(bad + improved) + ')' if bad or improved else ''}")
        cw = cwindows[i]
        if copy is not None and all(("C", k) in done for k in cw):
            c = merged("C", [done[("C", k)] for k in cw])
            injected, _, _ = decide(a, c, settings, family_size=len(verdicts))
            report.write(args.out / f"injected-{i + 1}", injected, settings, env)
            by = {v.name: v for v in injected}
            for key, names in (("host", args.detect_host), ("gpu", args.detect_gpu)):
                for name in names:
                    v = by.get(name)
                    if v is None:
                        raise sampling.SamplingError(f"--detect-{key} {name}: no such benchmark ran in both the "
                                                     f"checkout and the copy (ran: {sorted(by)})")
                    results[key].append(v.verdict == REGRESSED)
                    line += f"; {key} {name.split('::')[-1]}: {100 * v.change:+.1f}% (SDR {100 * v.sdr:.1f}%) {v.verdict}"
        progress(line)
    return results


def summary(args, results: dict) -> tuple[str, bool]:
    lines, ok = ["== gate proof summary"], True
    trials = results["aa"]
    if trials:
        fails = sum(bool(t["regressed"]) for t in trials)
        sel = f"-k {args.keyword!r}" if args.keyword else "every benchmark"
        lines.append(f"A/A ({sel}): {fails} gate failures in {len(trials)} comparisons "
                     f"({sum(len(t['regressed']) for t in trials)} of {sum(t['n'] for t in trials)} verdicts regressed, "
                     f"{sum(len(t['improved']) for t in trials)} improved, {sum(t['too_noisy'] for t in trials)} too noisy)")
        if args.focus:
            lines.append(f"A/A on the {trials[0]['n_focus']} benchmarks named *{args.focus}*: "
                         f"{sum(bool(t['focus']) for t in trials)} failures in {len(trials)} comparisons")
        ok &= fails == 0
    for key, label in (("host", f"+{args.host_us:g} us host per infer"), ("gpu", f"+{100 * args.gpu_fraction:g}% GPU time")):
        hits = results[key]
        if hits:
            lines.append(f"{label}: detected in {sum(hits)} of {len(hits)} trials")
            ok &= sum(hits) >= 0.9 * len(hits)
    if len(results["aa"]) < results["planned"]:
        lines.append(f"only {len(results['aa'])} of {results['planned']} comparisons completed (budget)")
        ok = False
    if results["step"] < 2 * args.processes:
        lines.append(f"step {results['step']}: neighbouring comparisons share processes (roles rotate); each comparison "
                     "is a valid A B B A comparison, but the counts are not of independent trials")
    if results["sdr"]:
        lines.append(f"smallest detectable regression, median (max) over the A/A trials, benchmarks with {args.sdr_k!r}:")
        for name, rows in sorted(results["sdr"].items()):
            floors = [f for _, f, _ in rows if f is not None]
            sdrs = [s for _, _, s in rows]
            lines.append(f"  {name.split('::')[-1]:<48} {rows[0][0]:>4} clock  noise floor "
                         f"{100 * statistics.median(floors) if floors else float('nan'):5.1f}%  "
                         f"SDR {100 * statistics.median(sdrs):5.1f}% ({100 * max(sdrs):.1f}%)")
    for kind, label in (("M", "checkout"), ("C", "injected copy")):
        secs = results["seconds"][kind]
        if secs:
            lines.append(f"{label} processes: {len(secs)}, median {statistics.median(secs):.1f} s, total {sum(secs):.0f} s")
    lines.append(f"elapsed {results['elapsed']:.0f} s")
    lines.append("PROOF " + ("PASSED" if ok else "FAILED") + ": 0 A/A failures and >= 90% detection required")
    return "\n".join(lines), ok


def main(args) -> int:
    args.out.mkdir(parents=True, exist_ok=True)
    results = run(args, progress=lambda s: print(s, flush=True))
    text, ok = summary(args, results)
    (args.out / "proof-summary.txt").write_text(text + "\n")
    print(text)
    return 0 if ok else 1
