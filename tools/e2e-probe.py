"""Issue 12's measurements for choosing the TensorRT host path's defaults, on a GPU machine, in one
process under a time budget (tools/h200-e2e-probe runs it in the GPU kit's Python):

  host   the host's own rates for a batch of SimpleCNN images (384 KiB = batch 32, 3 MiB = 256,
         12 MiB = 1024, 48 MiB = 4096): np.copyto into pinned memory on 1..16 threads of one pool
         (one contiguous slice per thread), the thread pool's round trip alone, each NaN/Inf check
         method of model/backends/tensorrt/staging.all_finite, and copy + check on T threads;
  cuda   host-to-device from pinned and from pageable memory, cudaHostRegister + unregister, the
         cost of single cuda-python calls, whether a stream synchronize releases the GIL, and a
         pipeline without TensorRT (workers copy + check chunks; uploads issued by the main thread
         per chunk, or by the workers themselves on their own streams, or after all staging);
  e2e    TensorRT FP16 `infer` from pageable numpy per batch for runner options (threads, chunk,
         sub-batch, graph-path size and split, check method), interleaved call by call, median;
         beside it the device-resident graph replay, the pinned feed, and a GPU-array feed
         (cuda-python buffer with __cuda_array_interface__) with outputs on the host and on the GPU.

Every figure is a median of repeated timings (wall clock, perf_counter). The table of the e2e
section is printed last; --json writes everything.

    python tools/e2e-probe.py [--budget 150] [--json OUT.json] [--sections host,cuda,e2e] [--batches 32,256,1024,4096]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from model.backends.tensorrt import cuda as cuda_rt  # noqa: E402
from model.backends.tensorrt import staging  # noqa: E402

ROW_BYTES = 3 * 32 * 32 * 4
SIZES = {"bs32": 32, "bs256": 256, "bs1024": 1024, "bs4096": 4096}
THREADS = (1, 2, 4, 6, 8, 12, 16)
T0 = time.perf_counter()
RESULTS: dict = {}
_POOLS: dict[int, ThreadPoolExecutor] = {}


def pool_of(threads: int) -> ThreadPoolExecutor:
    """A pool of exactly `threads` workers, its threads started before anything is timed."""
    if threads not in _POOLS:
        pool = _POOLS[threads] = ThreadPoolExecutor(threads, thread_name_prefix=f"probe{threads}")
        for f in [pool.submit(time.sleep, 0.01) for _ in range(threads)]:
            f.result()
    return _POOLS[threads]


def elapsed() -> float:
    return time.perf_counter() - T0


def say(text: str) -> None:
    print(f"[{elapsed():6.1f}s] {text}", flush=True)


def median_s(fn, reps: int, warm: int = 2) -> float:
    for _ in range(warm):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def reps_for(nbytes: int) -> int:
    return max(7, min(200, int(20e6 / max(nbytes, 1))))


def images(rows: int) -> np.ndarray:
    return np.random.default_rng(rows).standard_normal((rows, 3, 32, 32)).astype(np.float32)


# -- host ------------------------------------------------------------------------------------------

def section_host() -> None:
    out = RESULTS.setdefault("host", {})
    rt_us = {}
    for t in (1, 2, 4, 8, 16):
        def empty(t=t, pool=pool_of(t)):
            for f in [pool.submit(int) for _ in range(t)]:
                f.result()
        rt_us[t] = median_s(empty, 200, 20) * 1e6
    out["pool_round_trip_us"] = rt_us
    say("thread pool round trip (submit T empty tasks, wait all), us: " + ", ".join(f"T={t} {v:.0f}" for t, v in rt_us.items()))

    pinned = cuda_rt.PinnedBuffer(4096 * ROW_BYTES, np.float32)
    try:
        sources = {name: images(rows) for name, rows in SIZES.items()}
        checks = {}
        for name, x in sources.items():
            flat = x.reshape(-1)
            row = {m: median_s(lambda m=m: staging.all_finite(flat, m), reps_for(x.nbytes)) * 1e6 for m in staging.FINITE_CHECKS}
            row["copyto"] = median_s(lambda: np.copyto(pinned.array[: flat.size], flat), reps_for(x.nbytes)) * 1e6
            checks[name] = row
            say(f"{name} ({x.nbytes >> 10} KiB) one thread, us: " + ", ".join(f"{k} {v:.0f}" for k, v in row.items()))
        chunk = sources["bs4096"].reshape(-1)[: (1 << 20) // 4]
        checks["chunk_1MiB_hot"] = {m: median_s(lambda m=m: staging.all_finite(chunk, m), 200) * 1e6 for m in staging.FINITE_CHECKS}
        say("1 MiB chunk in cache, us: " + ", ".join(f"{k} {v:.1f}" for k, v in checks["chunk_1MiB_hot"].items()))
        out["check_us"] = checks

        copies = {}
        for name in ("bs256", "bs1024", "bs4096"):
            x = sources[name]
            target = pinned.array[: x.size].reshape(x.shape)
            row = {}
            for t in THREADS:
                parts = staging.split(0, len(x), t)

                def run(parts=parts, pool=pool_of(t)):
                    fs = [pool.submit(np.copyto, target[a:b], x[a:b]) for a, b in parts]
                    for f in fs:
                        f.result()
                row[t] = x.nbytes / median_s(run, reps_for(x.nbytes)) / 1e9
            copies[name] = row
            say(f"np.copyto pageable -> pinned, {name}, GB/s by threads: " + ", ".join(f"{t}: {v:.1f}" for t, v in row.items()))
        out["copy_gbs"] = copies

        staged = {}
        for name in ("bs256", "bs4096"):
            x = sources[name]
            target = pinned.array[: x.size].reshape(x.shape)
            for method in ("isfinite", "dot", "minmax"):
                item = [staging.Staged(x, target, True, method)]
                row = {}
                for t in (1, 2, 4, 8, 12, 16):
                    chunks = staging.split(0, len(x), max(t, x.nbytes >> 20))  # 1 MiB chunks, at least one per thread

                    def run(chunks=chunks, pool=pool_of(t)):
                        fs = [pool.submit(staging.stage_rows, item, a, b) for a, b in chunks]
                        for f in fs:
                            f.result()
                    row[t] = median_s(run, reps_for(x.nbytes)) * 1e3
                staged[f"{name}/{method}"] = row
                say(f"stage_rows (copy + {method}) in 1 MiB tasks, {name}, ms by threads: " + ", ".join(f"{t}: {v:.3f}" for t, v in row.items()))
        out["stage_ms"] = staged
    finally:
        pinned.free()


# -- cuda ------------------------------------------------------------------------------------------

def section_cuda() -> None:
    out = RESULTS.setdefault("cuda", {})
    rt = cuda_rt._runtime()
    stream = cuda_rt.Stream()
    big = 4096 * ROW_BYTES
    device, pinned = cuda_rt.DeviceBuffer(big), cuda_rt.PinnedBuffer(big, np.float32)
    try:
        h2d = {}
        for name, rows in SIZES.items():
            n = rows * ROW_BYTES
            pageable = images(rows).reshape(-1)
            row = {}
            for kind, host in (("pinned", pinned.array[: n // 4]), ("pageable", pageable)):
                def copy(host=host):
                    device.copy_from_host_async(host, stream)
                    stream.synchronize()
                row[f"h2d_{kind}_us"] = median_s(copy, reps_for(n)) * 1e6

            def register(pageable=pageable):
                cuda_rt.check(rt.cudaHostRegister(pageable.ctypes.data, pageable.nbytes, 0))
                cuda_rt.check(rt.cudaHostUnregister(pageable.ctypes.data))
            row["register_unregister_us"] = median_s(register, min(30, reps_for(n))) * 1e6
            h2d[name] = row
            say(f"{name}: H2D pinned {row['h2d_pinned_us']:.0f} us, pageable {row['h2d_pageable_us']:.0f} us, "
                f"cudaHostRegister+Unregister {row['register_unregister_us']:.0f} us")
        out["h2d"] = h2d
        out["register_parallel_ms"] = register_in_parallel(rt)

        event = cuda_rt.Event(timing=False)
        small = pinned.array[:1024]
        ptr = device.ptr
        calls = {
            "cudaMemcpyAsync 4 KiB pinned": lambda: device.copy_from_host_async(small, stream),
            "cudaEventRecord": lambda: event.record(stream),
            "cudaStreamWaitEvent": lambda: stream.wait(event),
            "cudaStreamSynchronize (idle)": stream.synchronize,
            "cudaEventSynchronize (done)": event.synchronize,
            "cudaPointerGetAttributes": lambda: cuda_rt.pointer_location(ptr),
        }
        out["call_us"] = {k: median_s(f, 2000, 50) * 1e6 for k, f in calls.items()}
        stream.synchronize()
        say("cuda-python calls, us: " + ", ".join(f"{k} {v:.1f}" for k, v in out["call_us"].items()))

        # Does a synchronize release the GIL? A Python thread counts while the host waits on a copy.
        count, stop = [0], threading.Event()

        def counter():
            while not stop.is_set():
                count[0] += 1
        th = threading.Thread(target=counter)
        th.start()
        time.sleep(0.01)
        before = count[0]
        start = time.perf_counter()
        for _ in range(10):
            device.copy_from_host_async(pinned.array, stream)
            stream.synchronize()
        waited = time.perf_counter() - start
        during = count[0] - before
        stop.set()
        th.join()
        out["gil_released_in_sync"] = {"counts_during_waits": during, "wait_s": waited}
        say(f"GIL during 10 waits of {waited * 1e3:.1f} ms: a Python thread counted {during} times "
            f"({'released' if during > 1000 else 'held'})")

        out["pipeline_ms"] = synthetic_pipeline(device, pinned, stream)
        event.free()
    finally:
        for thing in (device, pinned, stream):
            thing.free()


def register_in_parallel(rt) -> dict:
    """cudaHostRegister + Unregister of a 48 MiB pageable batch cut at page boundaries into T
    pieces on T threads (the alternative to staging copies: the DMA reads the caller's array)."""
    x = images(4096).reshape(-1)
    page = 4096
    lo = -(-x.ctypes.data // page) * page
    hi = (x.ctypes.data + x.nbytes) // page * page
    out = {}
    for t in (1, 2, 4, 8):
        pool = pool_of(t)
        cuts = [lo + (hi - lo) // page * i // t * page for i in range(t)] + [hi]
        pieces = list(zip(cuts[:-1], cuts[1:]))

        def run():
            for f in [pool.submit(lambda a, b: cuda_rt.check(rt.cudaHostRegister(a, b - a, 0)), a, b) for a, b in pieces]:
                f.result()
            for f in [pool.submit(lambda a: cuda_rt.check(rt.cudaHostUnregister(a)), a) for a, _ in pieces]:
                f.result()
        out[t] = median_s(run, 9) * 1e3
    say("cudaHostRegister + Unregister of 48 MiB in T pieces on T threads, ms: " + ", ".join(f"{t}: {v:.2f}" for t, v in out.items()))
    return out


def synthetic_pipeline(device, pinned, stream) -> dict:
    """48 MiB in 1 MiB chunks: copy + dot check by T workers, uploaded (a) by the main thread as
    each chunk's future completes, (b) by each worker right after its chunk on its own stream,
    (c) in one copy after all staging. Wall time until everything has landed on the GPU."""
    x = images(4096)
    target = pinned.array[: x.size].reshape(x.shape)
    chunks = staging.split(0, 4096, 48)
    item = [staging.Staged(x, target, True, "dot")]
    streams = {t: [cuda_rt.Stream() for _ in range(t)] for t in (2, 4, 8)}
    out = {}
    try:
        for t in (2, 4, 8):
            per_worker, pool = [chunks[i::t] for i in range(t)], pool_of(t)

            def main_uploads():
                fs = [pool.submit(staging.stage_rows, item, a, b) for a, b in chunks]
                for f, (a, b) in zip(fs, chunks):
                    f.result()
                    device.copy_from_host_async(target[a:b], stream, offset=a * ROW_BYTES)
                stream.synchronize()

            def worker_uploads():
                def work(mine, s):
                    for a, b in mine:
                        staging.stage_rows(item, a, b)
                        device.copy_from_host_async(target[a:b], s, offset=a * ROW_BYTES)
                fs = [pool.submit(work, mine, s) for mine, s in zip(per_worker, streams[t])]
                for f in fs:
                    f.result()
                for s in streams[t]:
                    s.synchronize()

            def after_staging():
                fs = [pool.submit(staging.stage_rows, item, a, b) for a, b in chunks]
                for f in fs:
                    f.result()
                device.copy_from_host_async(target, stream)
                stream.synchronize()
            out[t] = {name: median_s(fn, 15) * 1e3 for name, fn in
                      (("main thread uploads per chunk", main_uploads), ("workers upload", worker_uploads),
                       ("upload after staging", after_staging))}
            say(f"48 MiB staged + uploaded, {t} workers, ms: " + ", ".join(f"{k} {v:.2f}" for k, v in out[t].items()))
    finally:
        for ss in streams.values():
            for s in ss:
                s.free()
    return out


# -- e2e -------------------------------------------------------------------------------------------

def variants_for(batch: int) -> dict[str, dict]:
    """Runner options to race at `batch` ("default": the runner's own defaults). "graph": the
    whole batch copied on the calling thread, then one CUDA graph (copy in, engine, copy out);
    "split T": that staging shared by T threads; "pipe T": the calling thread and T workers each
    stage one piece of every sub-batch, each sub-batch uploaded and run once staged."""
    MiB = 1 << 20
    graph = {"graph_max_bytes": 64 * MiB, "split_bytes": 1 << 40}
    if batch <= 32:
        return {"default": {}, "graph, dot": {**graph, "finite_check": "dot"},
                "graph, isfinite": {**graph, "finite_check": "isfinite"}, "graph, minmax": {**graph, "finite_check": "minmax"},
                "graph, sum": {**graph, "finite_check": "sum"}, "graph split 2": {**graph, "split_bytes": 0, "staging_threads": 2},
                "pipe inline": {"graph_max_bytes": 0, "staging_threads": 0},
                "pipe 1 thr": {"graph_max_bytes": 0, "staging_threads": 1}}
    v = {"default": {}, "graph 1 thread": graph, "graph 1 thread isfinite": {**graph, "finite_check": "isfinite"}}
    for t in (1, 3):
        v[f"graph split {t + 1}"] = {**graph, "split_bytes": 0, "staging_threads": t}
    subs = (0, 1.5) if batch < 1024 else (3, 6, 12, 24) if batch >= 4096 else (0, 3, 6)
    for t in ((0, 1, 3) if batch < 1024 else (3, 5, 7, 11)):
        for sub in subs:
            v[f"pipe {t} thr, sub {sub} MiB"] = {"graph_max_bytes": 0, "staging_threads": t, "subbatch_bytes": int(sub * MiB)}
    if batch >= 1024:
        for check in ("isfinite", "minmax", "sum"):
            v[f"pipe 7 thr {check}"] = {"graph_max_bytes": 0, "staging_threads": 7, "finite_check": check}
    return v


class RealGpu:
    """The TensorRT FP16 SimpleCNN engines of the cache (built when missing) on the real GPU."""

    def __init__(self) -> None:
        from model import cache, zoo
        from model.artifacts import ModelArtifacts
        from model.profile import DEFAULT_PROFILE

        spec = zoo.get("simplecnn")
        arts = ModelArtifacts(spec, cache.DEFAULT_CACHE, profile=DEFAULT_PROFILE, progress=False)
        self.engines = arts.engine_set("fp16")
        say("engines: " + ", ".join(str(p) for p in self.engines))
        self.input_name, self.declared = spec.input_names[0], spec.input_metadata()

    def runner(self, batch: int, options: dict):
        """A runner over the one engine that serves `batch` (as the engine set would pick it)."""
        from model.backends.tensorrt.runner import TrtRunner
        from model.profile import serving_profile

        profiles = list(self.engines)
        plan = self.engines[profiles[serving_profile(batch, profiles)]].plan()
        return TrtRunner(plan, label="fp16", declared=self.declared, **options).activate()

    @staticmethod
    def gpu_array(x: np.ndarray):
        array = cuda_rt.DeviceArray.from_host(x)
        return array, array.free

    @staticmethod
    def device_target(runner, feed):
        from benchmarks.targets import tensorrt_graph

        return tensorrt_graph(runner, feed)[0]


class FakeGpuKit:
    """tools/trt-host-path-cost.py's fake GPU (copies and engine are no-ops), to try this probe on a
    machine without a GPU: its e2e figures are the host's share only."""

    def __init__(self) -> None:
        import importlib.util

        path = Path(__file__).parent / "trt-host-path-cost.py"
        spec = importlib.util.spec_from_file_location("trt_host_path_cost", path)
        self.tool = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(self.tool)
        self._graphs = self.tool.fake_graphs()
        self._graphs.__enter__()
        self.gpu = self.tool.FakeGpu(simulate=False)
        self.input_name = self.tool.INPUT_NAME

    def runner(self, batch: int, options: dict):
        runner = self.tool.fake_runner(self.gpu, **options)
        runner.deactivate = runner._stager.close
        return runner

    def gpu_array(self, x: np.ndarray):
        ptr = self.gpu.alloc(x.nbytes)

        class Array:
            __cuda_array_interface__ = {"shape": x.shape, "typestr": x.dtype.str, "data": (ptr, False),
                                        "version": 3, "strides": None, "stream": None}
        return Array(), lambda: None

    @staticmethod
    def device_target(runner, feed):
        runner.bind({n: v.shape for n, v in feed.items()})
        return runner.enqueue


def e2e(kit, batches: list[int], budget: float, calls: int) -> None:
    from model.backends.base import check_feed

    name = kit.input_name
    out = RESULTS.setdefault("e2e", {})
    for batch in batches:
        if elapsed() > budget:
            say(f"budget spent: batch {batch} not measured")
            continue
        x = images(batch)
        feed = {name: x}
        row = out.setdefault(batch, {})
        runners = {}
        try:
            for label, opts in variants_for(batch).items():
                runners[label] = kit.runner(batch, opts)
            for r in runners.values():
                for _ in range(5):
                    r.infer(feed)
            times = {label: [] for label in runners}
            n = calls if batch < 1024 else max(15, calls // 2)
            for _ in range(n):
                for label, r in runners.items():
                    start = time.perf_counter()
                    r.infer(feed)
                    times[label].append(time.perf_counter() - start)
                if elapsed() > budget + 20:
                    break
            row["pageable_ms"] = {label: statistics.median(t) * 1e3 for label, t in times.items()}
            ref = runners["default"]
            pinned_feed = ref.pinned_inputs(batch)
            pinned_feed[name][:] = x
            row["pinned_ms"] = median_s(lambda: ref.infer(pinned_feed), n) * 1e3
            gpu, free = kit.gpu_array(x)
            try:
                gfeed = {name: gpu}
                row["gpu_in_host_out_ms"] = median_s(lambda: ref.infer(gfeed), n) * 1e3
                row["gpu_in_gpu_out_ms"] = median_s(lambda: ref.infer(gfeed, outputs="device"), n) * 1e3
                row["gpu_feed_check_us"] = median_s(lambda: check_feed(gfeed, ref._metadata, gpu=ref._gpu, staged=True), 200) * 1e6
                memo = {}
                row["gpu_feed_check_memo_us"] = median_s(lambda: check_feed(gfeed, ref._metadata, gpu=ref._gpu, staged=True,
                                                                            memo=memo), 200) * 1e6
                checked = check_feed(gfeed, ref._metadata, gpu=ref._gpu, staged=True)
                row["gpu_in_gpu_out_unchecked_ms"] = median_s(lambda: ref._infer(checked, "device"), n) * 1e3
            finally:
                free()
            row["feed_check_us"] = median_s(lambda: check_feed(feed, ref._metadata, staged=True), 200) * 1e6
            row["device_ms"] = median_s(kit.device_target(ref, feed), max(n, 50), 10) * 1e3
            ref.release_graph()
            best = min(row["pageable_ms"], key=row["pageable_ms"].get)
            say(f"batch {batch}: device {row['device_ms']:.3f} ms, pageable default {row['pageable_ms']['default']:.3f}, "
                f"best {best} {row['pageable_ms'][best]:.3f}, pinned {row['pinned_ms']:.3f}, GPU in/host out "
                f"{row['gpu_in_host_out_ms']:.3f}, GPU in/out {row['gpu_in_gpu_out_ms']:.3f} ms")
        except Exception as exc:  # one batch's failure must not cost the others (device calls are few)
            row["error"] = f"{type(exc).__name__}: {exc}"
            say(f"batch {batch} FAILED: {row['error']}")
            import traceback
            traceback.print_exc()
        finally:
            for r in runners.values():
                r.deactivate()


def table() -> str:
    lines = []
    for batch, row in sorted(RESULTS.get("e2e", {}).items()):
        if "device_ms" not in row:
            lines.append(f"batch {batch}: {row.get('error', 'not measured')}")
            if row.get("pageable_ms"):
                lines += [f"  {ms:8.3f} ms  {label}" for label, ms in sorted(row["pageable_ms"].items(), key=lambda kv: kv[1])]
            continue
        dev = row["device_ms"]
        lines.append(f"batch {batch}: device-resident {dev:.3f} ms | pinned feed {row['pinned_ms']:.3f} | GPU in->host "
                     f"{row['gpu_in_host_out_ms']:.3f} | GPU in->GPU {row['gpu_in_gpu_out_ms']:.3f} "
                     f"({(row['gpu_in_gpu_out_ms'] / dev - 1) * 100:+.0f}%; {row['gpu_in_gpu_out_unchecked_ms']:.3f} without infer's "
                     f"feed check) | GPU feed check {row['gpu_feed_check_us']:.1f} us "
                     f"({row['gpu_feed_check_memo_us']:.1f} fed again), "
                     f"host feed check {row['feed_check_us']:.1f} us")
        for label, ms in sorted(row["pageable_ms"].items(), key=lambda kv: kv[1]):
            lines.append(f"  {ms:8.3f} ms  {ms / dev:5.2f}x device  {label}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=150, help="seconds; later batches are skipped past it")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--sections", default="host,cuda,e2e")
    parser.add_argument("--batches", default="4096,32,256,1024,1", help="in this order (the budget may cut the last)")
    parser.add_argument("--calls", type=int, default=60)
    parser.add_argument("--fake", action="store_true", help="no GPU: the fake GPU of tools/trt-host-path-cost.py "
                        "(pinned memory is plain memory, the cuda section is skipped; to try the probe itself)")
    args = parser.parse_args()
    if args.fake:
        kit = FakeGpuKit()
        cuda_rt.PinnedBuffer = lambda nbytes, dtype: kit.tool.FakePinned(nbytes // np.dtype(dtype).itemsize, dtype)
        sections = [s for s in args.sections.split(",") if s != "cuda"]
    else:
        sections = args.sections.split(",")
    say(f"python {sys.version.split()[0]}, numpy {np.__version__}, {os.cpu_count()} CPUs, "
        f"affinity {len(os.sched_getaffinity(0))}")
    RESULTS["machine"] = {"cpus": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)), "numpy": np.__version__}
    try:
        for section, run in (("host", section_host), ("cuda", section_cuda)):
            if section in sections:
                try:
                    run()
                except Exception as exc:  # reported, and the e2e races still run
                    RESULTS.setdefault("errors", {})[section] = f"{type(exc).__name__}: {exc}"
                    say(f"section {section} FAILED: {exc}")
                    import traceback
                    traceback.print_exc()
    finally:
        for pool in _POOLS.values():
            pool.shutdown()
    try:
        if "e2e" in sections:
            e2e(kit if args.fake else RealGpu(), [int(b) for b in args.batches.split(",")], args.budget, args.calls)
    finally:  # what was measured is kept and shown even if the engines could not be had
        if args.json:
            args.json.write_text(json.dumps(RESULTS, indent=1, default=str))
        print(f"== e2e, TensorRT FP16 SimpleCNN, medians (total {elapsed():.0f} s) ==")
        print(table())


if __name__ == "__main__":
    main()
