"""Where a cold GPU run's minutes went: `<cache>/engines/builds.jsonl` gets a line when a TensorRT
build starts (after its wait for a build slot) and one when it ends, built or failed.

`python -m model.backends.tensorrt.build_log [FILE]` sums it per engine set and plan: seconds of
building, seconds waited for a slot, and the builds that started and never ended, with how long
they had run when the log was read: what a run cut by its time limit was still waiting for.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time
from pathlib import Path

NAME = "builds.jsonl"


def record(folder: Path, event: str, plan: str, fields: dict, waited: float, seconds: float | None = None) -> None:
    """Appends one line: `event` is started, built or failed; `fields` says which plan (model,
    precision, typed_graph, profile, optimization_level)."""
    line = {"event": event, "plan": plan, **fields, "waited": round(waited, 2), "pid": os.getpid(), "at": time.time()}
    if seconds is not None:
        line["seconds"] = round(seconds, 2)
    with open(Path(folder) / NAME, "a") as f:  # one short append per line: lines do not interleave
        f.write(json.dumps(line) + "\n")


def read(path: Path) -> list[dict]:
    rows = []
    for number, text in enumerate(Path(path).read_text().splitlines(), 1):
        if not text.strip():
            continue
        try:
            rows.append(json.loads(text))
        except json.JSONDecodeError:
            # A line cut by a killed writer: named, not fatal, since the rest still tells the story.
            print(f"{path}:{number}: not JSON, skipped: {text[:80]!r}", file=sys.stderr)
    return rows


def _set(row: dict) -> str:
    typed = " typed" if row.get("typed_graph") else ""
    return f"{row.get('model')} {row.get('precision')}{typed} level {row.get('optimization_level')}"


def summary(rows: list[dict], now: float | None = None) -> list[str]:
    """The report's lines. Lines without an event (logs written before starts were logged) are builds."""
    now = time.time() if now is None else now
    ended = [r for r in rows if r.get("event", "built") in ("built", "failed")]
    done = {(r["plan"], r["pid"]) for r in ended}
    running = [r for r in rows if r.get("event") == "started" and (r["plan"], r["pid"]) not in done]
    built = [r for r in ended if r.get("event", "built") == "built"]
    lines = [f"{len(built)} plans built, {sum(r['seconds'] for r in built):.0f} s of building in all, "
             f"{sum(r.get('waited', 0) for r in ended):.0f} s waiting for a build slot"]
    sets = collections.defaultdict(list)
    for r in built:
        sets[_set(r)].append(r)
    for name, rs in sorted(sets.items(), key=lambda kv: -sum(r["seconds"] for r in kv[1])):
        plans = ", ".join(f"{r['profile']}: {r['seconds']:.0f} s (waited {r.get('waited', 0):.0f})" for r in rs)
        lines.append(f"  {name}: {len(rs)} plans, {sum(r['seconds'] for r in rs):.0f} s ({plans})")
    for r in (r for r in ended if r.get("event") == "failed"):
        lines.append(f"  FAILED after {r['seconds']:.0f} s: {_set(r)} {r['profile']}")
    if running:
        lines.append(f"{len(running)} builds started and not ended (still running, or their process was killed):")
        for r in sorted(running, key=lambda r: r["at"]):
            lines.append(f"  {_set(r)} {r['profile']}: started {now - r['at']:.0f} s before this report, "
                         f"after waiting {r.get('waited', 0):.0f} s")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.backends.tensorrt.build_log", description=__doc__)
    parser.add_argument("file", nargs="?", type=Path, default=Path(".cache/engines") / NAME)
    args = parser.parse_args(argv)
    if not args.file.is_file():
        print(f"no builds logged in {args.file}: nothing was built here (a warm or another cache)")
        return 0
    print("\n".join(summary(read(args.file))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
