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
    dtype: np.dtype
    shape: tuple  # None for a dynamic dimension
    min_batch: int
    max_batch: int


def _describe(shape: tuple) -> str:
    return "(" + ", ".join("N" if d is None else str(d) for d in shape) + ")"


def _dtype_text(dtype: np.dtype) -> str:
    # A byte-swapped float32 is still named "float32": say what differs, or the message contradicts itself.
    return dtype.name if dtype.isnative else f"{dtype.name} ({'big' if dtype.byteorder == '>' else 'little'}-endian, {dtype.str!r})"


def _expected(meta: TensorMeta) -> str:
    # Only built for an error: formatting it on every call cost more than the rest of the checks.
    return f"Expected {np.dtype(meta.dtype).name} {_describe(meta.shape)} with N in [{meta.min_batch}, {meta.max_batch}]"


def check_feed(feed: dict, metadata: dict[str, TensorMeta], allow_nonfinite: bool = False) -> dict:
    """The feed made safe to hand to a backend: C-contiguous arrays of the right dtype and shape.

    NaN/Inf policy: rejected unless `allow_nonfinite`, because backends disagree on how they
    propagate through max-pool and a non-finite image is never a valid CIFAR input.
    """
    if not isinstance(feed, dict):
        raise InputError(f"feed must be a dict of name -> numpy array, received {type(feed).__name__}")
    if feed.keys() != metadata.keys():
        missing, extra = sorted(set(metadata) - set(feed)), sorted(set(feed) - set(metadata))
        raise InputError(f"feed names {sorted(feed)} do not match the model's inputs {sorted(metadata)}"
                         + (f"; missing {missing}" if missing else "") + (f"; unexpected {extra}" if extra else ""))
    checked = {}
    for name, meta in metadata.items():
        value = feed[name]
        if not isinstance(value, np.ndarray):
            raise InputError(f"Input tensor: {name} | Received a {type(value).__name__}, not a numpy array | {_expected(meta)}")
        if value.dtype != meta.dtype:
            raise InputError(f"Input tensor: {name} | Received dtype {_dtype_text(value.dtype)} | {_expected(meta)}"
                             f" (convert with .astype(np.{np.dtype(meta.dtype).name}))")
        if value.ndim != len(meta.shape) or any(d is not None and d != v for d, v in zip(meta.shape, value.shape)):
            raise InputError(f"Input tensor: {name} | Received incompatible shape {value.shape} | {_expected(meta)}")
        batch = value.shape[0]
        if not meta.min_batch <= batch <= meta.max_batch:
            raise InputError(f"Input tensor: {name} | Received batch {batch} outside the supported range "
                             f"[{meta.min_batch}, {meta.max_batch}] | {_expected(meta)}")
        if not allow_nonfinite and not np.isfinite(value).all():
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
