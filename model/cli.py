"""`python -m model compare`: the side-by-side comparison of every backend this machine can run."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from model import artifacts, data, machine, report
from model.backends import BACKENDS, DEFAULT_BACKENDS, ModelArtifacts
from model.evaluate import measure
from model.engine import DEFAULT_WORKSPACE
from model.profile import DEFAULT_PROFILE, BatchProfile
from model.training import TrainConfig, load_or_train

REFERENCE = "pytorch-cpu"


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, received {text!r}")
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"batch sizes must be positive integers, received {text!r}")
    return values


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, received {text!r}")
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, received {value}")
    return value


def _profile(text: str) -> BatchProfile:
    try:
        return BatchProfile.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc))


def _backend_list(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [n for n in names if n not in BACKENDS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown backends {unknown}; choose from {sorted(BACKENDS)}")
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m model", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compare", help="train or load SimpleCNN, export, and compare every available backend")
    c.add_argument("--data", default=data.SYNTHETIC,
                   help="'synthetic' (embedded, default) or the folder holding CIFAR-100's cifar-100-python/")
    c.add_argument("--download", action="store_true", help="download CIFAR-100 into --data if it is missing")
    c.add_argument("--batch-sizes", type=_int_list, default=[1, 32, 256], help="latency batch sizes (default 1,32,256)")
    c.add_argument("--profile", type=_profile, default=DEFAULT_PROFILE,
                   help="batch range every runner declares and TensorRT builds for, MIN,OPT,MAX[,STATIC]: one "
                        "TensorRT engine per opt batch ('/' between several) and one fixed-shape engine per "
                        f"static batch (default {DEFAULT_PROFILE.spec()})")
    c.add_argument("--workspace-mb", type=_positive_int, default=DEFAULT_WORKSPACE >> 20,
                   help="TensorRT builder workspace limit in MiB (default %(default)s)")
    c.add_argument("--backends", type=_backend_list, default=DEFAULT_BACKENDS,
                   help=f"comma-separated, from {','.join(BACKENDS)} (default: {','.join(DEFAULT_BACKENDS)})")
    c.add_argument("--out", type=Path, default=Path("out"), help="folder for comparison.json/.md (default out/)")
    c.add_argument("--cache-dir", type=Path, default=artifacts.DEFAULT_CACHE, help="weights/ONNX/engine cache")
    c.add_argument("--epochs", type=_positive_int, default=TrainConfig().epochs, help="training epochs when not cached")
    c.add_argument("--retrain", action="store_true", help="train again even if a cached checkpoint matches")
    c.add_argument("--runs", type=_positive_int, default=20, help="timed calls per batch size (default 20)")
    r = sub.add_parser("report", help="merge pytest-benchmark JSON files and comparison.json into one report")
    r.add_argument("benchmarks", nargs="+", type=Path, help="pytest-benchmark JSON files (--benchmark-json)")
    r.add_argument("--comparison", nargs="*", type=Path, default=[], help="comparison.json files from `compare`")
    r.add_argument("--out", type=Path, default=Path("out/report"), help="folder for report.md/.json and latency.png")
    return parser


def report_cmd(args) -> int:
    from model import bench_report

    paths = bench_report.build(args.benchmarks, args.comparison, args.out)
    print(paths["markdown"].read_text())
    print(f"wrote {paths['markdown']}, {paths['json']} and {paths['plot']}")
    return 0


def compare(args) -> int:
    outside = [n for n in args.batch_sizes if n not in args.profile]
    if outside:
        print(f"error: batch sizes {outside} lie outside the profile ({args.profile}); widen --profile", file=sys.stderr)
        return 2
    dataset = data.load(args.data, download=args.download)
    trained = load_or_train(dataset, TrainConfig(epochs=args.epochs), args.cache_dir, retrain=args.retrain)
    arts = ModelArtifacts(trained, args.cache_dir, profile=args.profile, calib_images=dataset.calib.x,
                          workspace=args.workspace_mb << 20)
    names = [REFERENCE] + [n for n in args.backends if n != REFERENCE]
    results, reference = [], None
    for name in names:
        print(f"[compare] {name} ...", file=sys.stderr, flush=True)
        result, predictions = measure(BACKENDS[name], arts, dataset.holdout, args.batch_sizes, reference,
                                      runs=args.runs)
        if name == REFERENCE:
            reference = predictions
            result.top1_agreement = None
        results.append(result.to_dict())
    summary = {
        "data": dataset.name, "holdout_size": len(dataset.holdout), "batch_sizes": args.batch_sizes,
        "profile": str(args.profile),
        "machine": machine.describe(), "training": trained.sidecar, "results": results,
    }
    paths = report.write(args.out, summary)
    print(report.seed_style(results))
    print(report.markdown_table(results, args.batch_sizes))
    print(f"wrote {paths['markdown']} and {paths['json']}")
    return 0


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return compare(args) if args.command == "compare" else report_cmd(args)
    except (RuntimeError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
