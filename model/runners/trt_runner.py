"""TensorRT through the name-based API, with the dynamic batch axis handled properly.

This is the path the user's code missed: with a dynamic batch axis, the context must be told
the input shape (`set_input_shape`) before outputs have a shape at all; output sizes are read
from the context afterwards, never from the engine's declared dims (-1 there).

An engine may hold several optimization profiles over the same batch range, each tuned for
another batch (see model/profile.py); the runner switches its one context to the profile tuned
nearest the batch it is given, and only when that changes.
"""
from __future__ import annotations

import logging

import numpy as np

from model import cuda_rt, trt_compat
from model.profile import nearest_opt
from model.runners.base import BackendUnavailable, InputError, Runner, TensorMeta, check_feed

log = logging.getLogger(__name__)


class TrtRunner(Runner):
    """`graphs=True` (default): once the same input shape comes twice in a row, the copy in,
    the engine and the copy out are captured as one CUDA graph and replayed for that shape, so a
    small batch costs one launch instead of four driver calls."""

    def __init__(self, plan: bytes, label: str = "fp32", graphs: bool = True,
                 declared: dict[str, TensorMeta] | None = None, **kwargs) -> None:
        """`declared`: the model's own input metadata, whose dtypes and axis names the runner
        accepts (TensorRT narrows int64 inputs to int32; the runner converts while staging)."""
        super().__init__(**kwargs)
        self.name = f"tensorrt-{label}"
        self._plan = plan
        self._declared = declared or {}
        self.use_graphs = graphs
        self._bound_shape = None
        self._graph = None  # device-only replay (benchmarks)
        self._io_graph = None  # copy in + engine + copy out, for the bound shape
        self._calls_at_shape = 0

    # -- lifecycle -------------------------------------------------------------------------------
    def _activate(self) -> None:
        reason = cuda_rt.gpu_unavailable_reason()
        if reason:
            raise BackendUnavailable(f"TensorRT needs a GPU: {reason}")
        trt = self.trt = trt_compat.import_tensorrt()
        self.logger = trt_compat.Logger(trt)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(self._plan)
        if self.engine is None:
            raise RuntimeError(f"TensorRT could not deserialize the plan: {self.logger.errors()}")
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise RuntimeError(f"TensorRT could not create an execution context: {self.logger.errors()}")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        self.dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        # One entry per optimization profile: {input: (min, opt, max) shapes}.
        self.profiles = [{n: tuple(tuple(d) for d in self.engine.get_tensor_profile_shape(n, i)) for n in self.inputs}
                         for i in range(self.engine.num_optimization_profiles)]
        first = self.inputs[0]
        # Per input, the smallest and largest shape any profile accepts.
        self.shape_range = {n: (min((p[n][0] for p in self.profiles), key=lambda s: s[0]),
                                max((p[n][2] for p in self.profiles), key=lambda s: s[0])) for n in self.inputs}
        self.profile_opts = [p[first][1][0] for p in self.profiles]
        self.stream = cuda_rt.Stream()
        self.device, self.host = {}, {}
        self._active_profile = 0  # a new context starts on profile 0
        # Buffers sized once for the largest shapes any profile allows, so no inference call allocates.
        widest = max(range(len(self.profiles)), key=lambda i: self.profiles[i][first][2][0])
        self._select_profile(widest)
        for n in self.inputs:
            self._set_shape(n, self.profiles[widest][n][2])
        for n in names:
            shape = tuple(self.context.get_tensor_shape(n))
            nbytes = int(np.prod(shape)) * self.dtypes[n].itemsize
            self.device[n] = cuda_rt.DeviceBuffer(nbytes)
            self.host[n] = cuda_rt.PinnedBuffer(nbytes, self.dtypes[n])
        self._set_addresses()

    def _deactivate(self) -> None:
        self.release_graph()
        for buf in [*self.device.values(), *self.host.values()]:
            buf.free()
        self.device, self.host = {}, {}
        self.stream.free()
        self.context = self.engine = self.runtime = None
        self._bound_shape = None
        self._active_profile = None

    def _input_metadata(self) -> dict[str, TensorMeta]:
        meta = {}
        for n in self.inputs:
            shape = tuple(None if d < 0 else d for d in self.engine.get_tensor_shape(n))
            lo, hi = self.shape_range[n]
            # The batch always has a range, also in an engine built for one batch (its set spans them all).
            ranges = tuple((lo[i], hi[i]) if d is None or i == 0 else None for i, d in enumerate(shape))
            declared = self._declared.get(n)
            dtype = declared.dtype if declared is not None else self.dtypes[n]
            if np.dtype(dtype) != self.dtypes[n] and not (np.dtype(dtype) == np.int64 and self.dtypes[n] == np.int32):
                raise RuntimeError(f"engine input {n!r} is {self.dtypes[n]}, the model declares {np.dtype(dtype)}")
            meta[n] = TensorMeta(np.dtype(dtype), shape, ranges, declared.axes if declared is not None else (),
                                 declared.values if declared is not None else None)
        return meta

    # -- inference -------------------------------------------------------------------------------
    def _set_shape(self, name: str, shape: tuple) -> None:
        if not self.context.set_input_shape(name, shape):
            lo, hi = self.shape_range[name]
            raise InputError(f"Input tensor: {name} | TensorRT rejected shape {shape} | Expected a shape "
                             f"between the profile's min {lo} and max {hi}: {self.logger.errors()[-1:]}")

    def _set_addresses(self) -> None:
        for n, buf in self.device.items():
            if not self.context.set_tensor_address(n, buf.ptr):
                raise RuntimeError(f"TensorRT refused the device address for tensor {n!r}")

    def _select_profile(self, index: int) -> None:
        if index == self._active_profile:
            return
        if not self.context.set_optimization_profile_async(index, self.stream.ptr):
            raise RuntimeError(f"TensorRT refused optimization profile {index}: {self.logger.errors()[-1:]}")
        self.stream.synchronize()
        self._active_profile = index
        self._set_addresses()

    def profile_for(self, shapes: dict[str, tuple]) -> int:
        """The optimization profile that serves these input shapes: of those whose range holds them,
        the one tuned for the nearest batch. Shapes no profile holds stay on the active profile,
        where TensorRT rejects them with its own message."""
        fits = [i for i, p in enumerate(self.profiles)
                if all(len(shape) == len(p[n][0]) and all(lo <= d <= hi for d, lo, hi in zip(shape, p[n][0], p[n][2]))
                       for n, shape in shapes.items() if n in p)]
        if not fits:
            return self._active_profile
        batch = next(iter(shapes.values()))[0]
        return fits[nearest_opt(batch, [self.profile_opts[i] for i in fits])]

    def bind(self, shapes: dict[str, tuple]) -> dict[str, tuple]:
        """Set input shapes (only when they change); returns the output shapes TensorRT resolved."""
        key = tuple(sorted(shapes.items()))
        if key != self._bound_shape:
            self.release_graph()  # a captured graph is only valid for the shapes it was captured with
            self._calls_at_shape = 0
            self._bound_shape = None  # until every shape below is accepted
            self._select_profile(self.profile_for(shapes))
            for n, shape in shapes.items():
                self._set_shape(n, shape)
            self._bound_shape = key
            self._out_shapes = {n: tuple(self.context.get_tensor_shape(n)) for n in self.outputs}
            unresolved = {n: s for n, s in self._out_shapes.items() if any(d < 0 for d in s)}
            if unresolved:
                raise RuntimeError(f"TensorRT left output shapes unresolved after set_input_shape: {unresolved}")
        return self._out_shapes

    @property
    def active_profile(self) -> int:
        return self._active_profile

    def enqueue(self) -> None:
        """Run the engine on what the device input buffers hold; asynchronous on the runner's stream."""
        if not self.context.execute_async_v3(self.stream.ptr):
            raise RuntimeError(f"TensorRT execute_async_v3 failed: {self.logger.errors()[-3:]}")

    def _copy_in(self, feed) -> dict[str, tuple]:
        """Bind the feed's shapes and stage it in the pinned input buffers."""
        out_shapes = self.bind({n: feed[n].shape for n in self.inputs})
        for n in self.inputs:
            # int64 ids into an int32 engine input: the feed check bounded their values already.
            np.copyto(self.host[n].view(feed[n].shape), feed[n], casting="unsafe")
        return out_shapes

    def _copy_inputs_to_device(self) -> None:
        shapes = dict(self._bound_shape)
        for n in self.inputs:
            self.device[n].copy_from_host_async(self.host[n].view(shapes[n]), self.stream)

    def _enqueue_io(self) -> None:
        """Copy the staged inputs in, run, copy the outputs out: all asynchronous on the stream."""
        self._copy_inputs_to_device()
        self.enqueue()
        for n in self.outputs:
            self.device[n].copy_to_host_async(self.host[n].view(self._out_shapes[n]), self.stream)

    def _infer(self, feed):
        out_shapes = self._copy_in(feed)
        if self._io_graph is not None:
            self._io_graph.launch()
        else:
            self._enqueue_io()
        self.stream.synchronize()
        results = {n: self.host[n].view(out_shapes[n]).copy() for n in self.outputs}  # buffers are reused
        self._calls_at_shape += 1
        if self.use_graphs and self._io_graph is None and self._calls_at_shape >= 2:
            self._capture_io_graph()
        return results

    @property
    def replaying(self) -> bool:
        """Whether the next call at the bound shape replays a captured graph."""
        return self._io_graph is not None

    def _capture_io_graph(self) -> None:
        try:
            self._io_graph = cuda_rt.Graph(self.stream, self._enqueue_io)
        except cuda_rt.CudaError as exc:  # graphs are an optimization: fall back to plain enqueues
            log.warning("%s: CUDA graph capture failed (%s); running without graphs", self.name, exc)
            self.use_graphs = False

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
        """Place validated inputs on the device and bind their shapes, for device-resident timing."""
        self._require_active()
        self._copy_in(check_feed(feed, self._metadata, self.allow_nonfinite))
        self._copy_inputs_to_device()
        self.stream.synchronize()
