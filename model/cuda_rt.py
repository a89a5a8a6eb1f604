"""The few CUDA runtime calls the TensorRT runner needs, through cuda-python, every status checked."""
from __future__ import annotations

import ctypes
import math
from functools import lru_cache

import numpy as np

from model.runners.base import BackendUnavailable


class CudaError(RuntimeError):
    pass


def _runtime():
    try:
        from cuda.bindings import runtime
    except ImportError as exc:
        raise BackendUnavailable(f"cuda-python is not installed ({exc}); pip install cuda-python") from exc
    return runtime


def check(result):
    """Unpack a cuda-python `(status, *values)` tuple, raising on any status but cudaSuccess."""
    rt = _runtime()
    status, *values = result if isinstance(result, tuple) else (result,)
    if status != rt.cudaError_t.cudaSuccess:
        name = rt.cudaGetErrorName(status)[1].decode()
        text = rt.cudaGetErrorString(status)[1].decode()
        raise CudaError(f"CUDA call failed: {name}: {text}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


@lru_cache(maxsize=1)
def gpu_unavailable_reason() -> str | None:
    """None when a CUDA device can be used from this process, else why not."""
    try:
        rt = _runtime()
        count = check(rt.cudaGetDeviceCount())
    except (BackendUnavailable, CudaError) as exc:
        return f"no usable CUDA device: {exc}"
    return None if count > 0 else "no CUDA device: cudaGetDeviceCount() returned 0"


def device_identity(device: int = 0) -> dict:
    """What an engine plan is only valid for: the GPU's name and compute capability."""
    props = check(_runtime().cudaGetDeviceProperties(device))
    name = props.name.decode(errors="replace").rstrip("\x00") if isinstance(props.name, bytes) else str(props.name)
    return {"gpu": name, "compute_capability": f"{props.major}.{props.minor}"}


def driver_and_runtime_versions() -> dict:
    rt = _runtime()
    return {"cuda_driver": check(rt.cudaDriverGetVersion()), "cuda_runtime": check(rt.cudaRuntimeGetVersion())}


class Stream:
    def __init__(self) -> None:
        rt = _runtime()
        self.handle = check(rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking))
        # Bound once: a batch-1 replay takes ~45 us, and each lookup here costs about one.
        self._sync, self._ok = rt.cudaStreamSynchronize, rt.cudaError_t.cudaSuccess

    def synchronize(self) -> None:
        result = self._sync(self.handle)  # cuda-python returns (status,)
        if result[0] != self._ok:
            check(result)

    def free(self) -> None:
        if self.handle is not None:
            check(_runtime().cudaStreamDestroy(self.handle))
            self.handle = None

    @property
    def ptr(self) -> int:
        return int(self.handle)


class DeviceBuffer:
    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes
        self.ptr = int(check(_runtime().cudaMalloc(nbytes)))

    def copy_from_host_async(self, host: np.ndarray, stream: Stream) -> None:
        rt = _runtime()
        if host.nbytes > self.nbytes:
            raise ValueError(f"{host.nbytes} bytes do not fit a device buffer of {self.nbytes}")
        check(rt.cudaMemcpyAsync(self.ptr, host.ctypes.data, host.nbytes,
                                 rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream.handle))

    def copy_to_host_async(self, host: np.ndarray, stream: Stream) -> None:
        rt = _runtime()
        if host.nbytes > self.nbytes:
            raise ValueError(f"{host.nbytes} bytes do not fit a device buffer of {self.nbytes}")
        check(rt.cudaMemcpyAsync(host.ctypes.data, self.ptr, host.nbytes,
                                 rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream.handle))

    def free(self) -> None:
        if self.ptr:
            check(_runtime().cudaFree(self.ptr))
            self.ptr = 0


class PinnedBuffer:
    """Page-locked host memory seen as a flat numpy array, so async copies really are async."""

    def __init__(self, nbytes: int, dtype) -> None:
        self.nbytes = nbytes
        self.ptr = int(check(_runtime().cudaMallocHost(nbytes)))
        raw = (ctypes.c_byte * nbytes).from_address(self.ptr)
        self.array = np.frombuffer(raw, dtype=dtype)

    def view(self, shape: tuple) -> np.ndarray:
        # math.prod, not np.prod: this runs twice per inference and np.prod on a tuple cost ~6 us.
        return self.array[: math.prod(shape)].reshape(shape)

    def free(self) -> None:
        if self.ptr:
            self.array = None
            check(_runtime().cudaFreeHost(self.ptr))
            self.ptr = 0


class Event:
    """A CUDA event with timing, for GPU-side durations (what trtexec calls GPU compute time)."""

    def __init__(self) -> None:
        self.handle = check(_runtime().cudaEventCreate())

    def record(self, stream: Stream) -> None:
        check(_runtime().cudaEventRecord(self.handle, stream.handle))

    def ms_since(self, start: "Event") -> float:
        return float(check(_runtime().cudaEventElapsedTime(start.handle, self.handle)))

    def free(self) -> None:
        if self.handle is not None:
            check(_runtime().cudaEventDestroy(self.handle))
            self.handle = None


class Graph:
    """A CUDA graph captured from work enqueued on a stream, replayed with one launch."""

    def __init__(self, stream: Stream, enqueue) -> None:
        rt = _runtime()
        check(rt.cudaStreamBeginCapture(stream.handle, rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal))
        try:
            enqueue()
        finally:
            graph = check(rt.cudaStreamEndCapture(stream.handle))
        self._graph = graph
        self._exec = check(rt.cudaGraphInstantiate(graph, 0))
        self.stream = stream
        self._launch, self._ok = rt.cudaGraphLaunch, rt.cudaError_t.cudaSuccess

    def launch(self) -> None:
        result = self._launch(self._exec, self.stream.handle)
        if result[0] != self._ok:
            check(result)

    def free(self) -> None:
        rt = _runtime()
        if self._exec is not None:
            check(rt.cudaGraphExecDestroy(self._exec))
            check(rt.cudaGraphDestroy(self._graph))
            self._exec = self._graph = None
