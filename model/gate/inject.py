"""Slowdowns for the gate's proofs. Production code never imports this module: `model.gate.proof`
copies the project and appends an import of it to the *copy's* benchmarks/conftest.py, so only that
copy's benchmark processes are slowed, and the slowdown sits where the issue puts it:

- host: a busy-wait after every end-to-end `infer()` of the runners whose backend name starts with
  a prefix (the host time a slower input check or copy would add);
- gpu: after each replay of the TensorRT device-resident graph of the judged benchmarks, a
  cudaMemsetAsync on the runner's stream, sized at set-up so that what it adds behind the graph is
  a given fraction of the graph's own GPU time (measured with CUDA events), so it counts in both the
  wall time and the GPU compute time. Only the judged graphs are padded: sizing one takes 10 x 30
  timed replays, about 2 s for the FP32 batch-4096 graph (7.4 ms a replay on the H200),
  so padding all 16 would add seconds to every copy process and leave gigabytes of memset buffers.
"""
from __future__ import annotations

import os
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
        # What the memset adds is affine in its size (a fixed part, then bytes / bandwidth): a secant
        # step through the last two readings lands on the target where a proportional one (size x
        # want / got) only creeps up on it when the fixed part is near the target (a small graph).
        last = None
        for _ in range(8):
            self._alloc(nbytes)
            got = max(_gpu_seconds(stream, self.launch) - graph_s, 1e-7)  # CUDA events resolve ~0.5 us
            guess = nbytes * want / got
            if last is not None and last[0] != nbytes and (got - last[1]) / (nbytes - last[0]) > 0:
                guess = nbytes + (want - got) * (nbytes - last[0]) / (got - last[1])
            last = nbytes, got
            # one noisy reading moves the size 4x at most
            nbytes = max(4096, min(1 << 34, int(min(4 * nbytes, max(nbytes / 4, guess))) // 256 * 256))
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


def current_test() -> str:
    """The running test's name without its file (`test_device_resident[simplecnn-bs32-...]`), from
    the variable pytest sets during each test; "" outside one."""
    return os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0].split("::")[-1]


def pad_tensorrt_graphs(fraction: float, only: list[str] | None = None) -> None:
    """Make the TensorRT device-resident targets of benchmarks/targets.py do `fraction` more GPU work:
    those of the tests named in `only` (node ids; the part after the last "::" is compared), else all."""
    from benchmarks import targets

    original = targets.tensorrt_graph
    wanted = {n.split("::")[-1] for n in only} if only else None

    def padded(runner, x, *args, **kwargs):
        if wanted is not None and current_test() not in wanted:
            return original(runner, x, *args, **kwargs)
        capture = runner.capture_graph
        runner.capture_graph = lambda: PaddedGraph(capture(), runner.stream, fraction)
        try:
            return original(runner, x, *args, **kwargs)
        finally:
            del runner.capture_graph  # the class's own method again

    targets.tensorrt_graph = padded
