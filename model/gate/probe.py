"""`python -m model.gate probe`: what the gate's settings should be on this machine, measured.

Runs fresh benchmark processes of one checkout, alternately unpinned and pinned to --cpus (U P P U
...), and prints per benchmark: the within-process spread of rounds, the process-to-process
standard deviation of the per-process medians in each mode, and the smallest detectable regression
the gate's test would have with n processes per side at that spread (model/gate/stats.py). Then
the seconds a process costs and how much of it was measurement, optionally one process of the
whole benchmark set (--whole-args) and the effect an injected slowdown had (--host-us /
--gpu-fraction on the --detect-* benchmarks). Nothing is judged: it is for choosing
--processes, --cpus and --bench-time before a proof.
"""
from __future__ import annotations

import re
import shlex
import shutil
import statistics
import time
from pathlib import Path

import numpy as np

from model.gate import sampling
from model.gate.cli import _checkout, _common, pytest_args
from model.gate.plan import suggest
from model.gate.proof import _with_cache, injected_copy
from model.gate.stats import detectable, log_medians, process_sd


def add_parser(sub) -> None:

    p = sub.add_parser("probe", help="measure process-to-process spread, pinned and unpinned, and process cost")
    p.add_argument("--checkout", type=_checkout, default=None, help="checkout to measure (default: cwd)")
    p.add_argument("--budget-s", type=float, default=120.0, help="start no process past this many seconds")
    p.add_argument("--whole-args", default=None,
                   help="pytest arguments of one extra process over the whole benchmark set, to time it")
    p.add_argument("--sizes", default="3,4,5,6,8", help="processes per side to quote the SDR for")
    p.add_argument("--host-us", type=float, default=0.0)
    p.add_argument("--host-backend", default="tensorrt-fp16")
    p.add_argument("--gpu-fraction", type=float, default=0.0)
    p.add_argument("--detect", action="append", default=[], metavar="NODEID",
                   help="benchmark node ids an injected copy runs once, to see the effect achieved")
    p.add_argument("--targets", default="benchmarks", help="space-separated pytest paths or node ids (default benchmarks)")
    _common(p, processes=6)


def _within_cv(group) -> float:
    q25, q50, q75 = np.percentile(np.asarray(group, dtype=float), [25, 50, 75])
    return (q75 - q25) / 1.349 / q50


def _measured_s(result: dict) -> float:
    """Seconds of timed rounds in one process (pytest-benchmark's per-round totals, GPU samples apart)."""
    return sum(b["stats"]["total"] for b in result["benchmarks"])


def main(args) -> int:
    checkout = args.checkout or Path.cwd().resolve()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    common = _with_cache(pytest_args(args), checkout)
    targets = args.targets.split()
    modes = ["U", "P"] if args.cpus else ["U"]
    order = sampling.interleaved(modes, args.processes)
    # The first process warms the page cache and the GPU; the whole set when asked (to time it), else
    # the selection. It is timed but not counted in the spreads.
    whole_args = _with_cache(shlex.split(args.whole_args), checkout) if args.whole_args is not None else None
    warm = sampling.Side("W", checkout, whole_args) if whole_args is not None else sampling.Side("W", checkout, common,
                                                                                                   targets=targets)
    forked = sampling.FORK["enabled"]
    extra = ["F", "X"] if forked else []
    print(f"plan: 1 warm-up process ({'the whole set: ' + args.whole_args if whole_args is not None else 'the selection'}"
          f"), {'1 fresh interpreter (F) and 1 forked process with --durations (X) of the selection, then ' if forked else ''}"
          f"{args.processes} per mode ({', '.join(modes)}; P = pinned to cores {_cpu_text(args.cpus)}), alternating, "
          f"{'forked from a server that imported the libraries' if forked else 'each a fresh interpreter'}; "
          f"budget {args.budget_s:.0f} s; pytest {' '.join(targets)} {shlex.join(common)}", flush=True)
    sides = {"W": warm, **{m: sampling.Side(m, checkout, common, targets=targets) for m in [*extra, *modes]}}
    if forked:  # where a process's seconds go, test by test (setup = fixtures: artifacts, engines, feeds)
        sides["X"].pytest_args = [*common, "--durations=12"]
    measured = {m: [] for m in sides}
    start, count = time.perf_counter(), {m: 0 for m in sides}
    for mode in ["W", *extra, *order]:
        spent = time.perf_counter() - start
        secs = [s for m, side in sides.items() if m in modes for s in side.seconds]
        if secs and spent + max(secs) > args.budget_s:
            print(f"budget: {spent:.0f} s spent; starting no more processes", flush=True)
            break
        count[mode] += 1
        stem = out / "raw" / f"{mode}{count[mode]}"
        began = time.perf_counter()
        cpus = args.cpus if mode != "U" else None
        try:
            if mode in ("W", "F"):  # fresh interpreters by design
                result = sampling.run_process(sides[mode], args.python, stem.with_suffix(".json"),
                                              stem.with_suffix(".log"), cpus=cpus, fresh=True)
            else:
                result = sampling.run_or_fall_back(sides[mode], args.python, stem.with_suffix(".json"),
                                                   stem.with_suffix(".log"), cpus, lambda t: print(t, flush=True))
        except sampling.SamplingError as exc:  # report and go on: the other processes still measure
            print(f"  {mode}{count[mode]} FAILED: {exc}", flush=True)
            del sides[mode].seconds[len(measured[mode]):]
            continue
        sides[mode].add(result)
        measured[mode].append(_measured_s(result))
        setup = time.perf_counter() - began - sides[mode].seconds[-1]  # a fork server's start, outside the clock
        started = f" (+{setup:.1f} s starting a fork server)" if setup > 0.5 else ""
        print(f"  {mode}{count[mode]}: {sides[mode].seconds[-1]:.1f} s wall, {measured[mode][-1]:.1f} s in timed rounds, "
              f"{len(result['benchmarks'])} benchmarks{started}", flush=True)
    sizes = [int(n) for n in args.sizes.split(",")]
    names = list(dict.fromkeys(n for m in modes for n in sides[m].groups))
    m = max(len(names), 1)
    lines = [f"== probe: {m} benchmarks; sd = process-to-process standard deviation of per-process medians; "
             f"SDR(n) = smallest regression the gate's t-test flags with n processes per side at alpha "
             f"{args.alpha}/{m}, from the pinned sd where measured",
             f"{'benchmark':<58} clock   median  rounds  within  " + "  ".join(f"sd {md}  rng {md}" for md in modes)
             + "  " + "  ".join(f"SDR({n})" for n in sizes)]
    best = "P" if "P" in modes else "U"
    for name in names:
        clock = next(sides[md].clocks[name] for md in modes if name in sides[md].clocks)
        row = [f"{name.split('::')[-1][:58]:<58} {clock:>5}"]
        groups = [g for md in modes for g in sides[md].groups.get(name, [])]
        row.append(f"{1e6 * statistics.median(float(np.median(g)) for g in groups):>7.1f}us")
        row.append(f"{statistics.median(len(g) for g in groups):>6.0f}")
        row.append(f"{100 * statistics.median(_within_cv(g) for g in groups):>6.2f}%")
        for md in modes:
            gs = sides[md].groups.get(name, [])
            sd, _ = process_sd(log_medians(gs)) if len(gs) > 1 else (None, 0)
            spread = sampling_spread(gs)
            row.append(f"{'-' if sd is None else f'{100 * np.expm1(sd):.2f}%':>6} {spread:>7}")
        gs = sides[best].groups.get(name, [])
        sd, df = process_sd(log_medians(gs)) if len(gs) > 1 else (None, 0)
        for n in sizes:  # df of the gate's own test with n per side, the spread measured here
            row.append(f"{100 * detectable(sd, 2 * n - 2, n, n, args.alpha / m):>6.1f}%" if sd is not None else "     -")
        lines.append("  ".join(row))
    for md in sides:
        secs = sides[md].seconds
        if secs:
            lines.append(f"mode {md}: {len(secs)} processes, wall median {statistics.median(secs):.1f} s "
                         f"(min {min(secs):.1f}, max {max(secs):.1f}), timed rounds median "
                         f"{statistics.median(measured[md]):.1f} s, the rest (start-up, engines, checks) "
                         f"{statistics.median(secs) - statistics.median(measured[md]):.1f} s")
    if whole_args is not None and warm.seconds:
        lines.append(f"whole set (mode W, a fresh interpreter: {args.whole_args}): {len(warm.groups)} benchmarks")
    if (out / "raw" / "X1.log").is_file():
        lines += _durations(out / "raw" / "X1.log", sides["X"])
    injected = None
    if args.detect and time.perf_counter() - start < args.budget_s:
        try:
            more, injected = _injected(args, checkout, sides[best], out)
            lines += more
        except sampling.SamplingError as exc:
            lines.append(f"injected copy FAILED: {exc}")
    lines.append(f"elapsed {time.perf_counter() - start:.0f} s")
    text = "\n".join(lines)
    (out / "probe-summary.txt").write_text(text + "\n")
    print(text)
    try:  # a suggestion only: never lose the measurements above to it
        advice = "\n".join(suggest(args, sides, modes, injected, m))
    except Exception as exc:  # noqa: BLE001
        advice = f"no suggestion: {type(exc).__name__}: {exc}"
    with open(out / "probe-summary.txt", "a") as f:
        f.write(advice + "\n")
    print(advice)
    return 0


def _durations(log, side: sampling.Side) -> list[str]:
    """pytest's --durations of the X process: where its seconds went besides the timed rounds."""
    text = log.read_text(errors="replace").splitlines()
    try:
        first = next(i for i, t in enumerate(text) if "slowest" in t and "durations" in t)
    except StopIteration:
        return []
    rows = [t for t in text[first + 1:] if re.match(r"\d+\.\d+s ", t)]
    total = sum(float(t.split("s", 1)[0]) for t in rows)
    return [f"process X (forked, pinned): {side.seconds[-1]:.1f} s wall; its slowest phases ({total:.1f} s; the rest "
            f"is start-up and collection):", *(f"  {t}" for t in rows)]


def _cpu_text(cpus) -> str:
    return ",".join(map(str, sorted(cpus))) if cpus else "-"


def sampling_spread(groups) -> str:
    if len(groups) < 2:
        return "-"
    x = log_medians(groups)
    return f"{100 * np.expm1(x.max() - x.min()):.1f}%"


def _injected(args, checkout, reference: sampling.Side, out) -> tuple[list[str], sampling.Side]:

    copy = injected_copy(checkout, args.host_us, args.host_backend, args.gpu_fraction, args.detect)
    try:
        side = sampling.Side("injected", copy, _with_cache(list(args.pytest_args), checkout), targets=args.detect)
        stem = out / "raw" / "injected"
        side.add(sampling.run_or_fall_back(side, args.python, stem.with_suffix(".json"), stem.with_suffix(".log"),
                                           args.cpus))
        logged = [t for t in stem.with_suffix(".log").read_text(errors="replace").splitlines() if t.startswith("[gate proof]")]
    finally:
        shutil.rmtree(copy.parent, ignore_errors=True)
    lines = [f"injected copy (+{args.host_us:g} us host on {args.host_backend}, +{100 * args.gpu_fraction:g}% GPU): "
             f"{side.seconds[-1]:.1f} s wall", *(f"  {t}" for t in logged)]
    for name, groups in side.groups.items():
        ref = reference.groups.get(name)
        if ref:
            effect = np.expm1(log_medians(groups).mean() - log_medians(ref).mean())
            lines.append(f"  {name.split('::')[-1]}: {100 * effect:+.1f}% against the mean of {len(ref)} unchanged processes")
    return lines, side
