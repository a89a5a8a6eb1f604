"""`python -m model compare`: the side-by-side comparison of every backend this machine can run,
for one model or several (`--model`, `--onnx`)."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from onnx.checker import ValidationError

from model import machine, options, report, validate
from model.artifacts import ModelArtifacts
from model.backends.registry import BACKENDS, DEFAULT_BACKENDS
from model.backends.tensorrt import build_slots
from model.diagnose import command as diagnose_command
from model.evaluate import measure
from model.export import exporter_of
from model.spec import ModelSpec, SpecError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m model", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compare", help="build or load each model, export it, and compare every available backend")
    options.add_to_argparse(c)
    e = sub.add_parser("export", help="write each model's ONNX files (FP32 and its FP16/INT8 variants) into the cache")
    options.add_to_argparse(e)
    sub.add_parser("models", help="list the shipped models")
    sub.add_parser("backends", help="list the backends, what each needs, and whether this machine has it")
    r = sub.add_parser("report", help="merge pytest-benchmark JSON files and comparison.json into one report")
    r.add_argument("benchmarks", nargs="+", type=Path, help="pytest-benchmark JSON files (--benchmark-json)")
    r.add_argument("--comparison", nargs="*", type=Path, default=[], help="comparison.json files from `compare`")
    r.add_argument("--out", type=Path, default=Path("out/report"), help="folder for report.md/.json and latency.png")
    diagnose_command.add_parser(sub)
    return parser


def report_cmd(args) -> int:
    from model import bench_report

    paths = bench_report.build(args.benchmarks, args.comparison, args.out)
    print(paths["markdown"].read_text())
    print(f"wrote {paths['markdown']}, {paths['json']} and {paths['plot']}")
    return 0


def _specs(args) -> list[ModelSpec]:
    return options.model_specs(args.model, args.onnx, args.axis, default=["simplecnn"])


DEFAULT_BATCHES = (1, 32, 256)


def batch_sizes(spec: ModelSpec, args) -> list[int]:
    return args.batch_sizes or [n for n in DEFAULT_BATCHES if n in (args.profile or spec.profile)]


def _artifacts(spec: ModelSpec, args) -> ModelArtifacts:
    outside = [n for n in batch_sizes(spec, args) if n not in (args.profile or spec.profile)]
    if outside:
        raise ValueError(f"--batch-sizes {outside} lie outside {spec.name}'s profile ({args.profile or spec.profile}); "
                         "widen --profile")
    return ModelArtifacts(spec, args.cache_dir, profile=args.profile, data=args.data, workspace=args.workspace_mb << 20,
                          epochs=args.epochs, retrain=args.retrain)


def _summary(arts: ModelArtifacts, args, results: list[dict]) -> dict:
    dataset = arts.dataset
    return {
        "model": arts.spec.name, "source": arts.spec.source, "reference": arts.reference,
        "data": dataset.name if dataset else "sample inputs (seeded)",
        "holdout_size": len(dataset) if dataset else None, "batch_sizes": batch_sizes(arts.spec, args),
        "profile": str(arts.profile), "axes": {a.name: [a.min, a.opt, a.max] for a in arts.spec.axes},
        "machine": machine.describe(), "training": arts.built().info if arts.has_module else {},
        # Which exporter wrote the ONNX file the ONNX Runtime and TensorRT rows ran ({} for a user's file).
        "onnx_export": exporter_of(arts.onnx) if "onnx" in vars(arts) and arts.has_module else {},
        "results": results,
    }


def compare_model(arts: ModelArtifacts, args) -> dict:
    names = [arts.reference] + [n for n in (args.backends or DEFAULT_BACKENDS) if n != arts.reference]
    results, reference = [], None
    for name in names:
        if results:
            # Written before each backend after the first: a native crash (a segfault in a runtime, a
            # process killed for memory) cannot be caught, and leaves the rows measured so far on disk.
            report.write(args.out / arts.spec.name, {**_summary(arts, args, results), "stopped_at": name})
        print(f"[compare] {arts.spec.name}: {name} ...", file=sys.stderr, flush=True)
        result, outputs = measure(BACKENDS[name], arts, batch_sizes(arts.spec, args), reference, runs=args.runs,
                                  is_reference=name == arts.reference)
        if name == arts.reference:
            reference = outputs
        if result.failed:
            print(f"[compare] {arts.spec.name}: {name} failed: {result.error}", file=sys.stderr, flush=True)
        results.append({**result.to_dict(), "failed": result.failed})
    return _summary(arts, args, results)


def _check_locations(args) -> None:
    """Everything a later step would trip over, checked before the first minute of work."""
    if getattr(args, "out", None) is not None and args.command == "compare":
        validate.writable_folder(args.out, "--out")
    validate.writable_folder(args.cache_dir, "--cache-dir")


def compare(args) -> int:
    specs = _specs(args)
    _check_locations(args)
    arts = [_artifacts(spec, args) for spec in specs]  # every model's batch sizes checked before any work
    for a in arts:
        a.dataset  # a missing or unreadable data folder is a usage error, found before any model is measured
    failed = []
    for a in arts:
        try:
            summary = compare_model(a, args)
        except Exception as exc:  # one model's fault (its data, its module) leaves the others' results
            print(f"error: {a.spec.name}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            failed.append(a.spec.name)
            continue
        # Printed first: should writing fail after all (a full disk), the results are on screen.
        print(f"\n## {summary['model']} (reference: {summary['reference']}; data: {summary['data']})")
        print(report.seed_style(summary["results"]))
        print(report.markdown_table(summary["results"], summary["batch_sizes"]), flush=True)
        paths = report.write(args.out / summary["model"], summary)
        print(f"wrote {paths['markdown']} and {paths['json']}")
        failed += [f"{summary['model']}: {r['backend']}" for r in summary["results"] if r["failed"]]
    if failed:
        print(f"error: failed: {', '.join(failed)} (the other results are above and in {args.out})", file=sys.stderr)
        return 1
    return 0


def export(args) -> int:
    specs = _specs(args)
    _check_locations(args)
    for spec in specs:
        arts = _artifacts(spec, args)
        print(f"{spec.name}: fp32 {arts.onnx}")
        for precision in spec.precisions:
            if precision != "fp32":
                print(f"{spec.name}: {precision} {arts.onnx_variant(precision)}")
    return 0


def list_models(_args) -> int:
    from model import zoo

    for spec in zoo.shipped().values():
        ins = ", ".join(f"{t.name} {t.dtype} {t.shape}" for t in spec.inputs)
        print(f"{spec.name}: inputs {ins}; precisions {'/'.join(spec.precisions)}; batch {spec.profile}"
              + (f"; axes {', '.join(f'{a.name} {a.min}..{a.max}' for a in spec.axes)}" if spec.axes else ""))
    return 0


def list_backends(_args) -> int:
    for b in BACKENDS.values():
        missing = b.missing()
        print(f"{b.name}: {b.framework} {b.precision}, needs {', '.join(b.needs) or 'nothing beyond requirements.txt'}"
              f" -> {'available' if missing is None else 'not here: ' + missing.reason}")
    return 0


COMMANDS = {"compare": compare, "export": export, "models": list_models, "backends": list_backends, "report": report_cmd,
            "diagnose": diagnose_command.run}


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        build_slots.slots()  # $MODEL_TRT_BUILDS_PER_GPU, checked before any training or export
        return COMMANDS[args.command](args)
    except (RuntimeError, ValueError, OSError, SpecError, ValidationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
