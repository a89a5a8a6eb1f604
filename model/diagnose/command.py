"""`python -m model diagnose --model M --backend B [--repair] [--keep-fp32 FILE] [--out DIR]`: where a
backend's answers leave the reference, layer by layer, and (with --repair) which layers to keep in
float32 to bring them back."""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from model import cache, options, validate
from model.diagnose.layers import DEFAULT_ROWS

TABLE_ROWS = 40  # a 100-layer model prints the rows around the first diverging layer and the worst


def add_parser(sub) -> argparse.ArgumentParser:
    d = sub.add_parser("diagnose", help="compare one backend with ONNX Runtime CPU FP32 layer by layer; "
                                        "--repair proposes layers to keep in float32")
    d.add_argument("--model", required=True, help="a shipped model name, path/to/file.py:factory or path/to/model.onnx")
    d.add_argument("--backend", required=True, type=_one_backend, help="the backend to diagnose, e.g. onnxruntime-cpu-fp16 or tensorrt-int8")
    d.add_argument("--repair", action="store_true",
                   help="search a small set of layers to keep in float32 so parity (and accuracy) passes; "
                        "written as <out>/<model>-keep-fp32.json, applied only when you pass it back")
    d.add_argument("--keep-fp32", type=Path, default=None, metavar="FILE",
                   help="a repair file ({\"fp16\": [node, ...], \"int8\": [...]}) to apply before diagnosing")
    d.add_argument("--rows", type=options.positive_int, default=DEFAULT_ROWS,
                   help="rows of held-out data (or seeded samples) compared (default %(default)s)")
    d.add_argument("--axis", type=options.axis, action="append", default=None, metavar="NAME=MIN,OPT,MAX",
                   help="range of a dynamic axis other than the batch, for an ONNX --model")
    d.add_argument("--data", default="synthetic", help="SimpleCNN's data (as for compare)")
    d.add_argument("--cache-dir", type=Path, default=cache.DEFAULT_CACHE, help="artifact cache (default %(default)s)")
    d.add_argument("--out", type=Path, default=Path("out/diagnose"),
                   help="folder for <model>-<backend>.json/.md/.png (default %(default)s)")
    return d


def _one_backend(text: str) -> str:
    names = options.backend_list(text)
    if len(names) != 1:
        raise argparse.ArgumentTypeError(f"diagnose takes one backend, received {text!r}")
    return names[0]


def run(args) -> int:
    from model import sources
    from model.artifacts import ModelArtifacts
    from model.diagnose import report
    from model.diagnose.layers import diagnosis_feed
    from model.diagnose.run import diagnose
    from model.diagnose.repair import Repair, load_keep_file, write_keep_file

    spec = sources.resolve(args.model, list(args.axis or []))
    if args.keep_fp32 is not None:
        spec = replace(spec, keep_fp32=load_keep_file(args.keep_fp32))
    validate.writable_folder(args.out, "--out")
    validate.writable_folder(args.cache_dir, "--cache-dir")
    arts = ModelArtifacts(spec, args.cache_dir, data=args.data)
    feed = diagnosis_feed(arts, args.rows)
    repairer = Repair(arts, args.backend, feed) if args.repair else None
    diagnosis = diagnose(arts, args.backend, feed, repairer.reference if repairer else None)
    print(report.summary(diagnosis))
    print(report.table(diagnosis, TABLE_ROWS), flush=True)
    result = None
    if repairer is not None:
        print(f"\n[repair] searching layers of {spec.name} to keep in float32 on {args.backend} ...", file=sys.stderr,
              flush=True)
        result = repairer.search(diagnosis)
        print(repair_summary(result))
        if result["passed"] and result["keep_fp32"]:
            path = write_keep_file(args.out / f"{spec.name}-keep-fp32.json", result["precision"], result["keep_fp32"])
            result["file"] = str(path)
            print(f"proposed repair written to {path}; check it with\n  python -m model diagnose --model {args.model} "
                  f"--backend {args.backend} --keep-fp32 {path}\nand apply it with ModelSpec(keep_fp32=...) in the "
                  "model's spec (docs/diagnose.md)")
    paths = report.write(diagnosis, args.out, result)
    print(f"wrote {paths['markdown']}, {paths['json']} and {paths['plot']}")
    return 0 if result is None or result["passed"] else 1


def repair_summary(result: dict) -> str:
    before, after = result["before"], result["after"]
    lines = [f"repair ({result['method']}, {result['builds']} builds, {result['seconds']} s):"]
    if after is None:
        return "\n".join(lines + [f"  none found: {result['method']}", f"  before: {before['message']}"])
    kept = ", ".join(result["keep_fp32"]) or "nothing (it already passes)"
    lines += [f"  keep in float32: {kept}",
              f"  before: max abs {before['max_abs']:.3g}: {before['message']}",
              f"  after:  max abs {after['max_abs']:.3g}: {after['message']}",
              f"  cost: latency {before['latency_ms']:.3f} -> {after['latency_ms']:.3f} ms per call (median of 20, "
              f"measured here), size {before['size_bytes']} -> {after['size_bytes']} bytes"]
    return "\n".join(lines)
