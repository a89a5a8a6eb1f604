"""`python -m model.gate proof`: does the gate stay quiet on unchanged code and catch real slowdowns?

Two families of A/A comparisons of the unchanged checkout, and injected slowdowns:

- the selection (-k / --targets): a chain of fresh processes (M); comparison i takes 2n consecutive
  ones in the roles A B B A ... (n = --processes), exactly what the gate runs on a pull request;
- the whole benchmark set (--whole-trials, --whole-args: fewer rounds per benchmark), its own chain
  of independent comparisons (W);
- a patched copy (model/gate/inject.py, appended to the copy's benchmarks/conftest.py only) that
  runs the same selection (C); detection i compares comparison i's A side with n copy processes on
  the --detect-* benchmarks, corrected for the size of the selection's family, as the gate would
  judge it. The copy runs the whole selection, not only the judged benchmarks: on the H200 a copy
  running two benchmarks measured TensorRT FP16's end-to-end batch 1 in a tight 86-88 us band,
  while processes of the full selection split into 65 and 73-81 us, so a shorter copy compares a
  different process, not only the injection.

With --step 2n (the default) no process serves two comparisons: the counts are of independent
trials. A smaller step lets neighbouring comparisons share processes, roles rotating; each
comparison is still a valid one, but the trials are not independent, and the summary says so.
A first process of the selection warms caches and the GPU and is not counted. The host and GPU
injections touch disjoint benchmarks (end-to-end vs device-resident), so one copy carries both.
"""
from __future__ import annotations

import json
import shlex
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from model.gate import report, sampling
from model.gate.cli import _checkout, _common, _positive_int, decide, settings_of
from model.gate.plan import chain_seconds, schedule
from model.gate.stats import IMPROVED, REGRESSED, TOO_NOISY

IGNORE = shutil.ignore_patterns(".git", ".venv", ".cache", "out", "__pycache__", ".pytest_cache", ".hypothesis",
                                ".benchmarks", "artifacts", "*.pyc")


def add_parser(sub) -> None:

    p = sub.add_parser("proof", help="A/A comparisons and injected slowdowns: false-failure and detection counts")
    p.add_argument("--checkout", type=_checkout, default=Path.cwd(), help="checkout to prove on (default: cwd)")
    p.add_argument("--targets", default="benchmarks", help="space-separated pytest paths or node ids of the selection")
    p.add_argument("--trials", type=_positive_int, default=10, help="A/A and injection comparisons (default %(default)s)")
    p.add_argument("--step", type=int, default=0,
                   help="main-chain processes between the starts of neighbouring comparisons (default 2 x --processes: "
                        "independent comparisons; smaller shares processes between neighbours)")
    p.add_argument("--copy-step", type=int, default=0,
                   help="copy-chain processes between the starts of neighbouring detections (default --processes: "
                        "no copy process serves two trials; with --step below 2 x --processes, --step // 2)")
    p.add_argument("--whole-trials", type=int, default=0, help="A/A comparisons over the whole benchmark set")
    p.add_argument("--whole-processes", type=_positive_int, default=3, help="processes per side for those")
    p.add_argument("--whole-args", default="", help="pytest arguments of the whole-set processes (e.g. fewer rounds)")
    p.add_argument("--host-us", type=float, default=0.0, help="busy-wait added after each end-to-end infer() (us)")
    p.add_argument("--host-backend", default="tensorrt", help="backend-name prefix of the runners slowed (default %(default)s)")
    p.add_argument("--detect-host", action="append", default=[], metavar="NODEID",
                   help="benchmark node id the host slowdown must be flagged on (repeatable)")
    p.add_argument("--gpu-fraction", type=float, default=0.0, help="extra GPU work per TensorRT graph replay, e.g. 0.10")
    p.add_argument("--detect-gpu", action="append", default=[], metavar="NODEID",
                   help="benchmark node id the GPU slowdown must be flagged on (repeatable)")
    p.add_argument("--sdr-k", default="fp16", help="substring of the benchmarks whose SDR the summary lists")
    p.add_argument("--budget-s", type=float, default=0.0,
                   help="start no process that would end past this many seconds (0: no limit)")
    p.add_argument("--resume", action="store_true",
                   help="read back the processes an earlier call with the same --out and plan completed, run the rest")
    _common(p, processes=5)


def injected_copy(checkout: Path, host_us: float, host_backend: str, gpu_fraction: float,
                  gpu_only: list[str] | None = None) -> Path:
    dst = Path(tempfile.mkdtemp(prefix="gate-proof-")) / "injected"
    shutil.copytree(checkout, dst, ignore=IGNORE)
    lines = ["", "# ---- added by model.gate.proof to this copy only: injected slowdowns ----",
             "from model.gate import inject as _gate_inject"]
    if host_us:
        lines.append(f"runner_pool = _gate_inject.host_delay_fixture({host_us * 1e-6!r}, {host_backend!r})")
    if gpu_fraction:
        lines.append(f"_gate_inject.pad_tensorrt_graphs({gpu_fraction!r}, {list(gpu_only or [])!r})")
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


class Runner:
    """Starts processes in order, pinned as asked, keeps their samples and seconds, and stops at the budget."""

    def __init__(self, args, progress) -> None:
        self.args, self.progress, self.start = args, progress, time.perf_counter()
        self.done: dict[tuple[str, int], sampling.Side] = {}
        self.seconds: dict[str, list[float]] = {}
        self.failures: list[str] = []
        self.stopped = False
        self.resumed = 0

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def run(self, kind: str, j: int, side: sampling.Side) -> bool:
        secs = self.seconds.get(kind) or [s for v in self.seconds.values() for s in v]
        if self.stopped or (self.args.budget_s and secs and self.elapsed() + max(secs) > self.args.budget_s):
            if not self.stopped:
                self.progress(f"budget: {self.elapsed():.0f} s spent of {self.args.budget_s:.0f}; starting no more processes")
            self.stopped = True
            return False
        stem = self.args.out / "raw" / side.label
        if self.args.resume and self._load(kind, j, side, stem):
            return True
        try:
            side.add(sampling.run_or_fall_back(side, self.args.python, stem.with_suffix(".json"),
                                               stem.with_suffix(".log"), self.args.cpus, self.progress))
        except sampling.SamplingError as exc:
            # One failed process costs its comparisons, not the proof's other results (one device call).
            self.failures.append(str(exc).splitlines()[0])
            self.progress(f"  {side.label} FAILED: {exc}")
            if len(self.failures) >= 3:
                self.progress("three processes failed: starting no more")
                self.stopped = True
            return True
        self.seconds.setdefault(kind, []).append(side.seconds[-1])
        self.done[(kind, j)] = side
        stem.with_suffix(".seconds").write_text(f"{side.seconds[-1]!r}\n")  # what --resume reads back
        self.progress(f"  {side.label}: {side.seconds[-1]:.1f} s (at {self.elapsed():.0f} s)")
        if kind == "C" and j == 0:  # what the GPU padding achieved (model/gate/inject.py logs it)
            for text in stem.with_suffix(".log").read_text(errors="replace").splitlines():
                if text.startswith("[gate proof]"):
                    self.progress(f"   C1: {text}")
        return True


    def _load(self, kind: str, j: int, side: sampling.Side, stem: Path) -> bool:
        """--resume: a process an earlier call of the same plan completed is read back, not run again
        (one device call is 10 minutes at most; the proof's plan may need two). Only a process that
        finished (its JSON and its seconds both written) counts."""
        json_path, seconds_path = stem.with_suffix(".json"), stem.with_suffix(".seconds")
        if not (json_path.is_file() and seconds_path.is_file()):
            return False
        side.add(json.loads(json_path.read_text()))
        side.seconds.append(float(seconds_path.read_text()))
        self.seconds.setdefault(kind, []).append(side.seconds[-1])
        self.done[(kind, j)] = side
        self.resumed += 1
        return True


def run(args, progress=print) -> dict:
    detect = [*args.detect_host, *args.detect_gpu]
    copy = (injected_copy(args.checkout, args.host_us, args.host_backend, args.gpu_fraction, args.detect_gpu)
            if detect else None)
    try:
        return _run(args, progress, copy)
    finally:  # a failed process must not leave the copy behind
        if copy is not None:
            shutil.rmtree(copy.parent, ignore_errors=True)


def _plan(args, n_main: int, n_copy: int, n_whole: int, step: int) -> str:
    return (f"plan: 1 warm-up + {n_main} processes of the selection ({args.trials} A/A comparisons, {args.processes} "
            f"per side, step {step}: {'independent' if step >= 2 * args.processes else 'neighbours share processes'}), "
            f"{n_copy} of the injected copy ({', '.join(args.detect_host + args.detect_gpu) or 'none'}), {n_whole} of "
            f"the whole set ({args.whole_trials} comparisons, {args.whole_processes} per side); "
            f"{1 + n_main + n_copy + n_whole} processes; pinned to {sorted(args.cpus) if args.cpus else 'no cores'}; "
            f"budget {args.budget_s:.0f} s")


def _project(runner, n_main: int, n_copy: int, n_whole: int, progress) -> None:
    """After the first process of each chain: how long the plan takes at those rates
    (model/gate/plan.py's cost model; the whole set at the warm-up's rate, an upper bound: the
    warm-up also fills the caches)."""

    t_m, t_c = runner.seconds["M"][0], runner.seconds["C"][0]
    t_w = runner.seconds.get("warm-up", [3 * t_m])[0] if n_whole else 0.0
    total = runner.elapsed() + chain_seconds(n_main - 1, n_copy - 1, n_whole, t_m, t_c, t_w)
    progress(f"projection: {n_main} x {t_m:.1f} s + {n_copy} x {t_c:.1f} s + {n_whole} x {t_w:.1f} s (warm-up's rate) "
             f"= about {total:.0f} s in all, budget {runner.args.budget_s:.0f} s")


def _run(args, progress, copy: Path | None) -> dict:

    settings = settings_of(args)
    checkout = args.checkout
    common = _with_cache(list(args.pytest_args), checkout)
    main_args = [*(["-k", args.keyword] if args.keyword else []), *common]
    targets = args.targets.split()
    step = args.step or 2 * args.processes
    windows, cwindows, n_main, n_copy = schedule(args.trials, args.processes, step, args.copy_step)
    n_copy = n_copy if copy is not None else 0
    wn = args.whole_processes
    wwindows = [[(i * 2 * wn + j, r) for j, r in enumerate(sampling.interleaved(["A", "B"], wn))]
                for i in range(args.whole_trials)]
    n_whole = 2 * wn * args.whole_trials
    progress(_plan(args, n_main, n_copy, n_whole, step))
    runner = Runner(args, progress)
    whole_args = _with_cache(shlex.split(args.whole_args), checkout)
    # The warm-up (not counted) is a whole-set process when there are whole-set comparisons: it warms
    # every engine and cached reference, and it times what such a process costs, for the projection.
    runner.run("warm-up", 0, sampling.Side("W0", checkout, whole_args) if n_whole
               else sampling.Side("W0", checkout, main_args, targets=targets))
    # Copy processes spread evenly between the main ones, so both chains see the same drift.
    order = sorted([(j / n_main, "M", j) for j in range(n_main)] + [((k + 0.5) / max(n_copy, 1), "C", k) for k in range(n_copy)])
    for _, kind, j in order:
        side = (sampling.Side(f"M{j + 1}", checkout, main_args, targets=targets) if kind == "M"
                else sampling.Side(f"C{j + 1}", copy, main_args, targets=targets))
        if not runner.run(kind, j, side):
            break
        if {"M", "C"} <= runner.seconds.keys() and len(runner.seconds["M"]) + len(runner.seconds["C"]) == 2:
            _project(runner, n_main, n_copy, n_whole, progress)
    for j in range(n_whole):
        if not runner.run("W", j, sampling.Side(f"W{j + 1}", checkout, whole_args)):
            break
    results = {"aa": [], "whole": [], "host": [], "gpu": [], "sdr": {}, "seconds": runner.seconds,
               "failures": runner.failures,
               "planned": args.trials, "whole_planned": args.whole_trials, "elapsed": runner.elapsed(), "step": step,
               "resumed": runner.resumed}
    for i, window in enumerate(windows):
        results_aa = _compare(args, runner, "M", window, f"aa-{i + 1}", results, progress, f"A/A {i + 1}")
        if results_aa is None:
            continue
        a, verdicts, env, line = results_aa
        cw = cwindows[i]
        if copy is not None and all(("C", k) in runner.done for k in cw):
            c = merged("C", [runner.done[("C", k)] for k in cw])
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
    for i, window in enumerate(wwindows):
        done = _compare(args, runner, "W", window, f"whole-aa-{i + 1}", results, progress, f"whole-set A/A {i + 1}",
                        key="whole")
        if done is not None:
            progress(done[3])
    return results


def _compare(args, runner: Runner, kind: str, window, label: str, results: dict, progress, title: str, key: str = "aa"):
    """One A/A comparison of a window of processes; None if some process of it did not run."""

    if not all((kind, j) in runner.done for j, _ in window):
        return None
    settings = settings_of(args)
    a = merged("A", [runner.done[(kind, j)] for j, r in window if r == "A"])
    b = merged("B", [runner.done[(kind, j)] for j, r in window if r == "B"])
    verdicts, env, _ = decide(a, b, settings)
    report.write(args.out / label, verdicts, settings, env)
    bad = [v.name for v in verdicts if v.verdict == REGRESSED]
    improved = [v.name for v in verdicts if v.verdict == IMPROVED]
    results[key].append({"regressed": bad, "improved": improved, "n": len(verdicts),
                         "too_noisy": [v.name for v in verdicts if v.verdict == TOO_NOISY]})
    if key == "aa":
        for v in verdicts:
            if args.sdr_k in v.name:
                results["sdr"].setdefault(v.name, []).append((v.clock, v.noise_floor, v.sdr))
    line = (f"{title}: {len(bad)} regressed, {len(improved)} improved, {len(results[key][-1]['too_noisy'])} too noisy "
            f"of {len(verdicts)}{' (' + ', '.join(n.split('::')[-1] for n in bad + improved) + ')' if bad or improved else ''}")
    return a, verdicts, env, line


def _family(lines: list[str], trials: list[dict], planned: int, what: str) -> bool:
    if not planned:
        return True
    fails = sum(bool(t["regressed"]) for t in trials)
    lines.append(f"A/A over {what}: {fails} gate failures in {len(trials)} comparisons ("
                 f"{sum(len(t['regressed']) for t in trials)} of {sum(t['n'] for t in trials)} verdicts regressed, "
                 f"{sum(len(t['improved']) for t in trials)} improved, {sum(len(t['too_noisy']) for t in trials)} too noisy)"
                 + (f"; only {len(trials)} of {planned} completed (budget)" if len(trials) < planned else ""))
    noisy = sorted({n.split("::")[-1] for t in trials for n in t["too_noisy"]})
    if noisy:
        lines.append(f"  too noisy to gate at least once ({len(noisy)}): {', '.join(noisy[:12])}{' ...' if len(noisy) > 12 else ''}")
    return fails == 0 and len(trials) == planned


def summary(args, results: dict) -> tuple[str, bool]:
    lines, ok = ["== gate proof summary"], True
    sel = f"{args.targets} -k {args.keyword!r}" if args.keyword else args.targets
    ok &= _family(lines, results["aa"], results["planned"], f"the selection ({sel})")
    ok &= _family(lines, results["whole"], results["whole_planned"], f"the whole set ({args.whole_args})")
    for key, label in (("host", f"+{args.host_us:g} us host per infer ({', '.join(n.split('::')[-1] for n in args.detect_host)})"),
                       ("gpu", f"+{100 * args.gpu_fraction:g}% GPU time ({', '.join(n.split('::')[-1] for n in args.detect_gpu)})")):
        hits = results[key]
        if hits or (key == "host" and args.detect_host) or (key == "gpu" and args.detect_gpu):
            lines.append(f"{label}: detected in {sum(hits)} of {len(hits)} trials")
            ok &= len(hits) == results["planned"] and sum(hits) >= 0.9 * len(hits)
    if results["step"] < 2 * args.processes:
        lines.append(f"step {results['step']}: neighbouring comparisons share processes (roles rotate); each comparison "
                     "is a valid A B B A comparison, but the counts are not of independent trials")
    if results["sdr"]:
        lines.append(f"smallest detectable regression, median (max) over the A/A comparisons, benchmarks with "
                     f"{args.sdr_k!r} ({args.processes} processes per side; noise floor = process-to-process sd):")
        for name, rows in sorted(results["sdr"].items()):
            floors = [f for _, f, _ in rows if f is not None]
            sdrs = [s for _, _, s in rows]
            lines.append(f"  {name.split('::')[-1]:<52} {rows[0][0]:>4}  sd "
                         f"{100 * statistics.median(floors) if floors else float('nan'):5.2f}%  "
                         f"SDR {100 * statistics.median(sdrs):5.1f}% ({100 * max(sdrs):.1f}%)")
    total = 0
    for kind, label in (("warm-up", "warm-up"), ("M", "selection"), ("C", "injected copy"), ("W", "whole set")):
        secs = results["seconds"].get(kind, [])
        total += len(secs)
        if secs:
            lines.append(f"{label} processes: {len(secs)}, median {statistics.median(secs):.1f} s, total {sum(secs):.0f} s")
    for failure in results["failures"]:
        lines.append(f"FAILED process: {failure}")
    ok &= not results["failures"]
    lines.append(f"{total} processes in {results['elapsed']:.0f} s"
                 + (f" ({results['resumed']} of them read back from an earlier call)" if results.get("resumed") else ""))
    lines.append("PROOF " + ("PASSED" if ok else "FAILED") + ": every comparison run, 0 A/A failures, >= 90% detection")
    return "\n".join(lines), ok


def main(args) -> int:
    args.out.mkdir(parents=True, exist_ok=True)
    results = run(args, progress=lambda s: print(s, flush=True))
    text, ok = summary(args, results)
    (args.out / "proof-summary.txt").write_text(text + "\n")
    print(text)
    return 0 if ok else 1
