"""The proof's GPU injection (model/gate/inject.py) without a GPU: the memset's sizing loop against a
model of the GPU, and which graphs get padded."""
import types

import pytest

from model.backends.tensorrt import cuda as cuda_rt
from model.gate import inject


class FakeGpu:
    """A graph of `graph_s`; a memset behind it adds `fixed_s` + nbytes / `bytes_per_s`."""

    def __init__(self, graph_s=53e-6, fixed_s=1.5e-6, bytes_per_s=2.5e12):
        self.graph_s, self.fixed_s, self.bytes_per_s = graph_s, fixed_s, bytes_per_s
        self.nbytes = None

    def seconds(self, stream, enqueue, runs=30):
        self.nbytes = None
        enqueue()  # PaddedGraph.launch sets self.nbytes through the fake memset
        return self.graph_s + (self.fixed_s + self.nbytes / self.bytes_per_s if self.nbytes is not None else 0.0)


@pytest.fixture
def gpu(monkeypatch):
    fake = FakeGpu()

    class Buffer:
        def __init__(self, nbytes):
            self.nbytes, self.ptr = nbytes, 0

        def free(self):
            pass

    def memset(ptr, value, nbytes, stream):
        fake.nbytes = nbytes
        return (0,)

    monkeypatch.setattr(cuda_rt, "_runtime", lambda: types.SimpleNamespace(cudaMemsetAsync=memset))
    monkeypatch.setattr(cuda_rt, "DeviceBuffer", Buffer)
    monkeypatch.setattr(cuda_rt, "check", lambda result: result)
    monkeypatch.setattr(inject, "_gpu_seconds", fake.seconds)
    return fake


@pytest.mark.parametrize("graph_s, fixed_s", [(53e-6, 1.5e-6), (40e-6, 3e-6), (7.4e-3, 2e-6), (1.17e-3, 2e-6)])
def test_memset_is_sized_on_what_it_adds_behind_the_graph(gpu, graph_s, fixed_s, capsys):
    gpu.graph_s, gpu.fixed_s = graph_s, fixed_s
    graph = types.SimpleNamespace(launch=lambda: None)
    padded = inject.PaddedGraph(graph, types.SimpleNamespace(handle=0), 0.10)
    added = gpu.seconds(None, padded.launch) - graph_s
    assert added == pytest.approx(0.10 * graph_s, rel=0.02)  # the affine offset included


def test_only_the_judged_graphs_are_padded(monkeypatch):
    from benchmarks import targets

    made = []
    monkeypatch.setattr(targets, "tensorrt_graph", lambda runner, feed: runner.capture_graph())
    monkeypatch.setattr(inject, "PaddedGraph", lambda graph, stream, fraction: made.append(graph) or "padded")
    inject.pad_tensorrt_graphs(0.1, ["benchmarks/test_latency.py::test_device_resident[simplecnn-bs32-tensorrt-fp16-graph]"])
    class Runner:
        stream = None

        def capture_graph(self):
            return "graph"

    runner = Runner()
    for test, want in (("test_device_resident[simplecnn-bs32-tensorrt-fp16-graph]", "padded"),
                       ("test_device_resident[simplecnn-bs32-tensorrt-fp16-typed-graph]", "graph"),
                       ("test_device_resident[simplecnn-bs1-tensorrt-fp16-graph]", "graph")):
        monkeypatch.setenv("PYTEST_CURRENT_TEST", f"benchmarks/test_latency.py::{test} (call)")
        assert targets.tensorrt_graph(runner, {}) == want
        assert runner.capture_graph() == "graph"  # the runner's own method again afterwards
    assert made == ["graph"]
