"""The TensorRT host path's knobs, A/B on a GPU: end-to-end `infer` from pageable numpy per batch
for the default runner options and each variant below (the defaults' nearest alternatives, as
measured by tools/h200-e2e-probe), interleaved call by call so drift hits all
alike; median of `--calls` calls each. Engines come from the cache (built when missing).

    python tools/trt-staging-ab.py [--batches 32,256,4096] [--calls 200] [--precision fp16]
        [--variants "default,host check"] [--feed pageable|pinned]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from model import cache, data, zoo  # noqa: E402
from model.artifacts import ModelArtifacts  # noqa: E402
from model.backends.tensorrt.engine_set import TrtEngineSet  # noqa: E402
from model.profile import DEFAULT_PROFILE  # noqa: E402
from model.zoo.simplecnn import INPUT_NAME  # noqa: E402

HOST = {"finite_check": "dot"}  # the NaN/Inf check on the host, the default before the GPU's
NUMPY = {"copier": "numpy"}  # np.copyto on the calling thread and the staging workers
TORCH = {"copier": "torch"}  # torch's parallel CPU copy, one per sub-batch (host_copy.py)
VARIANTS = {
    "default": {},
    "default again": {},  # a second runner with the default options: how much the same code moves
    "host check": HOST,
    "host check np.isfinite": {"finite_check": "isfinite"},
    "numpy copies": NUMPY,
    "numpy; 2 pieces per thread": {**NUMPY, "pieces_per_thread": 2},
    "numpy; 4 pieces per thread": {**NUMPY, "pieces_per_thread": 4},
    "numpy; 3 workers": {**NUMPY, "staging_threads": 3},
    "numpy; 11 workers": {**NUMPY, "staging_threads": 11},
    "numpy; graph split from 1 MiB": {**NUMPY, "split_bytes": 1 << 20},
    "numpy; graph split from 1 MiB; 3 workers": {**NUMPY, "split_bytes": 1 << 20, "staging_threads": 3},
    "torch copies": TORCH,
    "torch; no feeder": {**TORCH, "staging_threads": 0},
    "torch; runs of 6 MiB": {**TORCH, "subbatch_bytes": 6 << 20},
    "torch; runs of 24 MiB": {**TORCH, "subbatch_bytes": 24 << 20},
    "torch; graph path to 1 MiB": {**TORCH, "graph_max_bytes": 1 << 20},
    "torch; graph path to 1 MiB; runs of 1.5 MiB": {**TORCH, "graph_max_bytes": 1 << 20, "subbatch_bytes": 3 << 19},
    "graph path to 1 MiB": {"graph_max_bytes": 1 << 20},
    "runs of 6 MiB": {"subbatch_bytes": 6 << 20},
    "runs of 24 MiB": {"subbatch_bytes": 24 << 20},
    "no sub-batches": {"subbatch_bytes": 0},
    "float32 uploads": {"upload_half": False},  # the default before half-precision uploads
    "half; runs of 24 MiB": {"upload_half": True, "subbatch_bytes": 24 << 20},
    "half; runs of 6 MiB": {"upload_half": True, "subbatch_bytes": 6 << 20},
    "half; no sub-batches": {"upload_half": True, "subbatch_bytes": 0},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="32,256,4096")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--precision", default="fp16")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, of: " + ", ".join(VARIANTS))
    parser.add_argument("--feed", choices=("pageable", "pinned"), default="pageable",
                        help="pinned: each runner's own pinned buffers (pinned_inputs), filled once")
    args = parser.parse_args()
    chosen = args.variants.split(",")
    unknown = set(chosen) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; of {list(VARIANTS)}")
    dataset = data.load(data.SYNTHETIC)
    arts = ModelArtifacts(zoo.get("simplecnn"), cache.DEFAULT_CACHE, profile=DEFAULT_PROFILE, progress=False)
    plans = {p: e.plan() for p, e in arts.engine_set(args.precision).items()}
    runners = {name: TrtEngineSet(plans, label=args.precision, declared=arts.spec.input_metadata(),
                                  runner_options=VARIANTS[name]).activate() for name in chosen}
    print(f"end-to-end infer from {args.feed} numpy, TensorRT {args.precision}, median of {args.calls} interleaved calls (ms)")
    print("batch | " + " | ".join(chosen))
    try:
        for batch in (int(b) for b in args.batches.split(",")):
            x = np.ascontiguousarray(dataset.holdout.x[np.arange(batch) % len(dataset.holdout)])
            feeds = {}
            for name, runner in runners.items():
                feeds[name] = {INPUT_NAME: x}
                if args.feed == "pinned":
                    feeds[name] = runner.pinned_inputs(batch)
                    feeds[name][INPUT_NAME][:] = x
            times = {name: [] for name in runners}
            for name, runner in runners.items():
                for _ in range(5):
                    runner.infer(feeds[name])
            for _ in range(args.calls):
                for name, runner in runners.items():
                    start = time.perf_counter()
                    runner.infer(feeds[name])
                    times[name].append(time.perf_counter() - start)
            print(f"{batch} | " + " | ".join(f"{statistics.median(t) * 1e3:.3f}" for t in times.values()))
    finally:
        for runner in runners.values():
            runner.deactivate()


if __name__ == "__main__":
    main()
