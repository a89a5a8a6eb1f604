"""TensorRT through the name-based API, end to end: a runner over one engine plan.

Its parts, one file each: the bindings (tensors, optimization profiles, shapes, addresses:
bindings.py), the CUDA-graph path of small host batches (graph_path.py), the pipelined path of
large ones (pipelined.py, staging.py), the copy into pinned memory (host_copy.py) and the GPU's
NaN/Inf check and float16 widening (finite_gpu.py). This file holds what ties them together: the
options, the lifecycle, the choice of path and the device-resident calls of the benchmarks.
"""
from __future__ import annotations

import logging

import numpy as np

from model.backends.base import BackendUnavailable, Runner, TensorMeta, check_feed
from model.backends.device_arrays import GpuTarget
from model.backends.tensorrt import cuda as cuda_rt
from model.backends.tensorrt import finite_gpu, host_copy
from model.backends.tensorrt import staging as host_staging
from model.backends.tensorrt.bindings import EngineBindings
from model.backends.tensorrt.graph_path import GraphPath
from model.backends.tensorrt.pipelined import PipelinedPath

log = logging.getLogger(__name__)
_NONE: frozenset = frozenset()


class TrtRunner(GraphPath, PipelinedPath, EngineBindings, Runner):
    """Two paths for an end-to-end call:

    - host input up to `graph_max_bytes`: copied into pinned memory by the calling thread; with
      `graphs=True` (default), once the same shapes, addresses and output place come twice in a
      row, the upload, the NaN/Inf check, the engine and the copy out are captured as one CUDA
      graph and replayed (graph_path.py).
    - larger: cut into sub-batches of about `subbatch_bytes` (0 runs the batch at once), each
      copied into pinned memory in one copy, uploaded on a second stream once staged and run right
      after, while the next is staged (pipelined.py).

    Host inputs reach pinned memory through torch's parallel CPU copy (host_copy.py). Their
    NaN/Inf check runs on the GPU, a kernel reading what was uploaded beside the engine
    (finite_gpu.py), so the host only copies and a feed from `pinned_inputs` is not read by the
    host at all; the call fails after the GPU's work when one was found, returning nothing. Where
    the kernels cannot load, the host checks each input as it is staged (staging.all_finite).

    Half-precision uploads (`upload_half`; default on for FP16 engines): a float32 host input of
    at least host_copy.MIN_BYTES is converted to float16 while it is copied into pinned memory,
    crosses PCIe in half the bytes, and is widened back to float32 on the GPU (finite_gpu.widen,
    which also checks it) where the engine reads it. The engine sees the input rounded to
    float16, as an FP16 engine's own first reformat does. A call whose half upload is flagged (a
    NaN/Inf, or a value beyond float16's +-65504) runs again from float32: a NaN/Inf is then
    refused (or passed, with `allow_nonfinite`) as always, and a finite input beyond the range
    gets its float32 answer and turns half uploads off for the runner.

    Feeds already on the GPU are used where they are (their address goes to TensorRT); a feed from
    `pinned_inputs` is uploaded without being staged."""

    stages_inputs = True
    remembers_gpu_feeds = True

    def __init__(self, plan: bytes, label: str = "fp32", graphs: bool = True, *,
                 declared: dict[str, TensorMeta] | None = None, graph_max_bytes: int = host_staging.GRAPH_MAX_BYTES,
                 subbatch_bytes: int = host_staging.SUBBATCH_BYTES, upload_half: bool | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.name = f"tensorrt-{label}"
        self._plan = plan
        # The model's own input metadata, whose dtypes and axis names the runner accepts (TensorRT
        # narrows int64 inputs to int32; host feeds are converted while staged).
        self._declared = declared or {}
        self.use_graphs = graphs
        self.graph_max_bytes, self.subbatch_bytes = graph_max_bytes, subbatch_bytes
        self._copy = host_copy.TorchCopy()  # how every host input reaches pinned memory
        self.upload_half = label.partition("-")[0] == "fp16" if upload_half is None else bool(upload_half)
        self._finite_gpu: finite_gpu.GpuFiniteCheck | None = None
        self._gpu_checked: frozenset[str] = frozenset()  # inputs whose uploads the GPU checks
        self._halves: frozenset[str] = frozenset()  # float32 inputs with half-precision buffers (when active)
        self._wire_host: dict[str, cuda_rt.PinnedBuffer] = {}  # float16 staging, per input in _halves
        self._wire_device: dict[str, cuda_rt.DeviceBuffer] = {}  # where it lands before widening
        self._stager = host_staging.Stager()
        self._bound_shape = None
        self._bound_shapes = None  # the same as a dict, compared first
        self._graph = None  # device-only replay (benchmarks)
        self._io_graph = None  # copy in + engine + copy out, for `_io_key`
        self._io_key = None  # (bound shapes, input addresses, uploaded inputs, output place) of the io graph
        self._calls_at_key = 0
        self._addresses: dict[str, int] = {}  # what the context was last told, per tensor
        self._events: list = []
        self._handed: dict[tuple[str, int], np.ndarray] = {}  # (input, batch) -> what pinned_inputs gave out
        self._views: dict = {}  # bound shapes -> the device outputs' views

    # -- lifecycle -------------------------------------------------------------------------------
    def _activate(self) -> None:
        reason = cuda_rt.gpu_unavailable_reason()
        if reason:
            raise BackendUnavailable(f"TensorRT needs a GPU: {reason}")
        self._open_engine()
        self.stream = cuda_rt.Stream()
        self.copy_stream = cuda_rt.Stream()  # uploads of staged sub-batches, beside the engine's stream
        self.check_stream = cuda_rt.Stream()  # the NaN/Inf kernels, beside the engine (finite_gpu.py)
        self._fork, self._join = self._make_event(), self._make_event()
        self._producer_event = self._make_event()
        self._gpu = GpuTarget(cuda_rt.current_device(), cuda_rt.pointer_location, self.stream.ptr)
        self._allocate_buffers()
        self._load_finite_check()

    def _load_finite_check(self) -> None:
        """The GPU kernels (finite_gpu.py): the NaN/Inf check of uploads, and the widening of
        half-precision uploads. Where they cannot load, the host checks and float32 is uploaded."""
        checked = [] if self.allow_nonfinite else [n for n in self.inputs if finite_gpu.supports(self.dtypes[n])]
        halves = [n for n in self.inputs if self.upload_half and self.dtypes[n] == np.float32]
        if not checked and not halves:
            return
        try:
            self._finite_gpu = finite_gpu.GpuFiniteCheck([n for n in self.inputs if n in checked or n in halves])
        except (RuntimeError, OSError, ImportError) as exc:  # a driver that cannot JIT the PTX, say
            log.warning("%s: the GPU kernels cannot load (%s); checking on the host, uploading float32", self.name, exc)
            self.upload_half = False
            return
        self._gpu_checked = frozenset(checked)
        for n in halves:
            count = self.host[n].array.size
            self._wire_host[n] = cuda_rt.PinnedBuffer(2 * count, np.float16)
            self._wire_device[n] = cuda_rt.DeviceBuffer(2 * count)
        self._halves = frozenset(halves)

    def _host_checks(self, name: str, dtype) -> bool:
        """Whether host input `name` is checked for NaN/Inf on the host (else on the GPU, or not at all)."""
        return not self.allow_nonfinite and host_staging.finite_dtype(dtype) and name not in self._gpu_checked

    def _deactivate(self) -> None:
        self._stager.close()
        self.release_graph()
        if self._finite_gpu is not None:
            self._finite_gpu.free()
            self._finite_gpu, self._gpu_checked = None, frozenset()
        for buf in [*self.device.values(), *self.host.values(), *self._wire_host.values(), *self._wire_device.values(),
                    *self._events, self._producer_event, self._fork, self._join]:
            buf.free()
        self.device, self.host, self._events, self._addresses, self._handed, self._views = {}, {}, [], {}, {}, {}
        self._wire_host, self._wire_device, self._halves = {}, {}, frozenset()
        self._gpu = None
        self.copy_stream.free()
        self.check_stream.free()
        self.stream.free()
        self.context = self.engine = self.runtime = None
        self._bound_shape = self._bound_shapes = None
        self._active_profile = None

    def _make_event(self):
        return cuda_rt.Event(timing=False)

    # -- end-to-end calls ------------------------------------------------------------------------
    def _infer(self, feed, outputs="host"):
        host_bytes = 0
        for value in feed.values():
            if isinstance(value, np.ndarray):
                host_bytes += value.nbytes
        path = self._infer_whole if host_bytes <= self.graph_max_bytes else self._infer_pipelined
        halves = self.half_inputs(feed) if self._halves and host_bytes >= host_copy.MIN_BYTES else _NONE
        if not halves:
            return path(feed, outputs, _NONE)
        try:
            return path(feed, outputs, halves)
        except finite_gpu.OutOfHalf:
            pass
        results = path(feed, outputs, _NONE)  # raises as always on a NaN/Inf (unless allowed)
        # Finite there: a value beyond float16's range (or an allowed NaN/Inf), likely again next call.
        log.warning("%s: input %s holds values float16 cannot hold (or NaN/Inf); uploading float32 from now on",
                    self.name, sorted(halves))
        self.upload_half, self._halves = False, frozenset()
        return results

    def half_inputs(self, feed) -> frozenset[str]:
        """The inputs this call uploads in half precision: float32 host arrays of at least
        host_copy.MIN_BYTES that torch's copy takes as they are (writable; numpy's float16
        conversion ran 6-25x slower than its plain copy, more than the bytes it saves), not the
        runner's own pinned buffers (those are uploaded as they are)."""
        names = [n for n in self._halves if isinstance(value := feed[n], np.ndarray) and value.dtype == np.float32
                 and value.nbytes >= host_copy.MIN_BYTES and value.flags.writeable and not self._own_pinned(n, value)]
        return frozenset(names) if names else _NONE

    # -- device-resident execution (benchmarks) ---------------------------------------------------
    def capture_graph(self) -> cuda_rt.Graph:
        """Capture one enqueue for the bound shapes as a CUDA graph (after one plain enqueue, as
        TensorRT requires after a shape change)."""
        if self._bound_shape is None:
            raise RuntimeError("bind() input shapes before capturing a graph")
        self.release_graph()
        self.enqueue()
        self.stream.synchronize()
        self._graph = cuda_rt.Graph(self.stream, self.enqueue)
        return self._graph

    def release_graph(self) -> None:
        for graph in (self._graph, self._io_graph):
            if graph is not None:
                graph.free()
        self._graph = self._io_graph = None

    def download(self) -> dict[str, np.ndarray]:
        """Copy the outputs of the last device-side run back, for checking graph replays."""
        shapes = self._out_shapes
        out = {n: np.empty(shapes[n], self.dtypes[n]) for n in self.outputs}
        for n, host in out.items():
            self.device[n].copy_to_host_async(host, self.stream)
        self.stream.synchronize()
        return out

    def upload(self, feed: dict[str, np.ndarray]) -> None:
        """Place validated inputs in the runner's device buffers and bind their shapes, for
        device-resident timing."""
        self._require_active()
        feed = check_feed(feed, self._metadata, self.allow_nonfinite)
        self.bind({n: feed[n].shape for n in self.inputs})
        self._drop_io_graph()
        self._io_key = None
        for n in self.inputs:
            np.copyto(self.host[n].view(feed[n].shape), feed[n])
        for n in (*self.inputs, *self.outputs):
            self._point(n, self.device[n].ptr)
        shapes = dict(self._bound_shape)
        for n in self.inputs:
            self.device[n].copy_from_host_async(self.host[n].view(shapes[n]), self.stream)
        self.stream.synchronize()
