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
import math

import numpy as np

from model.backends.base import (
    BackendUnavailable,
    InputError,
    Runner,
    TensorMeta,
    check_feed,
    check_pinned_batch,
    nonfinite_error,
)
from model.backends.device_arrays import DeviceView, GpuArray, GpuTarget
from model.backends.tensorrt import compat as trt_compat
from model.backends.tensorrt import cuda as cuda_rt
from model.backends.tensorrt import finite_gpu, host_copy
from model.backends.tensorrt import staging as host_staging
from model.profile import nearest_opt

log = logging.getLogger(__name__)

# "gpu": host inputs are checked for NaN/Inf on the GPU after their upload (finite_gpu.py); the
# others are host methods (staging.all_finite), run on the staging threads as the rows are copied.
FINITE_CHECKS = ("gpu", *host_staging.FINITE_CHECKS)
FINITE_CHECK = "gpu"
COPIER = "torch"  # see host_copy.py
_NONE: frozenset = frozenset()


class _OutOfHalf(Exception):
    """A half-precision upload flagged NaN/Inf: a NaN/Inf in the input, or a value beyond
    float16's range. The call runs again from float32, which tells the two apart."""


class TrtRunner(Runner):
    """Two paths for an end-to-end call (see model/backends/tensorrt/staging.py):

    - host input up to `graph_max_bytes`: copied into pinned memory (from `split_bytes` on by the
      calling thread and `staging_threads` workers); with `graphs=True` (default), once the same
      shapes, addresses and output place come twice in a row, the upload, the NaN/Inf check, the
      engine and the copy out are captured as one CUDA graph and replayed, so a small batch costs
      one launch instead of several driver calls.
    - larger: cut into sub-batches (about `subbatch_bytes`; 0 runs the batch at once), each cut in
      pieces (`pieces_per_thread` per staging thread) that the calling thread and the workers take
      in order and copy into pinned memory; once a sub-batch's pieces are staged it is uploaded in
      one copy on a second stream and run right after, while the threads go on with the next.

    How host inputs are copied into pinned memory (`copier`, host_copy.py): "numpy", np.copyto on
    the calling thread and the workers, piece by piece; "torch", torch's CPU copy on its own
    intra-op threads, one copy per sub-batch (the first by the calling thread, the later ones by one
    feeder thread while the calling thread runs the GPU), and for the graph path's whole batch from
    host_copy.MIN_BYTES on.

    The NaN/Inf check of host inputs (`finite_check`): by default ("gpu") a kernel reads what was
    uploaded, beside the engine (finite_gpu.py), so the host only copies and a feed from
    `pinned_inputs` is not read by the host at all; the call fails after the GPU's work when one
    was found, returning nothing. A host method ("dot", "sum", "minmax", "isfinite"; also where
    the kernels cannot load) checks each piece as it is staged (small inputs on the graph path:
    on the calling thread while the GPU runs).

    Half-precision uploads (`upload_half`; default on for FP16 engines, with the torch copier): a
    float32 host input of at least host_copy.MIN_BYTES is converted to float16 while it is copied
    into pinned memory, crosses PCIe in half the bytes, and is widened back to float32 on the GPU
    (finite_gpu.widen, which also checks it) where the engine reads it. The engine sees the input
    rounded to float16, as an FP16 engine's own first reformat does. A call whose half upload is
    flagged (a NaN/Inf, or a value beyond float16's +-65504) runs again from float32: a NaN/Inf is
    then refused (or passed, with `allow_nonfinite`) as always, and a finite input beyond the range
    gets its float32 answer and turns half uploads off for the runner.

    Feeds already on the GPU are used where they are (their address goes to TensorRT); a feed from
    `pinned_inputs` is uploaded without being staged."""

    stages_inputs = True
    remembers_gpu_feeds = True

    def __init__(self, plan: bytes, label: str = "fp32", graphs: bool = True, *,
                 declared: dict[str, TensorMeta] | None = None, staging_threads: int | None = None,
                 graph_max_bytes: int = host_staging.GRAPH_MAX_BYTES, subbatch_bytes: int = host_staging.SUBBATCH_BYTES,
                 chunk_bytes: int = host_staging.CHUNK_BYTES, split_bytes: int = host_staging.SPLIT_BYTES,
                 pieces_per_thread: int = host_staging.PIECES_PER_THREAD, copier: str = COPIER,
                 finite_check: str = FINITE_CHECK, upload_half: bool | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        if finite_check not in FINITE_CHECKS:
            raise ValueError(f"finite_check must be one of {list(FINITE_CHECKS)}, received {finite_check!r}")
        self.finite_check = finite_check
        # How host inputs the GPU does not check are checked (all of them, when the kernels could not load).
        self._host_check = host_staging.FINITE_CHECK if finite_check == "gpu" else finite_check
        self._finite_gpu: finite_gpu.GpuFiniteCheck | None = None
        self._gpu_checked: frozenset[str] = frozenset()  # inputs whose uploads the GPU checks
        self.name = f"tensorrt-{label}"
        self._plan = plan
        # The model's own input metadata, whose dtypes and axis names the runner accepts (TensorRT
        # narrows int64 inputs to int32; host feeds are converted while staged).
        self._declared = declared or {}
        self.use_graphs = graphs
        self.graph_max_bytes, self.subbatch_bytes, self.chunk_bytes = graph_max_bytes, subbatch_bytes, chunk_bytes
        self.split_bytes = split_bytes
        if pieces_per_thread < 1:
            raise ValueError(f"pieces_per_thread must be at least 1, received {pieces_per_thread}")
        self.pieces_per_thread = pieces_per_thread
        bulk_copy = host_copy.load(copier)
        self.copier = copier if bulk_copy is not None else "numpy"
        self._copy = bulk_copy or np.copyto  # how every host input reaches pinned memory
        if upload_half is None:
            upload_half = label.partition("-")[0] == "fp16"
        # numpy's float16 conversion ran 6-25x slower than its plain copy on this project's CPU: only torch's pays off.
        self.upload_half = bool(upload_half) and self.copier == "torch"
        self._halves: frozenset[str] = frozenset()  # float32 inputs with half-precision buffers (when active)
        self._wire_host: dict[str, cuda_rt.PinnedBuffer] = {}  # float16 staging, per input in _halves
        self._wire_device: dict[str, cuda_rt.DeviceBuffer] = {}  # where it lands before widening
        if self.copier == "numpy":
            self._stager = host_staging.Stager(staging_threads)
        else:  # one feeder thread at most: each of its copies already runs on torch's threads
            self._stager = host_staging.Stager(1 if staging_threads is None else min(1, staging_threads), defer=True)
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
        self.copy_stream = cuda_rt.Stream()  # uploads of staged pieces, beside the engine's stream
        self.check_stream = cuda_rt.Stream()  # the NaN/Inf kernels, beside the engine (finite_gpu.py)
        self._fork, self._join = self._make_event(), self._make_event()
        self._producer_event = self._make_event()
        self._gpu = GpuTarget(cuda_rt.current_device(), cuda_rt.pointer_location, self.stream.ptr)
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
        # Sub-batches need outputs that grow with the batch along axis 0 (a model whose outputs
        # do not, say a batch statistic, runs each large batch at once).
        widest_batch = self.profiles[widest][first][2][0]
        self._batch_major = all(tuple(self.context.get_tensor_shape(n))[:1] == (widest_batch,) for n in self.outputs)
        self._row_align = host_staging.row_alignment(
            [math.prod(tuple(self.context.get_tensor_shape(n))[1:]) * self.dtypes[n].itemsize for n in names])
        self._set_addresses()
        self._load_finite_check()

    def _load_finite_check(self) -> None:
        """The GPU kernels (finite_gpu.py): the NaN/Inf check of uploads, and the widening of
        half-precision uploads."""
        checked = [n for n in self.inputs if finite_gpu.supports(self.dtypes[n])] \
            if self.finite_check == "gpu" and not self.allow_nonfinite else []
        halves = [n for n in self.inputs if self.upload_half and self.dtypes[n] == np.float32]
        if not checked and not halves:
            return
        try:
            self._finite_gpu = finite_gpu.GpuFiniteCheck([n for n in self.inputs if n in checked or n in halves])
        except (RuntimeError, OSError, ImportError) as exc:  # a driver that cannot JIT the PTX, say: the host checks
            log.warning("%s: the GPU kernels cannot load (%s); checking on the host (%s), uploading float32",
                        self.name, exc, self._host_check)
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

    # -- inference -------------------------------------------------------------------------------
    def _set_shape(self, name: str, shape: tuple) -> None:
        if not self.context.set_input_shape(name, shape):
            lo, hi = self.shape_range[name]
            raise InputError(f"Input tensor: {name} | TensorRT rejected shape {shape} | Expected a shape "
                             f"between the profile's min {lo} and max {hi}: {self.logger.errors()[-1:]}")

    def _set_addresses(self) -> None:
        """Every tensor at the runner's own buffers, told afresh (after a profile switch)."""
        self._addresses = {}
        for n, buf in self.device.items():
            self._point(n, buf.ptr)

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
            return self._out_shapes  # the usual case, checked first: a batch-1 call is about 45 us
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

    # -- end-to-end calls ------------------------------------------------------------------------
    def _point(self, name: str, ptr: int) -> None:
        """Give TensorRT the address of a tensor, only when it changed (the pipelined path moves
        them per sub-batch, a GPU feed brings its own)."""
        if self._addresses.get(name) != ptr:
            if not self.context.set_tensor_address(name, ptr):
                raise RuntimeError(f"TensorRT refused the device address for tensor {name!r}")
            self._addresses[name] = ptr

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

    def _wait_for_producers(self, feed) -> None:
        """GPU feeds whose producer still has work queued (a `__cuda_array_interface__` v3 stream):
        the runner's stream waits for it on the device, the host does not."""
        for n in self.inputs:
            value = feed[n]
            if isinstance(value, GpuArray) and value.stream is not None:
                self._producer_event.record(value.stream)
                self.stream.wait(self._producer_event)

    def _stage_whole(self, name: str, value: np.ndarray, half: bool) -> np.ndarray | None:
        """A host input of the graph path into the pinned buffer (`half`: converted into the
        float16 one, checked on the GPU as it is widened). Returns the rows still to be
        checked for NaN/Inf on the host (None: nothing to check there): the calling thread checks
        them while the GPU runs the graph. From `split_bytes` on, the copy is shared with the
        staging workers and each piece checked (host methods) as it is copied."""
        if half:
            self._copy(self._wire_host[name].view(value.shape), value)
            return None
        own = self._own_pinned(name, value)
        check = self._host_checks(name, value.dtype)
        if own and not check:
            return None
        pinned = None if own else self.host[name].view(value.shape)
        if self.copier == "numpy" and self._stager.pieces(value.shape[0], value.nbytes, self.split_bytes) > 1:
            item = host_staging.Staged(value, pinned, check, self._host_check)
            if self._stager.stage_now([item], value.shape[0], value.nbytes, self.split_bytes) >= 0:
                raise nonfinite_error(name, value)
            return None
        if pinned is None:
            return value
        self._copy(pinned, value)
        return pinned if check else None

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
        except _OutOfHalf:
            pass
        results = path(feed, outputs, _NONE)  # raises as always on a NaN/Inf (unless allowed)
        # Finite there: a value beyond float16's range (or an allowed NaN/Inf), likely again next call.
        log.warning("%s: input %s holds values float16 cannot hold (or NaN/Inf); uploading float32 from now on",
                    self.name, sorted(halves))
        self.upload_half, self._halves = False, frozenset()
        return results

    def half_inputs(self, feed) -> frozenset[str]:
        """The inputs this call uploads in half precision: float32 host arrays of at least
        host_copy.MIN_BYTES that torch's copy takes as they are (writable), not the runner's own
        pinned buffers (those are uploaded as they are)."""
        names = [n for n in self._halves if isinstance(value := feed[n], np.ndarray) and value.dtype == np.float32
                 and value.nbytes >= host_copy.MIN_BYTES and value.flags.writeable and not self._own_pinned(n, value)]
        return frozenset(names) if names else _NONE

    def _infer_whole(self, feed, outputs, halves):
        """The whole batch at once: staged (or pointed to, GPU feeds), then upload, NaN/Inf check
        beside the engine, engine and copy out; the second call with the same shapes, addresses
        and output place captures what follows the staging as one CUDA graph, replayed from then
        on. Written for as few Python steps as it can: a batch-1 replay takes about 45 us on the H200."""
        inputs = self.inputs
        out_shapes = self.bind({n: feed[n].shape for n in inputs})
        uploads, addresses, unchecked = [], [], []
        for n in inputs:
            value = feed[n]
            if isinstance(value, GpuArray):
                if value.stream is not None:  # the producer's queued work first, on the device
                    self._producer_event.record(value.stream)
                    self.stream.wait(self._producer_event)
                addresses.append(self._device_address(n, value))
            else:
                rows = self._stage_whole(n, value, n in halves)
                if rows is not None:
                    unchecked.append((n, rows))
                uploads.append(n)
                addresses.append(self.device[n].ptr)
        widens = [n for n in uploads if n in halves]
        checks = [n for n in uploads if n in self._gpu_checked and n not in halves]
        key = (self._bound_shape, addresses, uploads, checks, widens, outputs)  # what a captured graph bakes in
        if key != self._io_key:
            self._drop_io_graph()
            self._io_key, self._calls_at_key = key, 0
            for n, ptr in zip(inputs, addresses):
                self._point(n, ptr)
            for n in self.outputs:
                self._point(n, self.device[n].ptr)
        download = outputs == "host"
        if self._io_graph is not None:
            self._io_graph.launch()
        else:
            self._enqueue_io(uploads, checks, download, widens)
        # Checked while the GPU works (the copy only reads them); a NaN/Inf fails the call after it.
        bad = next((n for n, rows in unchecked if not host_staging.all_finite(rows, self._host_check)), None)
        self.stream.synchronize()
        flagged = self._finite_gpu.flagged() if checks or widens else None  # read (and cleared) either way
        if bad is None and flagged in halves:
            raise _OutOfHalf(flagged)
        bad = bad or flagged
        if bad is not None:
            raise nonfinite_error(bad, feed[bad])
        results = self._results(out_shapes, outputs)
        if self._io_graph is None:
            self._calls_at_key += 1
            if self.use_graphs and self._calls_at_key >= 2:
                self._capture_io_graph(uploads, checks, download, widens)
        return results

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

    def _results(self, out_shapes: dict, outputs: str) -> dict:
        if outputs == "device":
            # The same views while the shapes stay: they only describe the runner's buffers.
            views = self._views.get(self._bound_shape)
            if views is None:
                views = self._views[self._bound_shape] = {
                    n: DeviceView(self.device[n].ptr, out_shapes[n], self.dtypes[n], owner=self) for n in self.outputs}
            return dict(views)
        return {n: self.host[n].view(out_shapes[n]).copy() for n in self.outputs}  # buffers are reused

    def _enqueue_io(self, uploads: list[str], checks: list[str], download: bool, widens: list[str]) -> None:
        """Copy the staged inputs in (`widens`: from their float16 buffers, then widened into the
        engine's, checked as they are), check the others on the check stream beside the engine
        (forked from the engine's stream and joined back before the copy out ends the work), run,
        copy the outputs out: all asynchronous."""
        shapes = dict(self._bound_shape)
        for n in uploads:
            if n in widens:
                self._wire_device[n].copy_from_host_async(self._wire_host[n].view(shapes[n]), self.stream)
            else:
                self.device[n].copy_from_host_async(self.host[n].view(shapes[n]), self.stream)
        for n in widens:
            self._finite_gpu.widen(n, self._wire_device[n].ptr, self.device[n].ptr, math.prod(shapes[n]), self.stream)
        if checks:
            self._fork.record(self.stream)
            self.check_stream.wait(self._fork)
            for n in checks:
                self._finite_gpu.enqueue(n, self.device[n].ptr, math.prod(shapes[n]), self.dtypes[n], self.check_stream)
            self._join.record(self.check_stream)
        self.enqueue()
        if download:
            for n in self.outputs:
                self.device[n].copy_to_host_async(self.host[n].view(self._out_shapes[n]), self.stream)
        if checks:
            self.stream.wait(self._join)

    def _event(self, index: int):
        while len(self._events) <= index:
            self._events.append(self._make_event())
        return self._events[index]

    def _make_event(self):
        return cuda_rt.Event(timing=False)

    def _infer_pipelined(self, feed, outputs, halves):
        """A large batch in sub-batches. The calling thread and the workers take its pieces in
        order (staging.Claims) and copy each into pinned memory; once a sub-batch's pieces are all
        staged (the calling thread takes unclaimed ones of it, then waits on its latch), it is
        uploaded in one copy on the copy stream, the engine's stream waits for that (an event) and
        runs it, the NaN/Inf kernel reads it on the check stream meanwhile, and its outputs are
        copied back behind it, while the threads stage the next; the result arrays are filled
        sub-batch by sub-batch as each one finishes. A feed that needs no staging (the runner's
        own pinned buffers, GPU checked) is uploaded as soon as the call starts its sub-batch.
        `halves` are staged as float16 and widened on the engine's stream before it runs.

        Uploading each piece as soon as it was copied was measured slower on the H200: the copy
        stream moved 48 MiB in 5.4 ms (9 GB/s) against 0.25-0.4 ms per 12 MiB sub-batch uploaded
        whole once staged.

        One execution context runs the sub-batches one after another on one stream (its one
        optimization profile is never used by two enqueues at once); the staging and the copies
        overlap the engine."""
        batch = feed[self.inputs[0]].shape[0]
        self._drop_io_graph()  # the context's addresses move below: no captured graph matches them
        self._io_key = None
        host = [n for n in self.inputs if isinstance(feed[n], np.ndarray)]
        row_values = {n: math.prod(feed[n].shape[1:]) for n in self.inputs}
        row_bytes = {n: row_values[n] * self.dtypes[n].itemsize for n in self.inputs}  # in the engine's buffers
        # The profile the whole batch calls for serves every sub-batch: no switch (and sync) mid-call.
        profile = self.profile_for({n: feed[n].shape for n in self.inputs})
        subbatches = self.plan(batch, sum(feed[n].nbytes // batch for n in host), self.profiles[profile][self.inputs[0]][0][0])
        pinned = {n: (self._wire_host if n in halves else self.host)[n].view(feed[n].shape) for n in host}
        items = [host_staging.Staged(feed[n], None if self._own_pinned(n, feed[n]) else pinned[n],
                                     n not in halves and self._host_checks(n, feed[n].dtype), self._host_check, self._copy)
                 for n in host]
        landing = {n: (self._wire_device if n in halves else self.device)[n] for n in host}
        # Checked on the check stream after each upload (halves: as they are widened).
        on_gpu = [n for n in host if n in self._gpu_checked and n not in halves]
        staging = self._stager.start(items, subbatches) if host_staging.needs_staging(items) else None
        try:
            self._wait_for_producers(feed)
            base = {n: self.device[n].ptr if n in host else self._device_address(n, feed[n]) for n in self.inputs}
            out_shapes = None
            for i, sb in enumerate(subbatches):
                if staging is not None:  # this thread's pieces, then the workers' (one wake-up per sub-batch)
                    bad = staging.through(i)
                    if bad >= 0:
                        raise nonfinite_error(host[bad], feed[host[bad]])
                if host:  # the whole sub-batch in one copy
                    self._upload_rows(host, pinned, landing, sb.start, sb.stop)
                    landed = self._event(2 * i)
                    landed.record(self.copy_stream)
                    self.stream.wait(landed)
                    for n in halves:
                        self._finite_gpu.widen(n, self._wire_device[n].ptr + sb.start * pinned[n].strides[0],
                                               self.device[n].ptr + sb.start * row_bytes[n], sb.rows * row_values[n],
                                               self.stream)
                    if on_gpu:
                        self.check_stream.wait(landed)
                        for n in on_gpu:
                            self._finite_gpu.enqueue(n, self.device[n].ptr + sb.start * row_bytes[n],
                                                     sb.rows * row_values[n], self.dtypes[n], self.check_stream)
                shapes = self.bind({n: (sb.rows, *feed[n].shape[1:]) for n in self.inputs}, profile)
                if out_shapes is None:
                    out_shapes = {n: (batch, *s[1:]) for n, s in shapes.items()}
                    out_row = {n: math.prod(s[1:]) * self.dtypes[n].itemsize for n, s in shapes.items()}
                for n in self.inputs:
                    self._point(n, base[n] + sb.start * row_bytes[n])
                for n in self.outputs:
                    self._point(n, self.device[n].ptr + sb.start * out_row[n])
                self.enqueue()
                if outputs == "host":
                    for n in self.outputs:
                        rows = self.host[n].view(out_shapes[n])[sb.start:sb.stop]
                        self.device[n].copy_to_host_async(rows, self.stream, offset=sb.start * out_row[n])
                    self._event(2 * i + 1).record(self.stream)
            if on_gpu:
                self._join.record(self.check_stream)
            if outputs == "device":
                self.stream.synchronize()
                self._refuse_flagged(feed, on_gpu, halves)
                return {n: DeviceView(self.device[n].ptr, out_shapes[n], self.dtypes[n], owner=self) for n in self.outputs}
            results = {n: np.empty(out_shapes[n], self.dtypes[n]) for n in self.outputs}
            for i, sb in enumerate(subbatches):  # earlier sub-batches are copied out while later ones run
                self._event(2 * i + 1).synchronize()
                for n in self.outputs:
                    results[n][sb.start:sb.stop] = self.host[n].view(out_shapes[n])[sb.start:sb.stop]
            self._refuse_flagged(feed, on_gpu, halves)
            return results
        except BaseException:
            if staging is not None:
                staging.abandon()  # the workers write nothing more once this returns
            for stream in (self.copy_stream, self.check_stream, self.stream):
                stream.synchronize()
            if self._finite_gpu is not None:
                self._finite_gpu.clear()  # a check that ran before the failure flags nothing next call
            raise

    def plan(self, batch: int, row_bytes: int, min_rows: int = 1) -> list[host_staging.SubBatch]:
        """How the pipelined path cuts a batch of `row_bytes` host bytes per row (staging.plan):
        with numpy copies, `pieces_per_thread` pieces per staging thread in each sub-batch; with
        torch's, each sub-batch is one copy (torch splits it across its own threads)."""
        threads, pieces = (self._stager.workers, self.pieces_per_thread) if self.copier == "numpy" else (0, 1)
        return host_staging.plan(batch, row_bytes, threads, chunk_bytes=self.chunk_bytes, min_rows=min_rows,
                                 row_align=self._row_align, pieces_per_thread=pieces,
                                 subbatch_bytes=self.subbatch_bytes if self._batch_major else 0)

    def _upload_rows(self, host: list[str], pinned: dict, landing: dict, start: int, stop: int) -> None:
        """Rows `start:stop` of every host input, from pinned memory into its device buffer, on the copy stream."""
        for n in host:
            landing[n].copy_from_host_async(pinned[n][start:stop], self.copy_stream, offset=start * pinned[n].strides[0])

    def _refuse_flagged(self, feed, on_gpu: list[str], halves: frozenset[str]) -> None:
        """Once the check stream's kernels (and the engine stream's widening) have finished: a
        NaN/Inf they found fails the call; one in a half upload is decided again from float32."""
        if on_gpu or halves:
            if on_gpu:  # the widening ran on the engine's stream, already waited for
                self._join.synchronize()
            bad = self._finite_gpu.flagged()
            if bad in halves:
                raise _OutOfHalf(bad)
            if bad is not None:
                raise nonfinite_error(bad, feed[bad])

    @property
    def replaying(self) -> bool:
        """Whether the next call at the bound shape replays a captured graph."""
        return self._io_graph is not None

    def _capture_io_graph(self, uploads: list[str], checks: list[str], download: bool, widens: list[str]) -> None:
        try:
            self._io_graph = cuda_rt.Graph(self.stream, lambda: self._enqueue_io(uploads, checks, download, widens))
        except cuda_rt.CudaError as exc:  # graphs are an optimization: fall back to plain enqueues
            log.warning("%s: CUDA graph capture failed (%s); running without graphs", self.name, exc)
            self.use_graphs = False

    def _drop_io_graph(self) -> None:
        if self._io_graph is not None:
            self._io_graph.free()
            self._io_graph = None

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
        self._enqueue_uploads()
        self.stream.synchronize()

    def _enqueue_uploads(self) -> None:
        shapes = dict(self._bound_shape)
        for n in self.inputs:
            self.device[n].copy_from_host_async(self.host[n].view(shapes[n]), self.stream)
