"""Mutation testing of the code that makes verdicts and keys: does the suite notice a wrong line?

Each mutant of tools/mutants.py (a file, an exact snippet of it, its replacement, why it matters)
is applied alone to a copy of the working tree, and only the tests that cover that module run on
it (`TESTS` there, or the mutant's own). A failing run kills the mutant; a green run is a
survivor: a fault the suite would let through. Survivors marked `equivalent` (the mutant cannot
change behaviour; the mark says why) are reported apart; any other survivor fails the run.

A snippet that is not found exactly once in its file stops everything before any test runs: the
code moved and the list needs updating, never a mutant silently skipped.

Every run gets a cache of its own (a copy of the trained weights and data only), so a mutant that
writes wrong artifacts under right names cannot reach the shared cache. The unmutated tree runs
the union of the selected tests first, against the real cache (filling it), and must pass.

    python tools/mutate.py            # every mutant (make mutate)
    python tools/mutate.py --ci       # the CI subset (make mutate-ci)
    python tools/mutate.py --list     # the mutants, without running anything
    python tools/mutate.py --only cache-sha256 artifacts-weights-key
"""
from __future__ import annotations

import argparse
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from mutants import MUTANTS, PYTEST_ARGS, TESTS, Mutant  # noqa: E402

SEEDED = ("weights", "data")  # what a run's own cache starts with: costly to make, never mutated here


@dataclass
class Outcome:
    mutant: Mutant
    status: str  # killed | survived | timeout | error
    seconds: float
    detail: str = ""


def tests_for(m: Mutant) -> list[str]:
    return list(m.tests or TESTS[m.file])


def check_snippets(mutants: list[Mutant], root: Path) -> list[str]:
    problems = []
    for m in mutants:
        path = root / m.file
        if not path.exists():
            problems.append(f"{m.id}: {m.file} does not exist")
            continue
        count = path.read_text().count(m.old)
        if count != 1:
            problems.append(f"{m.id}: its snippet is found {count} times in {m.file} (expected once): {m.old!r}")
        if m.file not in TESTS and not m.tests:
            problems.append(f"{m.id}: no tests are mapped to {m.file}")
    return problems


def copy_tree(dest: Path) -> None:
    """The working tree as git sees it (tracked and untracked-but-not-ignored files), not .venv or .cache."""
    names = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for name in filter(None, names):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def seeded_cache(source: Path, dest: Path) -> Path:
    for sub in SEEDED:
        if (source / sub).is_dir():
            shutil.copytree(source / sub, dest / sub, ignore=shutil.ignore_patterns(".*.lock", ".*.tmp*"))
    return dest


def pytest(tree: Path, tests: list[str], cache_dir: Path, timeout: float) -> tuple[int | None, str]:
    env = {**os.environ, "SIMPLECNN_CACHE": str(cache_dir), "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PYTEST_ADDOPTS", None)
    cmd = [sys.executable, "-m", "pytest", *PYTEST_ARGS, *tests]
    try:
        done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, ""
    return done.returncode, done.stdout + done.stderr


def _summary_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    failed = [line for line in lines if line.startswith(("FAILED", "ERROR"))]
    return (failed[0] if failed else lines[-1] if lines else "")[:160]


def run_mutant(m: Mutant, tree: Path, cache_source: Path, timeout: float) -> Outcome:
    path = tree / m.file
    original = path.read_text()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mutant-cache-") as cache_dir:
        try:
            path.write_text(original.replace(m.old, m.new, 1))
            code, output = pytest(tree, tests_for(m), seeded_cache(cache_source, Path(cache_dir)), timeout)
        finally:
            path.write_text(original)
    seconds = time.perf_counter() - start
    if code is None:
        return Outcome(m, "timeout", seconds, f"no result within {timeout:.0f} s (counted as killed)")
    if code == 0:
        return Outcome(m, "survived", seconds)
    if code in (1, 2, 3):  # failed tests, or a collection error the mutant caused (the baseline collected)
        return Outcome(m, "killed", seconds, _summary_line(output))
    if code < 0:  # the run died of a signal the mutant caused (a native crash): CI goes red as for a failed test
        return Outcome(m, "killed", seconds, f"pytest died of {signal.Signals(-code).name}")
    return Outcome(m, "error", seconds, f"pytest exit {code}: {_summary_line(output)}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ci", action="store_true", help="only the mutants marked for CI")
    parser.add_argument("--only", nargs="+", metavar="ID", help="only these mutants")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("-j", "--jobs", type=int, default=2, help="mutants run at once (default 2)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per mutant's tests (default 600)")
    parser.add_argument("--skip-baseline", action="store_true",
                        help="do not run the unmutated tree first (only when it has just passed)")
    args = parser.parse_args(argv)

    chosen = [m for m in MUTANTS if (not args.ci or m.ci) and (not args.only or m.id in args.only)]
    unknown = sorted(set(args.only or ()) - {m.id for m in MUTANTS})
    if unknown or not chosen:
        print(f"error: no such mutants {unknown}" if unknown else "error: no mutant selected", file=sys.stderr)
        return 2
    problems = check_snippets(chosen, ROOT)
    if problems:
        print("error: the mutant list no longer matches the code (update tools/mutants.py):", file=sys.stderr)
        print("\n".join("  " + p for p in problems), file=sys.stderr)
        return 2
    if args.list:
        for m in chosen:
            print(f"{m.id:32} {m.file:28} {'ci ' if m.ci else '   '}{m.why}")
        return 0

    started = time.perf_counter()
    cache_source = Path(os.environ.get("SIMPLECNN_CACHE", ROOT / ".cache"))
    with tempfile.TemporaryDirectory(prefix="mutate-") as work:
        trees: queue.Queue[Path] = queue.Queue()
        for i in range(max(1, args.jobs)):
            tree = Path(work) / f"tree{i}"
            copy_tree(tree)
            trees.put(tree)
        if not args.skip_baseline:
            union = sorted({t for m in chosen for t in tests_for(m)})
            print(f"baseline: the unmutated tree on {len(union)} test selections ...", flush=True)
            tree = trees.get()
            cache_source.mkdir(parents=True, exist_ok=True)
            code, output = pytest(tree, union, cache_source, args.timeout * 3)
            trees.put(tree)
            if code != 0:
                print(output[-4000:], file=sys.stderr)
                print(f"error: the unmutated tree fails its tests (exit {code}): a mutation score would mean nothing",
                      file=sys.stderr)
                return 2
            print(f"baseline: passed in {time.perf_counter() - started:.0f} s", flush=True)

        def work_on(m: Mutant) -> Outcome:
            tree = trees.get()
            try:
                outcome = run_mutant(m, tree, cache_source, args.timeout)
            finally:
                trees.put(tree)
            mark = outcome.status.upper() + (" (marked equivalent)" if m.equivalent and outcome.status == "survived" else "")
            print(f"{mark:30} {m.id:32} {outcome.seconds:5.0f} s  {outcome.detail}", flush=True)
            return outcome

        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            outcomes = list(pool.map(work_on, chosen))
    return report(outcomes, time.perf_counter() - started)


def report(outcomes: list[Outcome], seconds: float) -> int:
    killed = [o for o in outcomes if o.status in ("killed", "timeout")]
    survived = [o for o in outcomes if o.status == "survived"]
    equivalent = [o for o in survived if o.mutant.equivalent]
    unexplained = [o for o in survived if not o.mutant.equivalent]
    errors = [o for o in outcomes if o.status == "error"]
    stale_marks = [o for o in killed if o.mutant.equivalent]
    scored = len(outcomes) - len(equivalent)
    print(f"\nmutation score: {len(killed)}/{scored} killed ({100 * len(killed) / max(scored, 1):.1f}%) of "
          f"{len(outcomes)} mutants, {len(equivalent)} equivalent, {len(errors)} errors; "
          f"{seconds / 60:.1f} min")
    for o in equivalent:
        print(f"  equivalent  {o.mutant.id}: {o.mutant.equivalent}")
    for o in unexplained:
        print(f"  SURVIVED    {o.mutant.id} ({o.mutant.file}): {o.mutant.why}\n"
              f"              {o.mutant.old!r} -> {o.mutant.new!r}")
    for o in stale_marks:
        print(f"  MARKED EQUIVALENT BUT KILLED  {o.mutant.id}: drop its `equivalent` note")
    for o in errors:
        print(f"  ERROR       {o.mutant.id}: {o.detail}")
    return 1 if unexplained or errors or stale_marks else 0


if __name__ == "__main__":
    sys.exit(main())
