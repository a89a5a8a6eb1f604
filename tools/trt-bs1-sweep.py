"""Batch-1 FP16 engines on this GPU (TensorRT 8.6): does a narrower profile range, an opt batch of 1,
the cuBLAS/cuBLASLt/cuDNN tactic sources (off by default) or a static batch-1 shape cut
batch-1 device-resident time?
Each variant is built once and measured twice (wall of a CUDA graph replay plus sync, GPU time between
events, back-to-back launches); the layers and tactics are printed where they differ.

    source /tmp/gpu-kit/env.sh && $KIT_PY tools/trt-bs1-sweep.py SECONDS FOLDER/ [RUN,RUN...]
FOLDER holds fp32.onnx, fp16.onnx and int8.onnx (copies of the cached exports in .cache/onnx/).
"""
import importlib.util
import sys
import time
from pathlib import Path

spec = importlib.util.spec_from_file_location("sweep", Path(__file__).with_name("trt-engine-sweep.py"))
sweep = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sweep)

EXTRA = ["CUBLAS", "CUBLAS_LT", "CUDNN"]
RUNS = [  # (label, onnx, precision, opt, lo, hi, tactic sources)
    ("fp16 opt32 1..4096", "fp32.onnx", "fp16", 32, 1, 4096, None),
    ("fp16 opt32 1..362", "fp32.onnx", "fp16", 32, 1, 362, None),
    ("fp16 opt1 1..8", "fp32.onnx", "fp16", 1, 1, 8, None),
    ("fp16 opt32 1..4096 +cublas/cudnn", "fp32.onnx", "fp16", 32, 1, 4096, EXTRA),
    ("fp16 opt1 1..8 +cublas/cudnn", "fp32.onnx", "fp16", 1, 1, 8, EXTRA),
    ("fp16typed opt32 1..4096", "fp16.onnx", "fp16", 32, 1, 4096, None),
    ("fp16typed opt32 1..362", "fp16.onnx", "fp16", 32, 1, 362, None),
    # Static shapes: every dynamic build above printed "Engine generation failed with backend
    # strategy 3" (after "has_const_shape" checks); the static ones printed a strategy-2 failure
    # instead and came out with other kernels (bs1-static-sweep.log).
    ("fp16 static 1", "fp32.onnx", "fp16", 1, 1, 1, None),
    ("fp16typed static 1", "fp16.onnx", "fp16", 1, 1, 1, None),
    ("int8 opt32 1..4096", "int8.onnx", "int8", 32, 1, 4096, None),
    ("int8 static 1", "int8.onnx", "int8", 1, 1, 1, None),
    ("fp32 static 1", "fp32.onnx", "fp32", 1, 1, 1, None),
]


def pick(runs):
    """All runs, or those whose indexes argv[3] lists ("0,7,8")."""
    return [runs[int(i)] for i in sys.argv[3].split(",")] if len(sys.argv) > 3 else runs


def main():
    folder = sys.argv[2] if len(sys.argv) > 2 else ".scratch/"
    print("TensorRT", sweep.trt.__version__, flush=True)
    seen = None
    for label, onnx, precision, opt, lo, hi, tactics in pick(RUNS):
        if sweep.left() < 45:
            print("budget spent; skipping", label, flush=True)
            continue
        try:
            plan, secs = sweep.build(folder + onnx, precision, opt, 5, lo=lo, hi=hi, detail=True, tactics=tactics)
        except Exception as exc:  # a tactic source this install lacks, for one
            print(f"{label:34s} build failed: {exc}", flush=True)
            continue
        for rep in range(2):
            r = sweep.measure(plan, 1, inspect=rep == 0)
            names, tac = r.pop("layers", None), r.pop("tactics", None)
            print(f"{label:34s} build {secs:5.1f}s size {len(plan) / 1e6:5.2f}MB bs1 rep{rep} {r}", flush=True)
            if tac is not None and tac != seen:
                for nm, tc in zip(names, tac):
                    print("   layer:", nm, "|", tc)
                seen = tac
    print(f"done in {time.time() - sweep.T0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
