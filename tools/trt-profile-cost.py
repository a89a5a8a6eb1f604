"""Where batch-1 device-resident time goes: an FP16 engine with one optimization profile (opt 32)
vs two (opt 32 and 4096), each replayed as a CUDA graph through the runner's wrappers, through raw
cuda-python calls, between CUDA events (GPU time) and back to back (launch-bound throughput).

    source /tmp/gpu-kit/env.sh && PYTHONPATH=. $KIT_PY tools/trt-profile-cost.py MODEL.onnx
"""
import sys
import time

import numpy as np
from cuda.bindings import runtime as rt

from model.backends.tensorrt import cuda as cuda_rt
from model.backends.tensorrt.build import EngineSpec, build_plan
from model.backends.tensorrt.runner import TrtRunner
from model.profile import BatchProfile

T0 = time.time()
x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
plans = {}
for label, prof in [("one profile (32)", BatchProfile(1, (32,), 4096)), ("two profiles (32, 4096)", BatchProfile(1, (32, 4096), 4096))]:
    t = time.time()
    plans[label], _ = build_plan(sys.argv[1], EngineSpec(precision="fp16", profile=prof))
    print(f"{label}: built in {time.time() - t:.1f}s, {len(plans[label]) / 1e6:.2f} MB", flush=True)


def stats(v):
    return f"{1e6 * float(np.median(v)):.1f}"


for rep in range(2):
    for label, plan in plans.items():
        with TrtRunner(plan, label="fp16") as r:
            r.upload({"input": x})
            g = r.capture_graph()
            s = r.stream
            for _ in range(200):
                g.launch(); s.synchronize()
            wrap = []
            for _ in range(1000):
                t = time.perf_counter(); g.launch(); s.synchronize(); wrap.append(time.perf_counter() - t)
            chunk = []
            for _ in range(100):
                t = time.perf_counter()
                for _ in range(10):
                    g.launch(); s.synchronize()
                chunk.append((time.perf_counter() - t) / 10)
            raw = []
            ge, sh = g._exec, s.handle
            for _ in range(1000):
                t = time.perf_counter(); rt.cudaGraphLaunch(ge, sh); rt.cudaStreamSynchronize(sh); raw.append(time.perf_counter() - t)
            e0, e1, gpu = cuda_rt.Event(), cuda_rt.Event(), []
            for _ in range(300):
                e0.record(s); g.launch(); e1.record(s); s.synchronize(); gpu.append(e1.ms_since(e0) / 1e3)
            t = time.perf_counter()
            for _ in range(1000):
                g.launch()
            s.synchronize(); b2b = (time.perf_counter() - t) / 1000
            print(f"rep{rep} {label:24s} bs1 wrapper {stats(wrap)} us | 10-call chunks {stats(chunk)} | raw {stats(raw)} | "
                  f"gpu events {stats(gpu)} | back-to-back {1e6 * b2b:.1f}", flush=True)
            e0.free(); e1.free(); r.release_graph()
print(f"done in {time.time() - T0:.0f}s")
