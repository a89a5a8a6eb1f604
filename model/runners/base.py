"""The one runner interface every backend shares (after Polygraphy's BaseRunner).

A runner is activated once (it may hold device memory), then `infer(feed)` any number of times.
The base class validates every feed against `input_metadata()` before the backend sees it, so a
bad tensor fails the same way, with the same message, on every backend.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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


def check_feed(feed: dict, metadata: dict[str, TensorMeta], allow_nonfinite: bool = False) -> dict:
    """The feed made safe to hand to a backend: C-contiguous arrays of the right dtype and shape,
    every dynamic dim in its range and equal across the inputs that share its axis.

    NaN/Inf policy (float inputs): rejected unless `allow_nonfinite`, because backends disagree on
    how they propagate (through max-pool, softmax) and a non-finite input is never valid data.
    """
    if not isinstance(feed, dict):
        raise InputError(f"feed must be a dict of name -> numpy array, received {type(feed).__name__}")
    if feed.keys() != metadata.keys():
        missing, extra = sorted(set(metadata) - set(feed)), sorted(set(feed) - set(metadata))
        raise InputError(f"feed names {sorted(feed)} do not match the model's inputs {sorted(metadata)}"
                         + (f"; missing {missing}" if missing else "") + (f"; unexpected {extra}" if extra else ""))
    checked, sizes = {}, {}
    for name, meta in metadata.items():
        value = feed[name]
        if not isinstance(value, np.ndarray):
            raise InputError(f"Input tensor: {name} | Received a {type(value).__name__}, not a numpy array | {_expected(meta)}")
        if value.dtype != meta.dtype:
            raise InputError(f"Input tensor: {name} | Received dtype {_dtype_text(value.dtype)} | {_expected(meta)}"
                             f" (convert with .astype(np.{np.dtype(meta.dtype).name}))")
        if value.ndim != len(meta.shape) or any(d is not None and d != v for d, v in zip(meta.shape, value.shape)):
            raise InputError(f"Input tensor: {name} | Received incompatible shape {value.shape} | {_expected(meta)}")
        for i, r in enumerate(meta.ranges):
            if r is None:
                continue
            size, label = value.shape[i], _axis_label(meta, i)
            if not r[0] <= size <= r[1]:
                raise InputError(f"Input tensor: {name} | Received {label} {size} outside the supported range "
                                 f"[{r[0]}, {r[1]}] | {_expected(meta)}")
            seen = sizes.setdefault(label, (name, size))
            if seen[1] != size:
                raise InputError(f"Input tensor: {name} | Received {label} {size} | Expected {label} {seen[1]}, "
                                 f"as in input {seen[0]} (inputs sharing an axis must agree on its size)")
        if meta.values is not None and value.size:
            lo, hi = int(value.min()), int(value.max())
            if lo < meta.values[0] or hi > meta.values[1]:
                raise InputError(f"Input tensor: {name} | Received values in [{lo}, {hi}] | Expected values in "
                                 f"[{meta.values[0]}, {meta.values[1]}]")
        if not allow_nonfinite and value.dtype.kind in "fc" and not np.isfinite(value).all():
            bad = int(value.size - np.isfinite(value).sum())
            raise InputError(f"Input tensor: {name} | Received {bad} NaN/Inf values | Expected finite values "
                             "(pass allow_nonfinite=True to the runner to send them anyway)")
        checked[name] = np.ascontiguousarray(value)
    return checked


class Runner:
    """Subclasses set `name` and implement `_activate`, `_deactivate`, `_input_metadata`, `_infer`."""

    name = "runner"

    def __init__(self, allow_nonfinite: bool = False) -> None:
        self.allow_nonfinite = allow_nonfinite
        self.is_active = False
        self._metadata: dict[str, TensorMeta] | None = None

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

    def __enter__(self) -> "Runner":
        return self.activate()

    def __exit__(self, *exc) -> None:
        self.deactivate()

    def input_metadata(self) -> dict[str, TensorMeta]:
        self._require_active()
        return self._metadata

    def infer(self, feed: dict) -> dict[str, np.ndarray]:
        """Outputs as host arrays the caller owns; the backend has finished when this returns."""
        self._require_active()
        return self._infer(check_feed(feed, self._metadata, self.allow_nonfinite))

    def _require_active(self) -> None:
        if not self.is_active:
            raise RuntimeError(f"{self.name}: activate() the runner (or use it as a context manager) before use")

    def _activate(self) -> None:
        raise NotImplementedError

    def _deactivate(self) -> None:
        raise NotImplementedError

    def _input_metadata(self) -> dict[str, TensorMeta]:
        raise NotImplementedError

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError
