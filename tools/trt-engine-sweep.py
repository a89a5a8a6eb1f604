"""Which engine build options make SimpleCNN fastest on this GPU (TensorRT 8.6): the profile's opt
batch, builder optimization level 3 vs 5, FP16 I/O, FP16 flag vs typed FP16 graph, INT8 (Q/DQ).
Per engine and batch: wall time of a CUDA graph replay plus sync, GPU time between events, and
back-to-back launches; for the first engine also TensorRT's layers, tactics and per-layer times.

    source /tmp/gpu-kit/env.sh && $KIT_PY tools/trt-engine-sweep.py SECONDS FOLDER/
FOLDER holds fp32.onnx, fp16.onnx and int8.onnx (copies of the cached exports in .cache/onnx/).
"""
import sys, time, json, ctypes
import numpy as np
import tensorrt as trt
from cuda.bindings import runtime as rt

T0 = time.time()
BUDGET = float(sys.argv[1]) if len(sys.argv) > 1 else 480
LOG = trt.Logger(trt.Logger.WARNING)
TC = {}


def ck(r):
    s, *v = r if isinstance(r, tuple) else (r,)
    assert s == rt.cudaError_t.cudaSuccess, s
    return v[0] if len(v) == 1 else v


def build(onnx, precision, opt, level=3, io16=False, lo=1, hi=4096, detail=False, tactics=None):
    b = trt.Builder(LOG)
    net = b.create_network(1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))
    p = trt.OnnxParser(net, LOG)
    assert p.parse(open(onnx, "rb").read())
    c = b.create_builder_config()
    c.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1 << 30)
    c.clear_flag(trt.BuilderFlag.TF32)
    if precision in ("fp16", "int8"):
        c.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        c.set_flag(trt.BuilderFlag.INT8)
    c.builder_optimization_level = level
    if tactics:  # extra tactic sources (cuBLAS, cuBLASLt, cuDNN) on top of TensorRT's defaults
        c.set_tactic_sources(c.get_tactic_sources() | sum(1 << int(getattr(trt.TacticSource, t)) for t in tactics))
    if detail:
        c.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    if io16:
        net.get_input(0).dtype = trt.float16
        net.get_output(0).dtype = trt.float16
    pr = b.create_optimization_profile()
    pr.set_shape("input", (lo, 3, 32, 32), (opt, 3, 32, 32), (hi, 3, 32, 32))
    c.add_optimization_profile(pr)
    key = (precision, tuple(tactics or ()))
    cache = c.create_timing_cache(TC.get(key, b""))
    c.set_timing_cache(cache, False)
    t = time.time()
    plan = b.build_serialized_network(net, c)
    TC[key] = bytes(c.get_timing_cache().serialize())
    return bytes(plan), time.time() - t


class Prof(trt.IProfiler):
    def __init__(self):
        trt.IProfiler.__init__(self)
        self.t = {}

    def report_layer_time(self, name, ms):
        self.t.setdefault(name, []).append(ms)


def measure(plan, batch, io16=False, layers=False, inspect=False):
    runtime = trt.Runtime(LOG)
    eng = runtime.deserialize_cuda_engine(plan)
    ctx = eng.create_execution_context()
    ctx.set_input_shape("input", (batch, 3, 32, 32))
    isz = 2 if io16 else 4
    din = ck(rt.cudaMalloc(batch * 3072 * isz))
    dout = ck(rt.cudaMalloc(batch * 100 * isz))
    ctx.set_tensor_address("input", int(din)); ctx.set_tensor_address("output", int(dout))
    ck(rt.cudaMemset(din, 0, batch * 3072 * isz))
    s = ck(rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking))
    assert ctx.execute_async_v3(int(s)); ck(rt.cudaStreamSynchronize(s))
    out = {}
    if inspect:
        ins = eng.create_engine_inspector(); ins.execution_context = ctx
        info = json.loads(ins.get_engine_information(trt.LayerInformationFormat.JSON), strict=False)
        out["layers"] = [(l.get("Name", l) if isinstance(l, dict) else l)[:90] for l in info["Layers"]]
        out["tactics"] = [(l.get("TacticName") or l.get("Tactic Name") or "")[:70] if isinstance(l, dict) else "" for l in info["Layers"]]
    if layers:
        prof = Prof(); ctx.profiler = prof
        for _ in range(30):
            ctx.execute_v2([int(din), int(dout)])
        out["layer_us"] = {k: round(1000 * float(np.median(v)), 1) for k, v in prof.t.items()}
        del ctx
        eng = runtime.deserialize_cuda_engine(plan)
        ctx = eng.create_execution_context()
        ctx.set_input_shape("input", (batch, 3, 32, 32))
        ctx.set_tensor_address("input", int(din)); ctx.set_tensor_address("output", int(dout))
        assert ctx.execute_async_v3(int(s)); ck(rt.cudaStreamSynchronize(s))
    ck(rt.cudaStreamBeginCapture(s, rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal))
    assert ctx.execute_async_v3(int(s))
    g = ck(rt.cudaStreamEndCapture(s))
    ge = ck(rt.cudaGraphInstantiate(g, 0))
    n = 300 if batch < 1000 else 100
    for _ in range(30):
        ck(rt.cudaGraphLaunch(ge, s)); ck(rt.cudaStreamSynchronize(s))
    wall = []
    for _ in range(n):
        t = time.perf_counter(); ck(rt.cudaGraphLaunch(ge, s)); ck(rt.cudaStreamSynchronize(s)); wall.append(time.perf_counter() - t)
    e0, e1 = ck(rt.cudaEventCreate()), ck(rt.cudaEventCreate())
    gpu = []
    for _ in range(n // 2):
        ck(rt.cudaEventRecord(e0, s)); ck(rt.cudaGraphLaunch(ge, s)); ck(rt.cudaEventRecord(e1, s)); ck(rt.cudaStreamSynchronize(s))
        gpu.append(ck(rt.cudaEventElapsedTime(e0, e1)) / 1000)
    t = time.perf_counter()
    for _ in range(n):
        ck(rt.cudaGraphLaunch(ge, s))
    ck(rt.cudaStreamSynchronize(s)); back = (time.perf_counter() - t) / n
    out.update(wall_us=round(1e6 * float(np.median(wall)), 1), wall_p10=round(1e6 * float(np.percentile(wall, 10)), 1),
               gpu_us=round(1e6 * float(np.median(gpu)), 1), b2b_us=round(1e6 * back, 1),
               Mimg_s=round(batch / float(np.median(wall)) / 1e6, 3))
    for x in (din, dout):
        ck(rt.cudaFree(x))
    ck(rt.cudaGraphExecDestroy(ge)); ck(rt.cudaStreamDestroy(s))
    return out


def left():
    return BUDGET - (time.time() - T0)



def main():
    print("TensorRT", trt.__version__, flush=True)
    # empty-sync overhead
    s = ck(rt.cudaStreamCreate())
    t = time.perf_counter()
    for _ in range(2000):
        ck(rt.cudaStreamSynchronize(s))
    print(f"cudaStreamSynchronize idle: {1e6*(time.perf_counter()-t)/2000:.2f} us", flush=True)

    D = sys.argv[2] if len(sys.argv) > 2 else ".scratch/"
    runs = [  # (label, onnx, precision, opt, level, io16, batches)
        ("fp16 opt32 L3", "fp32.onnx", "fp16", 32, 3, False, [1, 32, 4096]),
        ("fp16 opt4096 L3", "fp32.onnx", "fp16", 4096, 3, False, [4096]),
        ("fp16 opt4096 L5", "fp32.onnx", "fp16", 4096, 5, False, [4096]),
        ("int8 opt32 L3", "int8.onnx", "int8", 32, 3, False, [32, 4096]),
        ("int8 opt4096 L5", "int8.onnx", "int8", 4096, 5, False, [4096]),
        ("fp16 opt1 L5", "fp32.onnx", "fp16", 1, 5, False, [1]),
        ("fp16 opt32 L5", "fp32.onnx", "fp16", 32, 5, False, [1, 32]),
        ("fp16 opt32 L5 io16", "fp32.onnx", "fp16", 32, 5, True, [1, 32]),
        ("fp16 opt4096 L5 io16", "fp32.onnx", "fp16", 4096, 5, True, [4096]),
        ("int8 opt4096 L5 io16", "int8.onnx", "int8", 4096, 5, True, [4096]),
        ("fp16typed opt4096 L5", "fp16.onnx", "fp16", 4096, 5, False, [4096]),
    ]
    first = True
    for label, onnx, prec, opt, lvl, io16, batches in runs:
        if left() < 60:
            print("budget spent; skipping", label, flush=True); continue
        plan, secs = build(D + onnx, prec, opt, lvl, io16, detail=first)
        for b in batches:
            r = measure(plan, b, io16, layers=first and b in (1, 32), inspect=first and b == 32)
            lay = r.pop("layer_us", None); names = r.pop("layers", None); tac = r.pop("tactics", None)
            print(f"{label:24s} build {secs:5.1f}s size {len(plan)/1e6:5.2f}MB bs{b:<5d} {r}", flush=True)
            if names:
                for nm, tc in zip(names, tac):
                    print("   layer:", nm, "|", tc)
            if lay:
                print(f"   per-layer bs{b} (sum {sum(lay.values()):.1f} us):", lay, flush=True)
        first = False
    print(f"done in {time.time()-T0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
