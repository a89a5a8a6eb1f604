"""The TensorRT runner's bindings: the engine's tensors, its optimization profiles, the input
shapes and tensor addresses the execution context is told, and the buffers behind them.

With a dynamic batch axis the context must be told the input shape (`set_input_shape`) before
outputs have a shape at all; output sizes are read from the context afterwards, never from the
engine's declared dims (-1 there). An engine may hold several optimization profiles over the same
batch range, each tuned for another batch (model/profile.py); the runner switches its one context
to the profile tuned nearest the batch it is given, and only when that changes. Every call is
written to tell TensorRT only what changed: a batch-1 call is about 45 us on the H200.
"""
from __future__ import annotations

import math

import numpy as np

from model.backends.base import InputError, TensorMeta, check_pinned_batch
from model.backends.device_arrays import GpuArray
from model.backends.tensorrt import compat as trt_compat
from model.backends.tensorrt import cuda as cuda_rt
from model.backends.tensorrt import staging as host_staging
from model.profile import nearest_opt


class EngineBindings:
    """Mixed into TrtRunner. Reads the runner's `_plan`, `_declared`, `stream`, `_metadata` and
    `_producer_event`; when the bound shapes change, calls its `release_graph` and forgets its
    graph path's key (graph_path.py)."""

    def _open_engine(self) -> None:
        """Deserialize the plan, make the context, read the tensors and their profiles."""
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
        self.device, self.host = {}, {}
        self._active_profile = 0  # a new context starts on profile 0

    def _allocate_buffers(self) -> None:
        """Buffers sized once for the largest shapes any profile allows, so no inference call allocates."""
        first = self.inputs[0]
        widest = max(range(len(self.profiles)), key=lambda i: self.profiles[i][first][2][0])
        self._select_profile(widest)
        for n in self.inputs:
            self._set_shape(n, self.profiles[widest][n][2])
        names = [*self.inputs, *self.outputs]
        for n in names:
            shape = tuple(self.context.get_tensor_shape(n))
            nbytes = int(np.prod(shape)) * self.dtypes[n].itemsize
            self.device[n] = cuda_rt.DeviceBuffer(nbytes)
            self.host[n] = cuda_rt.PinnedBuffer(nbytes, self.dtypes[n])
        # Sub-batches need outputs that grow with the batch along axis 0 (a model whose outputs
        # do not, say a batch statistic, runs each large batch at once).
        widest_batch = self.profiles[widest][first][2][0]
        self._batch_major = all(tuple(self.context.get_tensor_shape(n))[:1] == (widest_batch,) for n in self.outputs)
        self._row_align = host_staging.row_alignment(
            [math.prod(tuple(self.context.get_tensor_shape(n))[1:]) * self.dtypes[n].itemsize for n in names])
        self._set_addresses()

    def _input_metadata(self) -> dict[str, TensorMeta]:
        meta = {}
        for n in self.inputs:
            shape = tuple(None if d < 0 else d for d in self.engine.get_tensor_shape(n))
            lo, hi = self.shape_range[n]
            # The batch always has a range, also in an engine built for one batch (its set spans them all).
            ranges = tuple((lo[i], hi[i]) if d is None or i == 0 else None for i, d in enumerate(shape))
            declared = self._declared.get(n)
            dtype = np.dtype(declared.dtype) if declared is not None else self.dtypes[n]
            if dtype != self.dtypes[n] and not self.narrowed(n, dtype):
                raise RuntimeError(f"engine input {n!r} is {self.dtypes[n]}, the model declares {dtype}")
            meta[n] = TensorMeta(dtype, shape, ranges, declared.axes if declared is not None else (),
                                 declared.values if declared is not None else None)
        return meta

    def narrowed(self, name: str, declared=None) -> bool:
        """Whether TensorRT runs this input narrower than the model declares (int64 ids as int32)."""
        declared = np.dtype(declared if declared is not None else self._metadata[name].dtype)
        return declared == np.int64 and self.dtypes[name] == np.int32

    # -- shapes and profiles -------------------------------------------------------------------------
    def _set_shape(self, name: str, shape: tuple) -> None:
        if not self.context.set_input_shape(name, shape):
            lo, hi = self.shape_range[name]
            raise InputError(f"Input tensor: {name} | TensorRT rejected shape {shape} | Expected a shape "
                             f"between the profile's min {lo} and max {hi}: {self.logger.errors()[-1:]}")

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

    def bind(self, shapes: dict[str, tuple], profile: int | None = None) -> dict[str, tuple]:
        """Set input shapes (only when they change), on `profile` or the one `profile_for` picks;
        returns the output shapes TensorRT resolved."""
        if shapes == self._bound_shapes and (profile is None or profile == self._active_profile):
            return self._out_shapes  # the usual case, checked first
        key = tuple(sorted(shapes.items()))
        if key != self._bound_shape or (profile is not None and profile != self._active_profile):
            self.release_graph()  # a captured graph is only valid for the shapes it was captured with
            self._io_key = None
            self._bound_shape, self._bound_shapes = None, None  # until every shape below is accepted
            self._select_profile(self.profile_for(shapes) if profile is None else profile)
            for n, shape in shapes.items():
                self._set_shape(n, shape)
            self._bound_shape, self._bound_shapes = key, dict(shapes)
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

    # -- addresses -------------------------------------------------------------------------------------
    def _set_addresses(self) -> None:
        """Every tensor at the runner's own buffers, told afresh (after a profile switch)."""
        self._addresses = {}
        for n, buf in self.device.items():
            self._point(n, buf.ptr)

    def _point(self, name: str, ptr: int) -> None:
        """Give TensorRT the address of a tensor, only when it changed (the pipelined path moves
        them per sub-batch, a GPU feed brings its own)."""
        if self._addresses.get(name) != ptr:
            if not self.context.set_tensor_address(name, ptr):
                raise RuntimeError(f"TensorRT refused the device address for tensor {name!r}")
            self._addresses[name] = ptr

    def _device_address(self, name: str, value) -> int:
        """Where the engine reads GPU input `name`: where it is, unless its address is not aligned
        as TensorRT requires (then copied into the runner's buffer on the device, after the
        producer's work)."""
        if self.dtypes[name] != value.dtype:  # the check accepted the declared dtype: TensorRT runs it narrower
            raise InputError(f"Input tensor: {name} | Received {value.dtype} on the GPU | TensorRT runs this input as "
                             f"{self.dtypes[name]}: pass a host array (converted while staged)")
        if value.ptr % host_staging.ADDRESS_ALIGN == 0:
            return value.ptr
        self.device[name].copy_from_device_async(value.ptr, value.nbytes, self.stream)
        return self.device[name].ptr

    def _wait_for_producers(self, feed) -> None:
        """GPU feeds whose producer still has work queued (a `__cuda_array_interface__` v3 stream):
        the runner's stream waits for it on the device, the host does not."""
        for n in self.inputs:
            value = feed[n]
            if isinstance(value, GpuArray) and value.stream is not None:
                self._producer_event.record(value.stream)
                self.stream.wait(self._producer_event)

    # -- the runner's own pinned inputs ----------------------------------------------------------------
    def _own_pinned(self, name: str, value: np.ndarray) -> bool:
        """Whether `value` is the very array `pinned_inputs` handed out for `name` at its batch
        (an identity test: a pointer comparison cost 3 us of a 45 us batch-1 call). Another view
        of that memory is staged like any host array, which is still correct."""
        return self._handed.get((name, value.shape[0])) is value

    def pinned_inputs(self, batch: int) -> dict[str, np.ndarray]:
        """The runner's own pinned input arrays for a batch, to fill in place: a feed made of them
        skips the staging copy. For inputs whose every dim but the batch is fixed, at the model's
        declared dtype (not for inputs TensorRT narrows: those are converted while staged)."""
        self._require_active()
        out = {}
        for n, meta in self._metadata.items():
            check_pinned_batch(n, batch, meta)
            if any(d is None for d in meta.shape[1:]) or self.narrowed(n):
                raise InputError(f"Input tensor: {n} | pinned_inputs needs every dim but the batch fixed and the "
                                 f"engine's own dtype; this input is {meta.dtype} {meta.shape} (engine "
                                 f"{self.dtypes[n]}): pass host arrays instead")
            out[n] = self._handed.get((n, batch))
            if out[n] is None:
                out[n] = self._handed[(n, batch)] = self.host[n].view((batch, *meta.shape[1:]))
        return out
