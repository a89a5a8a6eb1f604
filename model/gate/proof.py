"""`python -m model.gate proof`: does the gate stay quiet on unchanged code and catch real slowdowns?

Each trial runs its own fresh processes, interleaved: A and B are the unchanged checkout, C a copy
with injected slowdowns (model/gate/inject.py, appended to the copy's benchmarks/conftest.py only).
A vs B is one A/A comparison; A vs C one injection comparison on the benchmarks named by --detect-*.
A trial's A processes serve both of its comparisons: within each family (A/A trials, detections)
the trials share no process, so the counts are counts of independent trials; across families they
are paired, which is what a real pull request is (one base, one head). The injection comparison is
corrected for the A/A family's size, so the few benchmarks C runs are not judged more leniently.
The host and GPU injections touch disjoint benchmarks (end-to-end vs device-resident), so one copy
carries both.
"""
from __future__ import annotations

import shutil
import statistics
import sys
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
    p.add_argument("--trials", type=_positive_int, default=10, help="A/A and injection trials (default %(default)s)")
    p.add_argument("--full-trials", type=int, default=0,
                   help="how many of the trials run every benchmark (no -k) on A and B; their A/A comparison covers "
                        "the -k selection too, so they count in both A/A figures")
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


def run(args, progress=print) -> dict:
    from model.gate.cli import decide, settings_of

    settings = settings_of(args)
    checkout = args.checkout
    common = _with_cache(list(args.pytest_args), checkout)
    aa_args = [*(["-k", args.keyword] if args.keyword else []), *common]
    detect = [*args.detect_host, *args.detect_gpu]
    copy = injected_copy(checkout, args.host_us, args.host_backend, args.gpu_fraction) if detect else None
    results = {"aa": [], "full": [], "host": [], "gpu": [], "sdr": {}, "seconds": [], "planned": args.trials}
    start = time.perf_counter()
    plan = [("full" if t < args.full_trials else "aa", t) for t in range(args.trials)]
    for kind, t in plan:
        elapsed = time.perf_counter() - start
        per = max(results["seconds"]) if results["seconds"] else 0.0
        if args.budget_s and elapsed + per > args.budget_s:
            progress(f"budget: {elapsed:.0f} s spent, a trial takes ~{per:.0f} s; not starting {kind} trial {t + 1}")
            continue
        t0 = time.perf_counter()
        raw = args.out / f"{kind}-{t + 1}"
        a = sampling.Side("A", checkout, aa_args if kind == "aa" else common)
        b = sampling.Side("B", checkout, aa_args if kind == "aa" else common)
        sides = [a, b]
        c = None
        if copy is not None:
            c = sampling.Side("C", copy, common, targets=detect)
            sides.append(c)
        progress(f"== {kind} trial {t + 1}")
        sampling.measure(sides, args.processes, raw, args.python, progress=lambda s: None)
        verdicts, env, _ = decide(a, b, settings)
        report.write(raw, verdicts, settings, env)
        bad = [v.name for v in verdicts if v.verdict == REGRESSED]
        improved = [v.name for v in verdicts if v.verdict == IMPROVED]
        row = {"regressed": bad, "improved": improved, "n": len(verdicts),
               "too_noisy": sum(v.verdict.startswith("too") for v in verdicts)}
        results["aa"].append(row)
        if kind == "full":
            results["full"].append(row)
        for v in verdicts:
            if args.sdr_k in v.name:
                results["sdr"].setdefault(v.name, []).append((v.clock, v.noise_floor, v.sdr))
        line = (f"   A/A: {len(bad)} regressed, {len(improved)} improved of {len(verdicts)}"
                f"{' (' + ', '.join(bad + improved) + ')' if bad or improved else ''}")
        if c is not None:
            if t == 0:  # what the GPU padding achieved (model/gate/inject.py logs it)
                for log in sorted(raw.glob("C-*.log")):
                    for text in log.read_text(errors="replace").splitlines():
                        if text.startswith("[gate proof]"):
                            progress(f"   {log.name}: {text}")
            injected, _, _ = decide(a, c, settings, family_size=len(verdicts))
            report.write(raw / "injected", injected, settings, env)
            by = {v.name: v for v in injected}
            for key, names in (("host", args.detect_host), ("gpu", args.detect_gpu)):
                for name in names:
                    v = by.get(name)
                    if v is None:
                        raise sampling.SamplingError(f"--detect-{key} {name}: no such benchmark ran in both A and C "
                                                     f"(ran: {sorted(by)})")
                    results[key].append(v.verdict == REGRESSED)
                    line += f"; {key} {name.split('::')[-1]}: {100 * v.change:+.1f}% (SDR {100 * v.sdr:.1f}%) {v.verdict}"
        results["seconds"].append(time.perf_counter() - t0)
        progress(line + f"  [{results['seconds'][-1]:.0f} s]")
    if copy is not None:
        shutil.rmtree(copy.parent, ignore_errors=True)
    return results


def summary(args, results: dict) -> tuple[str, bool]:
    lines, ok = ["== gate proof summary"], True
    full = f", {len(results['full'])} of them over every benchmark" if results["full"] else ""
    for kind, label in (("aa", f"A/A (-k {args.keyword!r}{full})"), ("full", "A/A (every benchmark)")):
        trials = results[kind]
        if not trials:
            continue
        fails = sum(bool(t["regressed"]) for t in trials)
        lines.append(f"{label}: {fails} gate failures in {len(trials)} comparisons "
                     f"({sum(len(t['regressed']) for t in trials)} of {sum(t['n'] for t in trials)} verdicts regressed, "
                     f"{sum(len(t['improved']) for t in trials)} improved, {sum(t['too_noisy'] for t in trials)} too noisy)")
        ok &= fails == 0
    for key, label in (("host", f"+{args.host_us:g} us host per infer"), ("gpu", f"+{100 * args.gpu_fraction:g}% GPU time")):
        hits = results[key]
        if hits:
            lines.append(f"{label}: detected in {sum(hits)} of {len(hits)} trials")
            ok &= sum(hits) >= 0.9 * len(hits)
    if len(results["aa"]) < results["planned"]:
        lines.append(f"only {len(results['aa'])} of {results['planned']} trials ran (budget)")
        ok = False
    if results["sdr"]:
        lines.append(f"smallest detectable regression, median (max) over the A/A trials, benchmarks with {args.sdr_k!r}:")
        for name, rows in sorted(results["sdr"].items()):
            floors = [f for _, f, _ in rows if f is not None]
            sdrs = [s for _, _, s in rows]
            lines.append(f"  {name.split('::')[-1]:<48} {rows[0][0]:>4} clock  noise floor "
                         f"{100 * statistics.median(floors) if floors else float('nan'):5.1f}%  "
                         f"SDR {100 * statistics.median(sdrs):5.1f}% ({100 * max(sdrs):.1f}%)")
    lines.append(f"trial time: median {statistics.median(results['seconds']):.0f} s, total {sum(results['seconds']):.0f} s"
                 if results["seconds"] else "no trial ran")
    lines.append("PROOF " + ("PASSED" if ok else "FAILED") + ": 0 A/A failures and >= 90% detection required")
    return "\n".join(lines), ok


def main(args) -> int:
    args.out.mkdir(parents=True, exist_ok=True)
    results = run(args, progress=lambda s: print(s, flush=True))
    text, ok = summary(args, results)
    (args.out / "proof-summary.txt").write_text(text + "\n")
    print(text)
    return 0 if ok else 1
