"""Issue 12's side-by-side verdict from benchmark JSON files and the main job's comparison.json
files (tools/h200-verify e2e prints it last).

    python tools/e2e-summary.py BENCH.json [...] [--comparison comparison.json ...]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from model import bench_report  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("benchmarks", nargs="+", type=Path)
parser.add_argument("--comparison", nargs="*", type=Path, default=[])
parser.add_argument("--backend", default="tensorrt-fp16")
args = parser.parse_args()
print(bench_report.side_by_side(bench_report.load_benchmarks(args.benchmarks), args.comparison, args.backend))
