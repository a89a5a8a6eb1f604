"""python -m model.gate compare | record | check: the gate itself (docs/gate.md).

The calibration commands (probe, proof) live in their own modules and are handed in by
model/gate/__main__.py, so that nothing here imports them: they import this module's options."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from model.gate import baseline, environment, report, sampling
from model.gate.stats import Settings, judge


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, received {text!r}")
    return value


def _checkout(text: str) -> Path:
    path = Path(text).resolve()
    if not (path / "benchmarks").is_dir():
        raise argparse.ArgumentTypeError(f"{text} is not a checkout of this project (no benchmarks/ folder in {path})")
    return path


def _path(text: str) -> Path:
    # Absolute from the start: every benchmark process runs in its checkout's directory, where a
    # relative path would name another place (the fork server's children could not open their logs).
    return Path(text).resolve()


def _interpreter(text: str) -> str:
    # A path (not a name looked up on PATH) made absolute, its symlinks kept: a venv's python is one.
    return os.path.abspath(text) if os.sep in text else text


def _cpus(text: str) -> frozenset[int]:
    try:
        return sampling.parse_cpus(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _common(p: argparse.ArgumentParser, processes: int) -> None:
    p.add_argument("--processes", type=_positive_int, default=processes,
                   help="fresh processes per side, interleaved A B B A ... (default %(default)s)")
    p.add_argument("--warmup-processes", type=int, default=1,
                   help="processes run first and not counted (cold caches after a checkout; default %(default)s)")
    p.add_argument("-k", dest="keyword", default=None, help="pytest -k expression selecting the benchmarks")
    p.add_argument("--python", default=sys.executable, type=_interpreter,
                   help="interpreter that runs the benchmark processes (default: this one)")
    p.add_argument("--cpus", type=_cpus, default=None,
                   help="pin every benchmark process to these cores (taskset syntax, e.g. 2-5); default: unpinned")
    p.add_argument("--fork-server", action="store_true",
                   help="fork each benchmark process from a server that has imported the libraries (not the project's "
                        "code): seconds less per process; see model/gate/forkserver.py for what siblings then share")
    p.add_argument("--preload", default=None,
                   help="comma-separated modules the fork server imports (default: numpy, pytest, torch, onnxruntime, "
                        "tensorrt, ...); leave out any that would initialize CUDA")
    p.add_argument("--out", type=_path, default="out/gate", help="logs, raw JSON and the verdict (default %(default)s)")
    p.add_argument("--alpha", type=float, default=Settings.alpha, help="family-wise error rate, Holm (default %(default)s)")
    p.add_argument("--min-effect", type=float, default=Settings.min_effect,
                   help="smallest relative change that may fail the gate (default %(default)s)")
    p.add_argument("--max-detectable", type=float, default=Settings.max_detectable,
                   help="a benchmark whose smallest detectable regression exceeds this is too noisy to gate "
                        "(default %(default)s)")
    p.add_argument("--min-gated", type=float, default=Settings.min_gated,
                   help="a run that could gate fewer than this share of its benchmarks is blind and fails (exit "
                        f"{report.EXIT_TOO_NOISY}); `record` refuses a baseline that would leave a check so blind "
                        "(default %(default)s)")
    p.add_argument("--fail-too-noisy", action="store_true",
                   help=f"exit {report.EXIT_TOO_NOISY} when a benchmark is too noisy to gate (default: report it)")
    p.add_argument("pytest_args", nargs="*", help="after --: more pytest arguments for every process (e.g. --require-gpu)")


def parser(commands: dict | None = None) -> argparse.ArgumentParser:
    """`commands`: more subcommands, name -> module with add_parser(sub) and main(args)."""
    commands = commands or {}
    ap = argparse.ArgumentParser(prog="python -m model.gate", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compare", help="same-job mode: base and head checkouts measured here, interleaved")
    c.add_argument("--base", type=_checkout, required=True, help="checkout of the base commit")
    c.add_argument("--head", type=_checkout, required=True, help="checkout of the head commit")
    _common(c, processes=5)
    r = sub.add_parser("record", help="stored-baseline mode: measure this checkout and store every process's samples")
    r.add_argument("--baseline", type=_path, required=True, help="file to write")
    r.add_argument("--checkout", type=_checkout, default=Path.cwd(), help="checkout to measure (default: cwd)")
    _common(r, processes=6)
    k = sub.add_parser("check", help="stored-baseline mode: measure this checkout against a recorded baseline")
    k.add_argument("--baseline", type=_path, required=True, help="file written by `record`")
    k.add_argument("--checkout", type=_checkout, default=Path.cwd(), help="checkout to measure (default: cwd)")
    _common(k, processes=5)
    for command in commands.values():
        command.add_parser(sub)
    return ap


def settings_of(args) -> Settings:
    return Settings(alpha=args.alpha, min_effect=args.min_effect, max_detectable=args.max_detectable,
                    min_gated=args.min_gated)


def pytest_args(args) -> list[str]:
    return [*(["-k", args.keyword] if args.keyword else []), *args.pytest_args]


def decide(base: sampling.Side, head: sampling.Side, settings: Settings, family_size: int = 0):
    """Verdicts for the benchmarks both sides measured, the common environment, and the rest by side."""
    env = environment.require_same({base.label: base.machine_infos, head.label: head.machine_infos})
    common = [n for n in base.groups if n in head.groups]
    for name in common:
        if base.clocks[name] != head.clocks[name]:
            raise sampling.SamplingError(f"benchmark {name}: {base.label} timed it on the {base.clocks[name]} clock, "
                                         f"{head.label} on the {head.clocks[name]} clock; compare like with like")
    verdicts = judge({n: {"clock": base.clocks[n], "base": base.groups[n], "head": head.groups[n]} for n in common},
                     settings, family_size)
    only = {base.label: [n for n in base.groups if n not in head.groups],
            head.label: [n for n in head.groups if n not in base.groups]}
    return verdicts, env, only


def finish(args, verdicts, env, only) -> int:
    settings = settings_of(args)
    print(report.table(verdicts))
    print(report.summary(verdicts, settings, only))
    report.write(args.out, verdicts, settings, env, {"only": only})
    report.to_job_summary(report.markdown(verdicts, settings, only))
    print(f"verdict table: {args.out / 'gate.md'}, data: {args.out / 'gate.json'}")
    return report.exit_code(verdicts, args.fail_too_noisy, settings)


CHECK_PROCESSES = 5  # `check`'s default --processes: what a stored baseline is judged for


def refuse_blind(head: sampling.Side, args, settings: Settings) -> int:
    """Exit status of `record`: 0 where the baseline lets a check gate enough of its benchmarks,
    else EXIT_TOO_NOISY, the baseline kept aside (out/refused-baseline.json) and not stored."""
    spots = baseline.blind_spots(head, CHECK_PROCESSES, settings)
    gated = len(head.groups) - len(spots)
    if head.groups and gated / len(head.groups) >= settings.min_gated:
        return 0
    aside = baseline.save(head, args.out / "refused-baseline.json")
    worst = sorted(spots.items(), key=lambda kv: -kv[1])[:5]
    text = (f"baseline REFUSED: a check of {CHECK_PROCESSES} processes against it could gate {gated} of "
            f"{len(head.groups)} benchmarks (fewer than {100 * settings.min_gated:.0f}%): its processes spread too much "
            f"(another job on the machine?). Not stored as {args.baseline}; kept for a look as "
            f"{args.out / 'refused-baseline.json'}; record again on a quiet machine, or with more --processes. "
            "Worst projected smallest detectable regressions: "
            + ", ".join(f"{n} {100 * sdr:.0f}% (sd {100 * aside['benchmarks'][n]['aa_sd']:.0f}%)" for n, sdr in worst))
    print(f"error: {text}", file=sys.stderr)
    report.to_job_summary(f"### Benchmark gate: {text}")
    return report.EXIT_TOO_NOISY


def main(argv=None, commands: dict | None = None) -> int:
    commands = commands or {}
    args = parser(commands).parse_args(argv)
    sampling.FORK.update(enabled=args.fork_server,
                         preload=None if args.preload is None else [m for m in args.preload.split(",") if m])
    if args.command in commands:
        return commands[args.command].main(args)
    settings = settings_of(args)
    out = args.out
    if args.command == "compare":
        base = sampling.Side("base", args.base, pytest_args(args))
        head = sampling.Side("head", args.head, pytest_args(args))
        print(f"== same-job comparison: base {args.base} vs head {args.head}, {args.processes} processes each")
        sampling.measure([base, head], args.processes, out / "raw", args.python, cpus=args.cpus,
                         warmup=args.warmup_processes)
        if not base.groups:
            print("error: no benchmark ran (all deselected or skipped); nothing to gate", file=sys.stderr)
            return 2
        return finish(args, *decide(base, head, settings))
    head = sampling.Side("head", args.checkout, pytest_args(args))
    if args.command == "record":
        if args.processes < 2:
            print("error: --processes must be at least 2 for record: the A/A spread is measured between processes",
                  file=sys.stderr)
            return 2
        sampling.measure([head], args.processes, out / "raw", args.python, cpus=args.cpus,
                         warmup=args.warmup_processes)
        refused = refuse_blind(head, args, settings)
        if refused:
            return refused
        data = baseline.save(head, args.baseline)
        print(f"baseline of {len(data['benchmarks'])} benchmarks from {args.processes} processes written to {args.baseline}")
        report.to_job_summary(f"### Benchmark gate: baseline of {len(data['benchmarks'])} benchmarks recorded "
                              f"({args.processes} processes); later runs check against it")
        for name, b in data["benchmarks"].items():
            print(f"  {name} ({b['clock']} clock): process-to-process sd {100 * b['aa_sd']:.1f}%")
        return 0
    stored = baseline.load(args.baseline)
    print(f"== against the baseline {args.baseline}, {args.processes} processes of {args.checkout}")
    sampling.measure([head], args.processes, out / "raw", args.python, cpus=args.cpus, warmup=args.warmup_processes)
    return finish(args, *decide(stored, head, settings))
