"""`python -m model compare`: the side-by-side comparison of every backend this machine can run."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from onnx.checker import ValidationError

from model import cache, data, machine, report, validate
from model.backends import BACKENDS, DEFAULT_BACKENDS, ModelArtifacts
from model.evaluate import measure
from model.engine import DEFAULT_WORKSPACE
from model.profile import DEFAULT_PROFILE, BatchProfile
from model.training import TrainConfig, load_or_train

REFERENCE = "pytorch-cpu"


def _arg(parse):
    """An argparse type from a validate parser: argparse names the option in the error."""
    def parse_arg(text: str):
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    parse_arg.__name__ = parse.__name__
    return parse_arg


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
    c.add_argument("--batch-sizes", type=_arg(validate.batch_sizes), default=[1, 32, 256], help="latency batch sizes (default 1,32,256)")
    c.add_argument("--profile", type=_arg(BatchProfile.parse), default=DEFAULT_PROFILE,
                   help="batch range every runner declares and TensorRT builds for, MIN,OPT,MAX[,STATIC]: one "
                        "TensorRT engine per opt batch ('/' between several) and one fixed-shape engine per "
                        f"static batch (default {DEFAULT_PROFILE.spec()})")
    c.add_argument("--workspace-mb", type=_arg(validate.positive_int), default=DEFAULT_WORKSPACE >> 20,
                   help="TensorRT builder workspace limit in MiB (default %(default)s)")
    c.add_argument("--backends", type=_backend_list, default=DEFAULT_BACKENDS,
                   help=f"comma-separated, from {','.join(BACKENDS)} (default: {','.join(DEFAULT_BACKENDS)})")
    c.add_argument("--out", type=Path, default=Path("out"), help="folder for comparison.json/.md (default out/)")
    c.add_argument("--cache-dir", type=Path, default=cache.DEFAULT_CACHE, help="weights/ONNX/engine cache")
    c.add_argument("--epochs", type=_arg(validate.positive_int), default=TrainConfig().epochs, help="training epochs when not cached")
    c.add_argument("--retrain", action="store_true", help="train again even if a cached checkpoint matches")
    c.add_argument("--runs", type=_arg(validate.positive_int), default=20, help="timed calls per batch size (default 20)")
    r = sub.add_parser("report", help="merge pytest-benchmark JSON files and comparison.json into one report")
    r.add_argument("benchmarks", nargs="+", type=Path, help="pytest-benchmark JSON files (--benchmark-json)")
    r.add_argument("--comparison", nargs="*", type=Path, default=[], help="comparison.json files from `compare`")
    r.add_argument("--out", type=Path, default=Path("out/report"), help="folder for report.md/.json and latency.png")
    return parser


def report_cmd(args) -> int:
    from model import bench_report

    validate.writable_folder(args.out, "--out")
    paths = bench_report.build(args.benchmarks, args.comparison, args.out)
    print(paths["markdown"].read_text())
    print(f"wrote {paths['markdown']}, {paths['json']} and {paths['plot']}")
    return 0


def compare(args) -> int:
    # Everything a later step would trip over is checked before the first minute of work.
    validate.batches_in_profile(args.batch_sizes, args.profile)
    validate.writable_folder(args.out, "--out")
    validate.writable_folder(args.cache_dir, "--cache-dir")
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
    # Printed first: should writing fail after all (a full disk), the results are on screen.
    print(report.seed_style(results))
    print(report.markdown_table(results, args.batch_sizes), flush=True)
    paths = report.write(args.out, summary)
    print(f"wrote {paths['markdown']} and {paths['json']}")
    return 0


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return compare(args) if args.command == "compare" else report_cmd(args)
    except (RuntimeError, ValueError, OSError, ValidationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
