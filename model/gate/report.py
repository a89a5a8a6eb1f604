"""The gate's verdict table (printed and written as Markdown) and its JSON, and the exit code."""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict
from pathlib import Path

from model.gate.stats import IMPROVED, REGRESSED, TOO_NOISY, UNCHANGED, Settings, Verdict, gated_share

EXIT_PASS, EXIT_REGRESSED, EXIT_TOO_NOISY = 0, 1, 3


def _time(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds * 1e9:.3g} ns"


def _pct(x: float | None) -> str:
    if x is None or math.isinf(x):
        return "-" if x is None else "inf"
    return f"{100 * x:.1f}%"


def table(verdicts: list[Verdict]) -> str:
    head = ("| benchmark | clock | base | head | change | p (t, processes) | noise floor (sd) | SDR | verdict |\n"
            "|---|---|---|---|---|---|---|---|---|")
    rows = [f"| {v.name} | {v.clock} | {_time(v.base_median)} | {_time(v.head_median)} | {100 * v.change:+.1f}% | "
            f"{v.p_value:.2g} | {_pct(v.noise_floor)} | {_pct(v.sdr)} | {v.verdict} |" for v in verdicts]
    return "\n".join([head, *rows])


def summary(verdicts: list[Verdict], settings: Settings, only: dict[str, list[str]] | None = None) -> str:
    counts = {k: [v.name for v in verdicts if v.verdict == k] for k in (REGRESSED, IMPROVED, UNCHANGED, TOO_NOISY)}
    lines = [f"gate: {len(verdicts)} benchmarks, {len(counts[REGRESSED])} regressed, {len(counts[IMPROVED])} improved, "
             f"{len(counts[UNCHANGED])} unchanged, {len(counts[TOO_NOISY])} too noisy to gate "
             f"(t-test on per-process medians, Holm over the family at alpha {settings.alpha}, every process of "
             f"one side beyond every process of the other, change > {_pct(settings.min_effect)}; "
             f"too noisy: SDR > {_pct(settings.max_detectable)})"]
    if blind(verdicts, settings):
        lines.append(f"BLIND (not a pass): {len(verdicts) - len(counts[TOO_NOISY])} of {len(verdicts)} benchmarks could "
                     f"be gated, fewer than {_pct(settings.min_gated)}; the machine was too noisy or the processes too "
                     "few (docs/gate.md, \"Reading a verdict\")")
    for name in counts[REGRESSED]:
        lines.append(f"REGRESSED: {name}")
    for name in counts[TOO_NOISY]:
        lines.append(f"TOO NOISY TO GATE (not a pass): {name}")
    for side, names in (only or {}).items():
        for name in names:
            lines.append(f"not compared, only in {side}: {name}")
    return "\n".join(lines)


def blind(verdicts: list[Verdict], settings: Settings) -> bool:
    """Too few benchmarks judged for a pass to mean anything (a run that gated nothing must not read green)."""
    return gated_share(verdicts) < settings.min_gated


def exit_code(verdicts: list[Verdict], fail_too_noisy: bool, settings: Settings = Settings()) -> int:
    if any(v.verdict == REGRESSED for v in verdicts):
        return EXIT_REGRESSED
    if blind(verdicts, settings) or (fail_too_noisy and any(v.verdict == TOO_NOISY for v in verdicts)):
        return EXIT_TOO_NOISY
    return EXIT_PASS


def to_job_summary(markdown: str, environ=os.environ) -> bool:
    """Append to the CI job's summary page (GitHub Actions: $GITHUB_STEP_SUMMARY), where a reader
    sees the verdict without opening the log; False where there is none."""
    path = environ.get("GITHUB_STEP_SUMMARY")
    if not path:
        return False
    with open(path, "a") as f:
        f.write(markdown.rstrip("\n") + "\n\n")
    return True


def markdown(verdicts: list[Verdict], settings: Settings, only: dict[str, list[str]] | None = None) -> str:
    head, *rest = summary(verdicts, settings, only).splitlines()
    return "\n".join([f"### Benchmark gate: {head.removeprefix('gate: ')}", "", table(verdicts), "",
                      *(f"- {line}" for line in rest)]) + "\n"


def write(out_dir: Path, verdicts: list[Verdict], settings: Settings, environment: dict, extra: dict | None = None) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "gate.md").write_text(markdown(verdicts, settings))
    rows = [{k: (None if isinstance(x, float) and math.isinf(x) else x) for k, x in {**asdict(v), "change": v.change}.items()}
            for v in verdicts]  # strict JSON has no Infinity: an unreachable resolution is null
    data = {"settings": asdict(settings), "environment": environment, "verdicts": rows, **(extra or {})}
    (out_dir / "gate.json").write_text(json.dumps(data, indent=1))
