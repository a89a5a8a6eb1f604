"""Slowdowns for the gate's proofs. Production code never imports this module: `model.gate.proof`
copies the project and appends an import of it to the *copy's* benchmarks/conftest.py, so only that
copy's benchmark processes are slowed, and the slowdown sits where the issue puts it:

- host: a busy-wait after every end-to-end `infer()` of the runners whose backend name starts with
  a prefix (the host time a slower input check or copy would add);
- gpu: after each replay of the TensorRT device-resident graph, a cudaMemsetAsync on the runner's
  stream, sized at set-up so its GPU time is a given fraction of the graph's own (measured with CUDA
  events), so it counts in both the wall time and the GPU compute time.
"""
from __future__ import annotations

import statistics
import sys
import time

import pytest


def busy_wait(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def host_delay_fixture(seconds: float, backend_prefix: str):
    """A session fixture named runner_pool that wraps the suite's own, delaying matching runners' infer()."""
    @pytest.fixture(scope="session", name="runner_pool")
    def slowed_pool(runner_pool):
        slowed = set()

        def get(name: str):
            runner = runner_pool(name)
            if name.startswith(backend_prefix) and id(runner) not in slowed:
                infer = runner.infer

                def delayed(feed, **kwargs):
                    out = infer(feed, **kwargs)
                    busy_wait(seconds)
                    return out

                runner.infer = delayed
                slowed.add(id(runner))
            return runner

        return get

    return slowed_pool


def _gpu_seconds(stream, enqueue, runs: int = 30) -> float:
    from model.backends.tensorrt import cuda as cuda_rt

    start, end, times = cuda_rt.Event(), cuda_rt.Event(), []
    try:
        for _ in range(runs):
            start.record(stream)
            enqueue()
            end.record(stream)
            stream.synchronize()
            times.append(end.ms_since(start) / 1e3)
    finally:
        start.free()
        end.free()
    return statistics.median(times)


class PaddedGraph:
    """The runner's captured graph, followed on each launch by a memset costing `fraction` of its GPU time."""

    def __init__(self, graph, stream, fraction: float) -> None:
        from model.backends.tensorrt import cuda as cuda_rt

        self._graph, self._stream, self._rt = graph, stream, cuda_rt._runtime()
        graph_s = _gpu_seconds(stream, graph.launch)
        want, nbytes, self._buffer = fraction * graph_s, 1 << 20, None
        # Sized on what the memset adds behind the graph, not on its own event-timed length: on the
        # H200 a memset sized alone for +10% of the bs32 graph (53 us) added 3.5% behind it.
        for _ in range(8):  # memset time is affine in its size: a few secant steps land on the target
            self._alloc(nbytes)
            got = max(_gpu_seconds(stream, self.launch) - graph_s, 1e-7)  # CUDA events resolve ~0.5 us
            ratio = min(4.0, max(0.25, want / got))  # one noisy reading moves the size 4x at most
            nbytes = max(4096, min(1 << 34, int(nbytes * ratio) // 256 * 256))
        self._alloc(nbytes)
        added = _gpu_seconds(stream, self.launch) - graph_s
        sys.__stderr__.write(f"[gate proof] graph {graph_s * 1e6:.1f} us GPU; padded with a {nbytes} B memset: "
                             f"+{added * 1e6:.2f} us ({100 * added / graph_s:+.1f}%, asked {100 * fraction:+.1f}%)\n")

    def _alloc(self, nbytes: int) -> None:
        from model.backends.tensorrt import cuda as cuda_rt

        if self._buffer is None or self._buffer.nbytes != nbytes:
            if self._buffer is not None:
                self._buffer.free()
            self._buffer = cuda_rt.DeviceBuffer(nbytes)

    def _pad(self) -> None:
        from model.backends.tensorrt import cuda as cuda_rt

        cuda_rt.check(self._rt.cudaMemsetAsync(self._buffer.ptr, 0, self._buffer.nbytes, self._stream.handle))

    def launch(self) -> None:
        self._graph.launch()
        self._pad()

    def __getattr__(self, name):
        return getattr(self._graph, name)


def pad_tensorrt_graphs(fraction: float) -> None:
    """Make every TensorRT device-resident target of benchmarks/targets.py do `fraction` more GPU work."""
    from benchmarks import targets

    original = targets.tensorrt_graph

    def padded(runner, x, *args, **kwargs):
        capture = runner.capture_graph
        runner.capture_graph = lambda: PaddedGraph(capture(), runner.stream, fraction)
        try:
            return original(runner, x, *args, **kwargs)
        finally:
            del runner.capture_graph  # the class's own method again

    targets.tensorrt_graph = padded
