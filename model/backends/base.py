"""The one runner interface every backend shares (after Polygraphy's BaseRunner).

A runner is activated once (it may hold device memory), then `infer(feed)` any number of times.
The base class validates every feed against `input_metadata()` before the backend sees it, so a
bad tensor fails the same way, with the same message, on every backend.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass, replace

import numpy as np

from model.backends import device_arrays
from model.backends.device_arrays import GpuArray, GpuTarget


class InputError(ValueError):
    """A feed that does not match the runner's input metadata."""


class BackendUnavailable(RuntimeError):
    """The backend cannot run on this machine; the message says why."""


@dataclass(frozen=True)
class TensorMeta:
    """One input as a runner accepts it. `shape` has None where a dim is dynamic; `ranges` the
    inclusive (lo, hi) of each dynamic dim (None where fixed); `axes` the name of each dynamic dim,
    so that inputs sharing an axis (batch, sequence) must agree on its size; `values` the valid
    value range of an integer input."""

    dtype: np.dtype
    shape: tuple
    ranges: tuple
    axes: tuple = ()
    values: tuple | None = None

    @property
    def min_batch(self) -> int:
        return self.ranges[0][0]

    @property
    def max_batch(self) -> int:
        return self.ranges[0][1]


def _describe(meta: TensorMeta) -> str:
    names = meta.axes or ("N",) + (None,) * (len(meta.shape) - 1)
    dims = [str(d) if d is not None else (names[i] if i < len(names) and names[i] else f"d{i}")
            for i, d in enumerate(meta.shape)]
    return "(" + ", ".join(dims) + ")"


def _dtype_text(dtype: np.dtype) -> str:
    # A byte-swapped float32 is still named "float32": say what differs, or the message contradicts itself.
    return dtype.name if dtype.isnative else f"{dtype.name} ({'big' if dtype.byteorder == '>' else 'little'}-endian, {dtype.str!r})"


def _expected(meta: TensorMeta) -> str:
    # Only built for an error: formatting it on every call cost more than the rest of the checks.
    names = meta.axes or ("N",)
    ranges = [f"{names[i] if i < len(names) and names[i] else f'd{i}'} in [{r[0]}, {r[1]}]"
              for i, r in enumerate(meta.ranges) if r is not None]
    return f"Expected {np.dtype(meta.dtype).name} {_describe(meta)}" + (f" with {', '.join(ranges)}" if ranges else "")


def _axis_label(meta: TensorMeta, i: int) -> str:
    name = meta.axes[i] if i < len(meta.axes) and meta.axes[i] else ("batch" if i == 0 else f"dim {i}")
    return name


def nonfinite_error(name: str, value: np.ndarray) -> InputError:
    """The NaN/Inf error, counted over the whole tensor (only ever built for an error)."""
    bad = int(value.size - np.isfinite(value).sum())
    return InputError(f"Input tensor: {name} | Received {bad} NaN/Inf values | Expected finite values "
                      "(pass allow_nonfinite=True to the runner to send them anyway)")


def _check_dtype_and_shape(name: str, dtype, shape: tuple, meta: TensorMeta, sizes: dict,
                           on_gpu: bool = False) -> None:
    """`sizes`: each named axis's size so far in this feed, so inputs sharing an axis must agree."""
    if dtype != meta.dtype:
        text = _dtype_text(dtype) if isinstance(dtype, np.dtype) else str(dtype)
        wanted = np.dtype(meta.dtype).name
        convert = f"convert on the GPU, e.g. .float() or .astype({wanted})" if on_gpu else f"convert with .astype(np.{wanted})"
        raise InputError(f"Input tensor: {name} | Received dtype {text} | {_expected(meta)} ({convert})")
    if len(shape) != len(meta.shape) or any(d is not None and d != v for d, v in zip(meta.shape, shape)):
        raise InputError(f"Input tensor: {name} | Received incompatible shape {shape} | {_expected(meta)}")
    for i, r in enumerate(meta.ranges):
        if r is not None and not r[0] <= shape[i] <= r[1]:
            raise InputError(f"Input tensor: {name} | Received {_axis_label(meta, i)} {shape[i]} outside the supported range "
                             f"[{r[0]}, {r[1]}] | {_expected(meta)}")
    _check_shared_axes(name, shape, meta, sizes)


def _check_shared_axes(name: str, shape: tuple, meta: TensorMeta, sizes: dict) -> None:
    for i, r in enumerate(meta.ranges):
        if r is None:
            continue
        size, label = shape[i], _axis_label(meta, i)
        seen = sizes.setdefault(label, (name, size))
        if seen[1] != size:
            raise InputError(f"Input tensor: {name} | Received {label} {size} | Expected {label} {seen[1]}, "
                             f"as in input {seen[0]} (inputs sharing an axis must agree on its size)")


def _check_values(name: str, value: np.ndarray, meta: TensorMeta) -> None:
    if meta.values is not None and value.size:
        lo, hi = int(value.min()), int(value.max())
        if lo < meta.values[0] or hi > meta.values[1]:
            raise InputError(f"Input tensor: {name} | Received values in [{lo}, {hi}] | Expected values in "
                             f"[{meta.values[0]}, {meta.values[1]}]")


def check_feed(feed: dict, metadata: dict[str, TensorMeta], allow_nonfinite: bool = False, *,
               gpu: GpuTarget | None = None, staged: bool = False, memo: dict | None = None) -> dict:
    """The feed made safe to hand to a backend: C-contiguous arrays of the right dtype and shape,
    every dynamic dim in its range and equal across the inputs that share its axis, integer inputs
    within their declared values.

    NaN/Inf policy (float inputs): rejected unless `allow_nonfinite`, because backends disagree on
    how they propagate (through max-pool, softmax) and a non-finite input is never valid data.

    `gpu`: the runner's GPU, for runners that take arrays already there (`__cuda_array_interface__`
    or DLPack); they come back as `GpuArray`s, checked for dtype, shape, contiguity and device.
    Their values are not checked for NaN/Inf: that would read them back to the host.
    `staged`: the runner copies host arrays into its own buffers and checks them for NaN/Inf while
    it copies (raising `nonfinite_error`), so host arrays come back as given, in any layout.
    `memo`: a dict the caller keeps across calls with the same `metadata` and `gpu` (a runner's),
    so a GPU array fed again (the same live object, its `__cuda_array_interface__` unchanged) is
    not described and located again: on the H200 that work was most of what `infer` added to a
    batch-1 graph replay. Such an array comes back with `source` None: only for runners that
    read a GPU array by its pointer.
    """
    if not isinstance(feed, dict):
        raise InputError(f"feed must be a dict of name -> numpy array, received {type(feed).__name__}")
    if feed.keys() != metadata.keys():
        missing, extra = sorted(set(metadata) - set(feed)), sorted(set(feed) - set(metadata))
        raise InputError(f"feed names {sorted(feed)} do not match the model's inputs {sorted(metadata)}"
                         + (f"; missing {missing}" if missing else "") + (f"; unexpected {extra}" if extra else ""))
    checked, sizes = {}, {}
    shared = len(metadata) > 1  # axes agree across inputs only where there are several
    for name, meta in metadata.items():
        value = feed[name]
        seen = memo.get(name) if memo else None
        if (seen is not None and seen[0]() is value
                and seen[1] == getattr(value, "__cuda_array_interface__", None)):  # fed before: see _checked_gpu_array
            if shared:
                _check_shared_axes(name, seen[2].shape, meta, sizes)
            checked[name] = seen[2]
        elif isinstance(value, np.ndarray):
            _check_dtype_and_shape(name, value.dtype, value.shape, meta, sizes)
            _check_values(name, value, meta)
            if not staged:
                if not allow_nonfinite and value.dtype.kind in "fc" and not np.isfinite(value).all():
                    raise nonfinite_error(name, value)
                value = np.ascontiguousarray(value)
            checked[name] = value
        elif gpu is not None and device_arrays.is_gpu_candidate(value):
            checked[name] = _checked_gpu_array(name, value, meta, gpu, sizes, memo, shared)
        else:
            kinds = "a numpy array or a GPU array" if gpu is not None else "a numpy array"
            raise InputError(f"Input tensor: {name} | Received a {type(value).__name__}, not {kinds} | {_expected(meta)}")
    return checked


def _checked_gpu_array(name: str, value, meta: TensorMeta, gpu: GpuTarget, sizes: dict, memo: dict | None,
                       shared: bool = True) -> GpuArray:
    """`_check_gpu_array`, or its earlier answer for the very same live object describing the same
    memory the same way (a live producer keeps its allocation, so where it lives cannot change)."""
    if memo is None:
        return _check_gpu_array(name, value, meta, gpu, sizes)
    try:
        cai = value.__cuda_array_interface__
    except AttributeError:  # DLPack only: a capsule per call, nothing to remember
        return _check_gpu_array(name, value, meta, gpu, sizes)
    seen = memo.get(name)
    if seen is not None and seen[0]() is value and seen[1] == cai:
        if shared:
            _check_shared_axes(name, seen[2].shape, meta, sizes)
        return seen[2]
    array = _check_gpu_array(name, value, meta, gpu, sizes)
    try:
        # The interface copied (a producer may reuse its dict); the array without its source, so
        # the memo never keeps the caller's object (and its GPU memory) alive.
        memo[name] = (weakref.ref(value), dict(cai), replace(array, source=None))
    except TypeError:  # no weak references to this type: nothing kept, nothing kept alive
        memo.pop(name, None)
    return array


def _check_gpu_array(name: str, value, meta: TensorMeta, gpu: GpuTarget, sizes: dict) -> GpuArray:
    what = type(value).__name__
    try:
        array = device_arrays.describe(value, gpu.stream)
    except device_arrays.InterfaceError as exc:
        raise InputError(f"Input tensor: {name} | Received a {what} whose {exc} | {_expected(meta)}") from None
    if array.dtype is None:  # DLPack said the host: refused before its layout is read
        raise InputError(f"Input tensor: {name} | Received a {what} on the host ({array.interface}) | Expected a numpy "
                         f"array or an array on GPU {gpu.device}")
    _check_dtype_and_shape(name, array.dtype, array.shape, meta, sizes, on_gpu=True)
    if not array.c_contiguous():
        raise InputError(f"Input tensor: {name} | Received non-contiguous strides {array.strides} (bytes) for shape "
                         f"{array.shape} | Expected a C-contiguous GPU array (call .contiguous() or cupy.ascontiguousarray)")
    memory, device = array.memory, array.device
    if memory is None:
        try:
            memory, device = gpu.locate(array.ptr)
        except Exception as exc:  # the driver's own words: a pointer it does not know
            raise InputError(f"Input tensor: {name} | Received pointer 0x{array.ptr:x} from {array.interface} that CUDA "
                             f"cannot locate ({exc}) | Expected device memory on GPU {gpu.device}") from None
    if memory == "host":
        raise InputError(f"Input tensor: {name} | Received host memory behind {array.interface} (pointer 0x{array.ptr:x}) "
                         f"| Expected device memory on GPU {gpu.device}")
    if device != gpu.device:
        raise InputError(f"Input tensor: {name} | Received a tensor on GPU {device} | Expected one on GPU {gpu.device}, "
                         f"the runner's device (move it there first, e.g. .to('cuda:{gpu.device}'))")
    return replace(array, memory=memory, device=device)


OUTPUT_PLACES = ("host", "device")


def check_pinned_batch(name: str, batch: int, meta: TensorMeta) -> None:
    if not meta.min_batch <= batch <= meta.max_batch:
        raise InputError(f"Input tensor: {name} | Received batch {batch} for pinned_inputs outside the supported "
                         f"range [{meta.min_batch}, {meta.max_batch}] | {_expected(meta)}")


class Runner:
    """Subclasses set `name` and implement `_activate`, `_deactivate`, `_input_metadata`,
    `_infer(feed, outputs)`. A runner on a GPU sets `self._gpu` (a `GpuTarget`) when it activates:
    it then takes arrays already on that GPU and can return its outputs there."""

    name = "runner"
    stages_inputs = False  # True: the runner copies host arrays itself and checks NaN/Inf as it copies
    remembers_gpu_feeds = False  # True: GPU arrays fed again skip the check (see check_feed's memo); reads .ptr only
    note = ""  # set on activation where the runner had to run differently from its default: the report says it

    def __init__(self, allow_nonfinite: bool = False) -> None:
        self.allow_nonfinite = allow_nonfinite
        self.is_active = False
        self._metadata: dict[str, TensorMeta] | None = None
        self._gpu: GpuTarget | None = None
        self._gpu_memo: dict = {}  # check_feed's memo of GPU arrays fed, for this activation

    def activate(self) -> "Runner":
        if not self.is_active:
            self._activate()
            self._metadata = self._input_metadata()
            self.is_active = True
        return self

    def deactivate(self) -> None:
        if self.is_active:
            self._deactivate()
            self.is_active = False
            self._gpu_memo = {}

    def __enter__(self) -> "Runner":
        return self.activate()

    def __exit__(self, *exc) -> None:
        self.deactivate()

    def input_metadata(self) -> dict[str, TensorMeta]:
        self._require_active()
        return self._metadata

    def infer(self, feed: dict, outputs: str = "host") -> dict:
        """Run the model on `feed` (name -> numpy array, or an array already on the runner's GPU:
        anything exposing `__cuda_array_interface__` or DLPack). The backend has finished when this
        returns.

        outputs="host": numpy arrays the caller owns. outputs="device" (GPU runners): arrays on the
        GPU exposing `__cuda_array_interface__`, owned by the runner and valid until its next
        `infer` call (copy them to keep them)."""
        self._require_active()
        if outputs != "host":
            self._check_outputs_place(outputs)
        return self._infer(check_feed(feed, self._metadata, self.allow_nonfinite, gpu=self._gpu,
                                      staged=self.stages_inputs,
                                      memo=self._gpu_memo if self.remembers_gpu_feeds else None), outputs)

    def _check_outputs_place(self, outputs) -> None:
        if outputs not in OUTPUT_PLACES:
            raise ValueError(f"{self.name}: outputs must be one of {list(OUTPUT_PLACES)}, received {outputs!r}")
        if self._gpu is None:
            raise ValueError(f"{self.name}: outputs='device' needs a runner on a GPU; this one runs on the host")

    def gpu_target(self) -> GpuTarget | None:
        """The GPU this runner takes device arrays on (None: host arrays only)."""
        self._require_active()
        return self._gpu

    def pinned_inputs(self, batch: int) -> dict[str, np.ndarray]:
        """Host arrays in the runner's own page-locked memory, shaped for `batch`: fill them and pass
        them as the feed, and the runner copies them to the GPU without staging them first. They are
        the runner's: the next call's pinned feed is the same memory."""
        raise NotImplementedError(f"{self.name} has no pinned input buffers; feed numpy arrays")

    def _require_active(self) -> None:
        if not self.is_active:
            raise RuntimeError(f"{self.name}: activate() the runner (or use it as a context manager) before use")

    def _activate(self) -> None:
        raise NotImplementedError

    def _deactivate(self) -> None:
        raise NotImplementedError

    def _input_metadata(self) -> dict[str, TensorMeta]:
        raise NotImplementedError

    def _infer(self, feed: dict, outputs: str = "host") -> dict:
        raise NotImplementedError
