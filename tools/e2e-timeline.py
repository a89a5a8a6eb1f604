"""Issue 12: where an end-to-end TensorRT call spends its time, step by step, on a GPU machine.

For TensorRT FP16 SimpleCNN, per batch (default 4096, 256, 32, 1024) and feed (pinned: the serving
runner's own `pinned_inputs`; pageable: numpy; pinned without the NaN/Inf check: a runner with
allow_nonfinite=True; pinned-hostcheck and pageable-hostcheck: runners checking on the host
(finite_check="dot") instead of the GPU), each traced call records:
  host  perf_counter spans on the calling thread and the staging workers: stager start (submits),
        each staged piece (copy, and the host check's check), latch waits, bind / set_input_shape,
        upload issue (per piece, by the thread that staged it), NaN/Inf kernel issue, download
        issue, enqueue, graph launch, stream and event syncs, results;
  gpu   CUDA timing events on the copy, check and engine streams around each upload, NaN/Inf
        kernel, engine run, download and graph launch, placed on the host's clock by an anchor
        event recorded at the call's start (the streams idle then).
The graph path (host input <= 4 MiB) replays one graph, so it is also traced without graphs
(graphs=False) for the upload / engine / download split. Printed per scenario: the median start,
end and duration of every step (ms from the call's start), then the busy time per place and the
gaps (GPU start after call start, call end after the last GPU op, idle engine stream, queue delay
of each GPU op after its issue). Untraced medians of the same runner show what tracing adds.

Beside the timelines: the device-resident graph replay of every sub-batch size alone (wall and
GPU), set_input_shape + the first enqueue after a shape change against a steady enqueue, a
profile switch (only with a two-profile engine already cached, or --build-switch-engine), and
host-only staging (Stager alone, no GPU work) per batch and feed.

    source /tmp/gpu-kit/env.sh && $KIT_PY tools/e2e-timeline.py --budget 100 --json $OUT/timeline.json
    .venv/bin/python tools/e2e-timeline.py --fake   # no GPU: the fake GPU of trt-host-path-cost.py, host spans only

Nothing here touches the runner's hot path: the hooks are wrappers set on one runner's instance
(and on the staging module) for the traced calls only, and taken off after (`trace`).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from model.backends.tensorrt import staging  # noqa: E402  numpy only: no TensorRT, no CUDA at import
from model.data import INPUT_SHAPE  # noqa: E402  SimpleCNN's image: the model issue 12's bars are set on

ROW_BYTES = math.prod(INPUT_SHAPE) * np.dtype(np.float32).itemsize

DEFAULT_BATCHES = "4096,256,32,1024"
# Per feed: the runner options it is traced on (a feed named pageable* is numpy, the others the
# runner's own pinned buffers).
HOST_CHECK = {"finite_check": "dot"}  # the NaN/Inf check on the staging threads, as before the GPU's
FEED_OPTIONS = {"pinned": {}, "pageable": {}, "pinned-nocheck": {"allow_nonfinite": True},
                "pinned-hostcheck": HOST_CHECK, "pageable-hostcheck": HOST_CHECK,
                "pageable-split": {"split_bytes": 1 << 20},  # the graph path's staging shared from 1 MiB
                "pageable-4pieces": {"pieces_per_thread": 4},  # smaller pieces: a sub-batch finished together
                "pageable-numpy": {"copier": "numpy"},  # np.copyto on the calling thread and the workers
                "pageable-torch": {"copier": "torch"},  # each sub-batch one copy on torch's threads
                "pageable-half": {"upload_half": True},  # float16 over PCIe, widened on the GPU (FP16's default)
                "pageable-float32": {"upload_half": False}}  # float32 over PCIe
FEEDS = tuple(FEED_OPTIONS)
T0 = time.perf_counter()
RESULTS: dict = {}


def elapsed() -> float:
    return time.perf_counter() - T0


def say(text: str) -> None:
    print(f"[{elapsed():6.1f}s] {text}", flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=100, help="seconds; a section or scenario not started by then "
                        "is skipped (default %(default)s)")
    parser.add_argument("--json", type=Path, help="write every median and one full traced call per scenario here")
    parser.add_argument("--batches", default=DEFAULT_BATCHES, help="in this order (default %(default)s)")
    parser.add_argument("--feeds", default=",".join(FEEDS), help="of " + ", ".join(FEEDS) + " (default: all)")
    parser.add_argument("--calls", type=int, default=30, help="traced calls per scenario, as many untraced (default %(default)s)")
    parser.add_argument("--sections", default="host,alone,timeline,shape,switch",
                        help="host: staging alone; alone: each sub-batch size's graph replay; timeline; shape: "
                             "set_input_shape + first enqueue; switch: profile switch (default: all, in this order)")
    parser.add_argument("--build-switch-engine", action="store_true",
                        help="build the two-profile engine the switch section needs when it is not cached (minutes)")
    parser.add_argument("--fake", action="store_true", help="no GPU: tools/trt-host-path-cost.py's fake GPU, host spans "
                        "only (to try the tool itself)")
    args = parser.parse_args(argv)
    args.batch_list = [int(b) for b in args.batches.split(",") if b]
    args.feed_list = [f for f in args.feeds.split(",") if f]
    unknown = set(args.feed_list) - set(FEEDS)
    if unknown or args.budget <= 0 or args.calls < 1 or not args.batch_list or min(args.batch_list) < 1:
        parser.error(f"feeds must be of {FEEDS}, the budget and calls positive, batches >= 1 (unknown feeds: {sorted(unknown)})")
    args.section_list = [s for s in args.sections.split(",") if s]
    if set(args.section_list) - set(SECTIONS):
        parser.error(f"sections must be of {list(SECTIONS)}, received {args.sections!r}")
    return args


# -- the summary maths (pure: tested on the CPU) ------------------------------------------------------

@dataclass(frozen=True)
class Span:
    """One step of one call: `where` is host (the calling thread), worker (a staging thread),
    gpu-copy (the copy stream), gpu-check (the NaN/Inf kernels' stream) or gpu-engine (the engine's
    stream); times in ms from the call's start."""
    name: str
    where: str
    start: float
    end: float

    @property
    def ms(self) -> float:
        return self.end - self.start


def busy(spans: list[Span]) -> float:
    """Time covered by at least one of the spans (overlaps counted once)."""
    total, reach = 0.0, -math.inf
    for s in sorted(spans, key=lambda s: s.start):
        if s.end > reach:
            total += s.end - max(s.start, reach)
            reach = s.end
    return total


def call_figures(spans: list[Span], total: float) -> dict:
    """One call's busy times and gaps (ms): where the time went, and where nothing ran."""
    by = {w: [s for s in spans if s.where == w] for w in ("host", "worker", "gpu-copy", "gpu-check", "gpu-engine")}
    gpu = by["gpu-copy"] + by["gpu-check"] + by["gpu-engine"]
    out = {"total": total, "host_busy": busy(by["host"]), "worker_busy_sum": sum(s.ms for s in by["worker"]),
           "worker_span": busy(by["worker"]), "gpu_copy_busy": busy(by["gpu-copy"]),
           "gpu_check_busy": busy(by["gpu-check"]), "gpu_engine_busy": busy(by["gpu-engine"]), "gpu_busy": busy(gpu)}
    out["host_unaccounted"] = total - out["host_busy"]  # the calling thread's Python between hooked steps
    if gpu:
        first, last = min(s.start for s in gpu), max(s.end for s in gpu)
        out["head"] = first  # call start -> first GPU op: host work before the GPU has anything
        out["tail"] = total - last  # last GPU op -> call end: waits, results, return
        out["gpu_idle"] = (last - first) - out["gpu_busy"]  # between the first and last op, nothing on the GPU
    return out


def queue_delays(spans: list[Span]) -> dict[str, float]:
    """Per GPU op, its start after the end of the host call that issued it (same name, host side,
    e.g. `upload#0` after `upload issue#0`): large when the GPU was still busy with earlier work."""
    issued = {s.name.replace(" issue", ""): s for s in spans if s.where == "host" and " issue" in s.name}
    return {s.name: s.start - issued[s.name].end for s in spans if s.where.startswith("gpu") and s.name in issued}


def merge_steps(spans: list[Span]) -> list[Span]:
    """One span per (name, where) of one call: a step several workers ran spans from the first
    start to the last end."""
    groups: dict[tuple[str, str], list[Span]] = {}
    for s in spans:
        groups.setdefault((s.name, s.where), []).append(s)
    return [Span(n, w, min(s.start for s in g), max(s.end for s in g)) for (n, w), g in groups.items()]


def summarize(calls: list[tuple[list[Span], float]]) -> dict:
    """Medians over calls, each (spans, total ms): per step (start, end, duration, in how many
    calls), per figure of `call_figures`, per queue delay; steps in order of median start."""
    steps: dict[tuple[str, str], list[Span]] = {}
    figures: dict[str, list[float]] = {}
    delays: dict[str, list[float]] = {}
    for spans, total in calls:
        for s in merge_steps(spans):
            steps.setdefault((s.name, s.where), []).append(s)
        for k, v in call_figures(spans, total).items():
            figures.setdefault(k, []).append(v)
        for k, v in queue_delays(spans).items():
            delays.setdefault(k, []).append(v)
    med = statistics.median
    rows = [{"step": n, "where": w, "start": med(s.start for s in g), "end": med(s.end for s in g),
             "ms": med(s.ms for s in g), "calls": len(g)} for (n, w), g in steps.items()]
    rows.sort(key=lambda r: (r["start"], r["end"]))
    return {"calls": len(calls), "steps": rows, "figures": {k: med(v) for k, v in figures.items()},
            "queue_delay": {k: med(v) for k, v in delays.items()}}


def format_summary(title: str, summary: dict, untraced_ms: float | None = None) -> str:
    f = summary["figures"]
    head = f"== {title}: traced median {f['total']:.3f} ms"
    if untraced_ms is not None:
        head += f", untraced {untraced_ms:.3f} ms (tracing adds {f['total'] - untraced_ms:+.3f})"
    lines = [head + f", {summary['calls']} calls", f"  {'step':28s} {'where':10s} {'start':>8s} {'end':>8s} {'ms':>8s}"]
    for r in summary["steps"]:
        lines.append(f"  {r['step']:28s} {r['where']:10s} {r['start']:8.3f} {r['end']:8.3f} {r['ms']:8.3f}"
                     + (f"  (in {r['calls']} calls)" if r["calls"] != summary["calls"] else ""))
    lines.append("  busy: " + ", ".join(f"{k} {f[k]:.3f}" for k in ("host_busy", "host_unaccounted", "worker_span",
                                                                     "worker_busy_sum", "gpu_copy_busy", "gpu_check_busy", "gpu_engine_busy") if k in f))
    if "head" in f:
        lines.append(f"  gaps: first GPU op at {f['head']:.3f}, GPU idle between ops {f['gpu_idle']:.3f}, "
                     f"call end after last GPU op {f['tail']:.3f}")
    if summary["queue_delay"]:
        lines.append("  GPU start after issue: " + ", ".join(f"{k} {v:.3f}" for k, v in summary["queue_delay"].items()))
    return "\n".join(lines)


# -- the hooks ---------------------------------------------------------------------------------------

class Tracer:
    """Spans of the calls made through `call`, from wrappers `trace` sets on one runner. With
    `timing_event` (a factory of CUDA timing events; None: host only), GPU spans too."""

    def __init__(self, runner, timing_event=None, pool: int = 96) -> None:
        self.runner = runner
        self.events = [timing_event() for _ in range(pool)] if timing_event else []
        self.calls: list[tuple[list[Span], float]] = []
        self.active = False
        self.capturing = False
        self.starts: list[int] = []  # the call's sub-batch starts (from staging.plan)
        self.local = threading.local()
        self.lock = threading.Lock()

    def close(self) -> None:
        for ev in self.events:
            ev.free()
        self.events = []

    def _reset(self) -> None:
        self.host: list[tuple[str, str, float, float]] = []
        self.gpu: list[tuple[str, str, object, object]] = []
        self.used, self.counts, self.main = 0, {}, threading.get_ident()
        self.starts = []

    def numbered(self, name: str) -> str:
        """`name#k`, k counting from 0 per call; inside a staged piece (any thread), k is its sub-batch."""
        k = getattr(self.local, "subbatch", None)
        if k is not None:
            return f"{name}#{k}"
        with self.lock:
            k = self.counts.get(name, 0)
            self.counts[name] = k + 1
        return f"{name}#{k}"

    def subbatch(self, row: int) -> int:
        return max([i for i, s in enumerate(self.starts) if s <= row], default=0)

    def _event(self):
        with self.lock:  # staging threads issue piece uploads too
            if self.used >= len(self.events):
                return None
            self.used += 1
            return self.events[self.used - 1]

    def each_span(self, name: str, fn, *args, **kwargs):
        """A host step that repeats within a call (per sub-batch): `name#k`, k counting from 0."""
        if not self.active:
            return fn(*args, **kwargs)
        return self.host_span(self.numbered(name), fn, *args, **kwargs)

    def stage_span(self, fn, items, start: int, stop: int, name: str | None = "stage"):
        """A piece of sub-batch k: `name#k` (a staged piece: its copy, and a host check's check;
        None: no span of its own); the checks inside it are `check#k`."""
        if not self.active:
            return fn(items, start, stop)
        self.local.subbatch = k = self.subbatch(start)
        try:
            return fn(items, start, stop) if name is None else self.host_span(f"{name}#{k}", fn, items, start, stop)
        finally:
            self.local.subbatch = None

    def check_span(self, fn, *args, **kwargs):
        k = getattr(self.local, "subbatch", None)
        return self.host_span("check" if k is None else f"check#{k}", fn, *args, **kwargs)

    def host_span(self, name: str, fn, *args, **kwargs):
        if not self.active:
            return fn(*args, **kwargs)
        where = "host" if threading.get_ident() == self.main else "worker"
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.host.append((name, where, start, time.perf_counter()))

    def gpu_span(self, name: str, where: str, stream, fn, *args, **kwargs):
        """`fn` issues GPU work on `stream`: a host span `name issue#k` and a GPU span `name#k`."""
        if not self.active or self.capturing:
            return fn(*args, **kwargs)
        label = self.numbered(name)
        issue = label.replace("#", " issue#")
        before = self._event()
        after = self._event() if before is not None else None
        if before is not None:
            before.record(stream)
        result = self.host_span(issue, fn, *args, **kwargs)
        if after is not None:
            after.record(stream)
            self.gpu.append((label, where, before, after))
        return result

    def call(self, fn):
        self._reset()
        anchor = self._event()
        self.active = True
        t0 = time.perf_counter()
        if anchor is not None:
            anchor.record(self.runner.stream)
        try:
            fn()
        finally:
            t1 = time.perf_counter()
            self.active = False
        spans = [Span(n, w, (a - t0) * 1e3, (b - t0) * 1e3) for n, w, a, b in self.host]
        for name, where, before, after in self.gpu:
            after.synchronize()
            spans.append(Span(name, where, before.ms_since(anchor), after.ms_since(anchor)))
        self.calls.append((spans, (t1 - t0) * 1e3))
        return spans


@contextlib.contextmanager
def trace(runner, tracer: Tracer):
    """Wrappers on `runner` (its instance, its buffers, streams and events) and on the staging
    module, for as long as this lasts; all taken off after, so untraced calls run the plain code."""
    undo = []

    def patch(obj, attr, wrapper):
        had = attr in vars(obj) if not isinstance(obj, type) and hasattr(obj, "__dict__") else None
        old = getattr(obj, attr)
        setattr(obj, attr, wrapper(old))
        undo.append((obj, attr, old, had))

    h, g, each = tracer.host_span, tracer.gpu_span, tracer.each_span
    for attr, name in (("bind", "bind"), ("_set_shape", "set_input_shape"), ("_select_profile", "profile switch"),
                       ("_results", "results"), ("_stage_whole", "stage whole")):
        patch(runner, attr, lambda f, name=name: lambda *a, **k: each(name, f, *a, **k))
    patch(runner, "enqueue", lambda f: lambda: g("engine", "gpu-engine", runner.stream, f))
    for buf in [*runner.device.values(), *runner._wire_device.values()]:  # the latter: half-precision uploads
        patch(buf, "copy_from_host_async", lambda f: lambda host, stream, offset=0: g(
            "upload", "gpu-copy" if stream is runner.copy_stream else "gpu-engine", stream, f, host, stream, offset))
        patch(buf, "copy_to_host_async", lambda f: lambda host, stream, offset=0: g(
            "download", "gpu-engine", stream, f, host, stream, offset))
    patch(runner.stream, "synchronize", lambda f: lambda: h("stream sync", f))
    if runner._finite_gpu is not None:  # the NaN/Inf kernels, on the check stream beside the engine
        patch(runner._finite_gpu, "enqueue", lambda f: lambda name, ptr, count, dtype, stream: g(
            "nan check", "gpu-check", stream, f, name, ptr, count, dtype, stream))
        patch(runner._finite_gpu, "widen", lambda f: lambda name, src, dst, count, stream: g(
            "widen", "gpu-engine", stream, f, name, src, dst, count, stream))

    wrapped: set[int] = set()  # ids of the events and graphs given a wrapper here

    def wrap_event(ev):
        if id(ev) not in wrapped:
            wrapped.add(id(ev))
            real = ev.synchronize
            ev.synchronize = lambda: each("event sync", real)
            undo.append((ev, "synchronize", real, False))
        return ev
    for ev in runner._events:
        wrap_event(ev)
    patch(runner, "_event", lambda f: lambda i: wrap_event(f(i)))

    def wrap_graph(graph):
        if graph is not None and id(graph) not in wrapped:
            wrapped.add(id(graph))
            real = graph.launch
            graph.launch = lambda: g("graph", "gpu-engine", runner.stream, real)
            undo.append((graph, "launch", real, False))
    wrap_graph(runner._io_graph)

    def capture(f):
        def run(*a):
            tracer.capturing = True
            try:
                h("graph capture", f, *a)
            finally:
                tracer.capturing = False
            wrap_graph(runner._io_graph)
        return run
    patch(runner, "_capture_io_graph", capture)
    patch(runner._stager, "start", lambda f: lambda *a: h("stager start (submits)", f, *a))

    def plan(f):
        def run(*a, **k):
            out = f(*a, **k)
            if tracer.active:
                tracer.starts = [sb.start for sb in out]
            return out
        return run
    patch(staging, "plan", plan)
    patch(staging, "stage_rows", lambda f: lambda items, a, b: tracer.stage_span(f, items, a, b))
    # A piece's upload, issued by the thread that staged it: numbered by its sub-batch.
    patch(runner, "_upload_rows", lambda f: lambda host, pinned, row_bytes, a, b: tracer.stage_span(
        lambda items, start, stop: f(host, pinned, row_bytes, start, stop), None, a, b, None))
    patch(staging, "all_finite", lambda f: lambda *a, **k: tracer.check_span(f, *a, **k))
    patch(staging.Latch, "wait", lambda f: lambda self: each("latch wait", f, self))
    try:
        yield tracer
    finally:
        for obj, attr, old, had in reversed(undo):
            if had is False:  # an instance attribute set here over the class's method: removed
                with contextlib.suppress(AttributeError):
                    delattr(obj, attr)
            else:
                setattr(obj, attr, old)


# -- the kits: real GPU, or the fake one -----------------------------------------------------------

class RealGpu:
    """TensorRT FP16 SimpleCNN engine sets of the cache (built when missing), as the benchmarks run them."""

    def __init__(self) -> None:
        from model import cache, zoo
        from model.artifacts import ModelArtifacts
        from model.backends.tensorrt import cuda as cuda_rt
        from model.profile import DEFAULT_PROFILE

        self.cuda_rt = cuda_rt
        self.spec = zoo.get("simplecnn")
        self.arts = ModelArtifacts(self.spec, cache.DEFAULT_CACHE, profile=DEFAULT_PROFILE, progress=False)
        self.plans = {p: e.plan() for p, e in self.arts.engine_set("fp16").items()}
        say("engines: " + ", ".join(str(p) for p in self.plans))
        self.input_name = self.spec.input_names[0]
        self._sets = {}

    def timing_event(self):
        return self.cuda_rt.Event(timing=True)

    def runner(self, batch: int, graphs: bool = True, allow_nonfinite: bool = False, **options):
        from model.backends.tensorrt.engine_set import TrtEngineSet

        key = (graphs, allow_nonfinite, tuple(sorted(options.items())))
        if key not in self._sets:
            self._sets[key] = TrtEngineSet(self.plans, label="fp16", graphs=graphs, declared=self.spec.input_metadata(),
                                           allow_nonfinite=allow_nonfinite, runner_options=options).activate()
        return self._sets[key].runner_for(batch)

    def close(self) -> None:
        for s in self._sets.values():
            s.deactivate()


class FakeGpu:
    """tools/e2e-probe.py's fake GPU kit (tools/trt-host-path-cost.py's no-op copies and engine):
    host spans only."""

    def __init__(self) -> None:
        self.kit = e2e_probe().FakeGpuKit()
        self.tool, self.gpu, self.input_name, self._graphs = self.kit.tool, self.kit.gpu, self.kit.input_name, self.kit._graphs
        self._runners = {}
        self.timing_event = None

    def runner(self, batch: int, graphs: bool = True, allow_nonfinite: bool = False, **options):
        key = (graphs, allow_nonfinite, tuple(sorted(options.items())))
        if key not in self._runners:
            self._runners[key] = self.tool.fake_runner(self.gpu, graphs=graphs, allow_nonfinite=allow_nonfinite, **options)
        return self._runners[key]

    def close(self) -> None:
        for r in self._runners.values():
            r._stager.close()
        self._graphs.__exit__(None, None, None)


def images(rows: int) -> np.ndarray:
    return np.random.default_rng(rows).standard_normal((rows, *INPUT_SHAPE)).astype(np.float32)


def e2e_probe():
    """tools/e2e-probe.py as a module (loaded once, on first use): its timing and fake GPU kit."""
    if "e2e_probe" not in sys.modules:
        import importlib.util

        spec = importlib.util.spec_from_file_location("e2e_probe", Path(__file__).parent / "e2e-probe.py")
        module = sys.modules["e2e_probe"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return sys.modules["e2e_probe"]


def median_ms(fn, reps: int, warm: int = 3) -> float:
    return e2e_probe().median_s(fn, reps, warm) * 1e3


def subbatch_rows(runner, batch: int) -> list[int]:
    """The rows of each engine run of a host-fed call at `batch`, as the runner plans them."""
    if batch * ROW_BYTES <= runner.graph_max_bytes:
        return [batch]
    first = runner.inputs[0]
    profile = runner.profile_for({first: (batch, *INPUT_SHAPE)})
    return [sb.rows for sb in runner.plan(batch, ROW_BYTES, runner.profiles[profile][first][0][0])]


# -- sections ------------------------------------------------------------------------------------------

def section_host(kit, args) -> None:
    """The staging alone (no GPU work): one whole copy by numpy (one thread) and by torch (its
    intra-op threads), and torch's conversion into a half upload's float16 buffer; for batches past
    the graph path, the Stager as the pipelined path drives it, per feed, with numpy copies and
    with torch's."""
    from model.backends.tensorrt import host_copy

    out = RESULTS.setdefault("host_staging_ms", {})
    torch_copy = host_copy.load("torch")
    for batch in args.batch_list:
        runner = kit.runner(batch)
        x = images(batch)
        pinned = runner.host[runner.inputs[0]].view(x.shape)
        row = out.setdefault(batch, {})
        row["whole copy np.copyto"] = median_ms(lambda p=pinned, x=x: np.copyto(p, x), args.calls)
        if torch_copy is not None:
            row["whole copy torch"] = median_ms(lambda p=pinned, x=x: torch_copy(p, x), args.calls)
            half = kit.runner(batch, upload_half=True)
            wire = half._wire_host.get(half.inputs[0])
            if wire is not None:
                target = wire.view(x.shape)
                row["whole copy torch to float16"] = median_ms(lambda p=target, x=x: torch_copy(p, x), args.calls)
        pinned[:] = x
        shape = ""
        if batch * ROW_BYTES > runner.graph_max_bytes:
            first = runner.inputs[0]
            min_rows = runner.profiles[runner.profile_for({first: x.shape})][first][0][0]
            plan = runner.plan(batch, x.nbytes // batch, min_rows)
            shape = f" ({len(plan)} sub-batches x {len(plan[0].chunks)} pieces)"
            for feed, item in (("pinned (check only)", staging.Staged(pinned, None, True, runner._host_check)),
                               ("pageable (copy + check)", staging.Staged(x, pinned, True, runner._host_check)),
                               ("pageable (copy only)", staging.Staged(x, pinned, False, runner._host_check))):
                row[feed] = median_ms(lambda item=item, r=runner, plan=plan: r._stager.start([item], plan).finish(),
                                      args.calls)
            torch_runner = kit.runner(batch, copier="torch")
            if torch_runner.copier == "torch":
                item = staging.Staged(x, pinned, False, runner._host_check, torch_runner._copy)
                plan = torch_runner.plan(batch, x.nbytes // batch, min_rows)
                row["pageable (torch copies, copy only)"] = median_ms(
                    lambda r=torch_runner, plan=plan, item=item: r._stager.start([item], plan).finish(), args.calls)
            results = np.empty((batch, 100), np.float32)
            row["results np.empty + fill"] = median_ms(
                lambda r=results: np.empty(r.shape, r.dtype).__setitem__(slice(None), r), args.calls)
        say(f"host staging alone, batch {batch}{shape}, ms: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items()))


def section_alone(kit, args) -> None:
    """Device-resident graph replay at each engine-run size a host-fed batch uses, and the whole batch."""
    from benchmarks.targets import tensorrt_graph

    out = RESULTS.setdefault("device_resident", {})
    for batch in args.batch_list:
        runner = kit.runner(batch)
        for rows in sorted({batch, *subbatch_rows(runner, batch)}):
            target, _, gpu_time = tensorrt_graph(runner, {kit.input_name: images(rows)})
            wall = median_ms(target, 50, 10)
            gpu = statistics.median(gpu_time(50)) * 1e3
            runner.release_graph()
            out[f"{batch}/{rows}"] = {"wall_ms": wall, "gpu_ms": gpu}
            say(f"device-resident, engine serving batch {batch}, {rows} rows: wall {wall:.3f} ms, GPU {gpu:.3f} ms")


def section_timeline(kit, args) -> None:
    out = RESULTS.setdefault("timeline", {})
    for batch in args.batch_list:
        for feed_kind in args.feed_list:
            if elapsed() > args.budget:
                say(f"budget spent: batch {batch} {feed_kind} not traced")
                continue
            graph_path = batch * ROW_BYTES <= kit.runner(batch).graph_max_bytes
            options = FEED_OPTIONS[feed_kind]
            for graphs in ((True, False) if graph_path else (True,)):
                runner = kit.runner(batch, graphs=graphs, **options)
                x = images(batch)
                feed = {kit.input_name: x}
                if not feed_kind.startswith("pageable"):
                    feed = runner.pinned_inputs(batch)
                    feed[kit.input_name][:] = x
                call = lambda r=runner, f=feed: r.infer(f)  # noqa: E731
                untraced = median_ms(call, args.calls, 5)
                tracer = Tracer(runner, kit.timing_event)
                with trace(runner, tracer):
                    for _ in range(args.calls):
                        tracer.call(call)
                tracer.close()
                summary = summarize(tracer.calls)
                title = (f"batch {batch}, {feed_kind}, {'graph path' if graph_path else 'pipelined'}"
                         + ("" if graphs else " without graphs") + f", engine runs of {subbatch_rows(runner, batch)} rows")
                print(format_summary(title, summary, untraced), flush=True)
                example = min(tracer.calls, key=lambda c: abs(c[1] - summary["figures"]["total"]))
                out[title] = {**summary, "untraced_ms": untraced,
                              "example_call": [vars(s) | {"ms": s.ms} for s in sorted(example[0], key=lambda s: s.start)]}


def section_shape(kit, args) -> None:
    """set_input_shape (bind) and the first enqueue after it, against a steady enqueue, alternating
    two shapes on the engine serving each batch."""
    out = RESULTS.setdefault("shape_change", {})
    cuda_rt = kit.cuda_rt
    for batch in args.batch_list:
        runner = kit.runner(batch)
        rows = subbatch_rows(runner, batch)[0]
        other = max(runner._row_align, rows - runner._row_align) if rows > runner._row_align else rows + 1
        runner.upload({kit.input_name: images(max(rows, other))[:rows]})
        start, end = cuda_rt.Event(), cuda_rt.Event()
        figures = {"bind (set_input_shape) us": [], "first enqueue host us": [], "first enqueue GPU us": [],
                   "steady enqueue host us": [], "steady enqueue GPU us": []}
        name = runner.inputs[0]
        for i in range(2 * max(10, args.calls)):
            shape = (other if i % 2 else rows, *INPUT_SHAPE)
            t = time.perf_counter()
            runner.bind({name: shape})
            figures["bind (set_input_shape) us"].append((time.perf_counter() - t) * 1e6)
            for which in ("first", "steady"):
                start.record(runner.stream)
                t = time.perf_counter()
                runner.enqueue()
                figures[f"{which} enqueue host us"].append((time.perf_counter() - t) * 1e6)
                end.record(runner.stream)
                runner.stream.synchronize()
                figures[f"{which} enqueue GPU us"].append(end.ms_since(start) * 1e3)
        start.free()
        end.free()
        row = out[f"{batch}: {rows} <-> {other} rows"] = {k: statistics.median(v) for k, v in figures.items()}
        say(f"shape change on the engine serving {batch} ({rows} <-> {other} rows): " + ", ".join(f"{k} {v:.1f}" for k, v in row.items()))


def section_switch(kit, args) -> None:
    """A profile switch on an engine with two profiles (opt 32 and 4096): bind to the other profile
    (set_optimization_profile_async + stream sync + set_input_shape + addresses), then its first enqueue."""
    from model.backends.tensorrt import build
    from model.backends.tensorrt.runner import TrtRunner
    from model.profile import BatchProfile

    class NotCached(Exception):
        pass

    real = build.build_plan
    if not args.build_switch_engine:
        def refuse(*a, **k):
            raise NotCached
        build.build_plan = refuse
    try:
        plan = kit.arts.engine("fp16", profile=BatchProfile(1, (32, 4096), 4096)).plan()
    except NotCached:
        RESULTS["profile_switch"] = "not measured: no two-profile engine cached (--build-switch-engine builds it)"
        say(RESULTS["profile_switch"])
        return
    finally:
        build.build_plan = real
    runner = TrtRunner(plan, label="fp16", declared=kit.spec.input_metadata()).activate()
    try:
        name, figures = runner.inputs[0], {"bind with switch us": [], "first enqueue host us": [], "steady enqueue host us": []}
        runner.upload({name: images(256)})
        for i in range(2 * max(10, args.calls)):
            t = time.perf_counter()
            runner.bind({name: (256, *INPUT_SHAPE)}, profile=(i + 1) % 2)  # upload bound profile 0: every bind switches
            figures["bind with switch us"].append((time.perf_counter() - t) * 1e6)
            for which in ("first", "steady"):
                t = time.perf_counter()
                runner.enqueue()
                figures[f"{which} enqueue host us"].append((time.perf_counter() - t) * 1e6)
                runner.stream.synchronize()
        RESULTS["profile_switch"] = {k: statistics.median(v) for k, v in figures.items()}
        say("profile switch (256 rows, profile 0 <-> 1): " + ", ".join(f"{k} {v:.1f}" for k, v in RESULTS["profile_switch"].items()))
    finally:
        runner.deactivate()


SECTIONS = {"host": section_host, "alone": section_alone, "timeline": section_timeline, "shape": section_shape,
            "switch": section_switch}
NEED_GPU = {"alone", "shape", "switch"}


def main(argv: list[str] | None = None) -> None:
    global T0
    T0 = time.perf_counter()  # the budget counts from here (an import may come long before)
    args = parse_args(argv)
    kit = FakeGpu() if args.fake else RealGpu()
    RESULTS["args"] = {k: v for k, v in vars(args).items() if k != "json"}
    try:
        for name in args.section_list:
            if args.fake and name in NEED_GPU:
                continue
            if elapsed() > args.budget:
                say(f"budget spent: section {name} skipped")
                continue
            try:
                SECTIONS[name](kit, args)
            except Exception as exc:  # one section's failure must not cost the others
                RESULTS.setdefault("errors", {})[name] = f"{type(exc).__name__}: {exc}"
                say(f"section {name} FAILED: {exc}")
                import traceback
                traceback.print_exc()
    finally:
        kit.close()
        if args.json:
            args.json.write_text(json.dumps(RESULTS, indent=1, default=str))
        say("done")


if __name__ == "__main__":
    main()
