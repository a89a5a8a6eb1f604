"""The few CUDA runtime calls the TensorRT runner needs, through cuda-python, every status checked."""
from __future__ import annotations

import ctypes
import glob
import math
import time
from functools import lru_cache

import numpy as np

from model.backends.base import BackendUnavailable


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


NO_GPU = "no NVIDIA GPU or driver found"


def _cuda_version(version: int) -> str:
    return f"{version // 1000}.{version % 1000 // 10}"


def explain_device_count(status: str, count: int, driver: int, runtime: int, nodes: list[str]) -> str | None:
    """Why cudaGetDeviceCount's answer (`status`, its error name, and `count`) leaves no usable
    device, given cudaDriverGetVersion (`driver`: 0 where no NVIDIA driver is loaded),
    cudaRuntimeGetVersion (`runtime`) and the /dev/nvidia* nodes found; None when one is usable.

    The runtime says cudaErrorInsufficientDriver both for an old driver and for none at all: only
    the driver's version tells "upgrade the driver" from "this machine has no NVIDIA GPU"."""
    if status == "cudaSuccess" and count > 0:
        return None
    seen = f"device nodes: {', '.join(nodes) if nodes else 'no /dev/nvidia*'}"
    if driver == 0:
        return f"{NO_GPU}: no NVIDIA driver is loaded (cudaDriverGetVersion() returned 0; {seen})"
    if status == "cudaSuccess" or status == "cudaErrorNoDevice":
        return f"{NO_GPU}: the NVIDIA driver (CUDA {_cuda_version(driver)}) sees no GPU ({seen}; cudaGetDeviceCount() " \
               f"said {status}, {count} devices)"
    if status == "cudaErrorInsufficientDriver":
        return f"the NVIDIA driver supports CUDA up to {_cuda_version(driver)}, older than the CUDA runtime " \
               f"{_cuda_version(runtime)} this Python loads: upgrade the driver, or install a cuda-python built for " \
               f"CUDA {_cuda_version(driver)}"
    return None


@lru_cache(maxsize=1)
def gpu_unavailable_reason() -> str | None:
    """None when a CUDA device can be used from this process, else why not."""
    try:
        rt = _runtime()
    except BackendUnavailable as exc:
        return f"no usable CUDA device: {exc}"
    status, count = rt.cudaGetDeviceCount()
    if status == rt.cudaError_t.cudaSuccess and count > 0:
        return None
    name = rt.cudaGetErrorName(status)[1].decode()
    driver_status, driver = rt.cudaDriverGetVersion()
    runtime_status, runtime = rt.cudaRuntimeGetVersion()
    if driver_status != rt.cudaError_t.cudaSuccess:
        driver = 0
    reason = explain_device_count(name, count or 0, driver, runtime if runtime_status == rt.cudaError_t.cudaSuccess else 0,
                                  sorted(glob.glob("/dev/nvidia[0-9]*")))
    return reason or f"no usable CUDA device: CUDA call failed: {name}: {rt.cudaGetErrorString(status)[1].decode()}"


def device_identity(device: int = 0) -> dict:
    """What an engine plan is only valid for: the GPU's name and compute capability."""
    props = check(_runtime().cudaGetDeviceProperties(device))
    name = props.name.decode(errors="replace").rstrip("\x00") if isinstance(props.name, bytes) else str(props.name)
    return {"gpu": name, "compute_capability": f"{props.major}.{props.minor}"}


def pci_address(device: int = 0) -> str:
    """The GPU's PCI address (domain:bus:device): one physical GPU, whatever CUDA_VISIBLE_DEVICES calls it."""
    props = check(_runtime().cudaGetDeviceProperties(device))
    return f"{props.pciDomainID:04x}:{props.pciBusID:02x}:{props.pciDeviceID:02x}"


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

    def wait(self, event: "Event") -> None:
        """Later work on this stream waits for what `event` captured (on any stream)."""
        check(_runtime().cudaStreamWaitEvent(self.handle, event.handle, 0))


def synchronize_stream(handle: int) -> None:
    """Wait for a stream this process did not make (a producer's, from `__cuda_array_interface__`)."""
    check(_runtime().cudaStreamSynchronize(handle))


def _cupy_runtime():
    try:
        from cupy.cuda import runtime
    except ImportError:
        return None
    return runtime


def locate_pointer(ptr: int) -> tuple[str, int]:
    """`pointer_location` through cuda-python, else through CuPy's runtime (the GPU machine's
    own Python has CuPy and CUDA PyTorch but maybe not cuda-python)."""
    try:
        return pointer_location(ptr)
    except BackendUnavailable:
        runtime = _cupy_runtime()
        if runtime is None:
            raise BackendUnavailable("locating a GPU pointer needs cuda-python or CuPy (pip install cuda-python)") from None
        attrs = runtime.pointerGetAttributes(ptr)
        return {2: "device", 3: "managed"}.get(int(attrs.type), "host"), int(attrs.device)


def synchronize_foreign_stream(handle: int) -> None:
    """Wait on the host for a producer's stream (1: the legacy default stream), through
    cuda-python or CuPy, for backends that run on streams of their own (ONNX Runtime)."""
    try:
        synchronize_stream(handle)
    except BackendUnavailable:
        runtime = _cupy_runtime()
        if runtime is None:
            raise BackendUnavailable("waiting for a producer's CUDA stream needs cuda-python or CuPy") from None
        runtime.streamSynchronize(handle)


def current_device() -> int:
    return int(check(_runtime().cudaGetDevice()))


def pointer_location(ptr: int) -> tuple[str, int]:
    """Where `ptr` lives: ("device" | "managed" | "host", device index), from cudaPointerGetAttributes.
    Plain malloc'd memory is "host" too (cudaMemoryTypeUnregistered)."""
    rt = _runtime()
    attrs = check(rt.cudaPointerGetAttributes(ptr))
    kinds = {rt.cudaMemoryType.cudaMemoryTypeDevice: "device", rt.cudaMemoryType.cudaMemoryTypeManaged: "managed"}
    return kinds.get(attrs.type, "host"), int(attrs.device)


class DeviceBuffer:
    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes
        self.ptr = int(check(_runtime().cudaMalloc(nbytes)))

    def _fits(self, nbytes: int, offset: int) -> None:
        if offset < 0 or offset + nbytes > self.nbytes:
            raise ValueError(f"{nbytes} bytes at offset {offset} do not fit a device buffer of {self.nbytes}")

    def copy_from_host_async(self, host: np.ndarray, stream: Stream, offset: int = 0) -> None:
        """`host` (C-contiguous) into this buffer from byte `offset` on."""
        self._fits(host.nbytes, offset)
        rt = _runtime()
        check(rt.cudaMemcpyAsync(self.ptr + offset, host.ctypes.data, host.nbytes,
                                 rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream.handle))

    def copy_from_device_async(self, ptr: int, nbytes: int, stream: Stream) -> None:
        """`nbytes` of device memory at `ptr` into the start of this buffer."""
        self._fits(nbytes, 0)
        rt = _runtime()
        check(rt.cudaMemcpyAsync(self.ptr, ptr, nbytes, rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice, stream.handle))

    def copy_to_host_async(self, host: np.ndarray, stream: Stream, offset: int = 0) -> None:
        """This buffer from byte `offset` on into `host` (C-contiguous)."""
        self._fits(host.nbytes, offset)
        rt = _runtime()
        check(rt.cudaMemcpyAsync(host.ctypes.data, self.ptr + offset, host.nbytes,
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
    """A CUDA event: with timing, for GPU-side durations (what trtexec calls GPU compute time);
    without (`timing=False`, cheaper to record), to order streams and wait for one point."""

    def __init__(self, timing: bool = True) -> None:
        rt = _runtime()
        self.handle = check(rt.cudaEventCreate() if timing else rt.cudaEventCreateWithFlags(rt.cudaEventDisableTiming))

    def record(self, stream) -> None:
        """On a `Stream`, or on a raw handle (a producer's stream: 1 is the legacy default stream)."""
        check(_runtime().cudaEventRecord(self.handle, stream.handle if isinstance(stream, Stream) else stream))

    def synchronize(self) -> None:
        check(_runtime().cudaEventSynchronize(self.handle))

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


class DeviceArray:
    """An array in device memory this process allocated, exposed as `__cuda_array_interface__` v3:
    a GPU input for TensorRT where neither CUDA PyTorch nor CuPy is installed (the kit's Python)."""

    def __init__(self, shape: tuple, dtype) -> None:
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self.buffer = DeviceBuffer(max(1, math.prod(self.shape) * self.dtype.itemsize))

    @classmethod
    def from_host(cls, host: np.ndarray) -> "DeviceArray":
        host = np.ascontiguousarray(host)
        array = cls(host.shape, host.dtype)
        rt = _runtime()
        check(rt.cudaMemcpy(array.buffer.ptr, host.ctypes.data, host.nbytes, rt.cudaMemcpyKind.cudaMemcpyHostToDevice))
        return array

    @property
    def __cuda_array_interface__(self) -> dict:
        # stream None: from_host's copy is synchronous, nothing is pending on the data.
        return {"shape": self.shape, "typestr": self.dtype.str, "data": (self.buffer.ptr, False),
                "version": 3, "strides": None, "stream": None}

    def free(self) -> None:
        self.buffer.free()


def to_host(array) -> np.ndarray:
    """A device array (anything exposing `__cuda_array_interface__`, C-contiguous) copied to numpy."""
    cai = array.__cuda_array_interface__
    host = np.empty(tuple(cai["shape"]), np.dtype(cai["typestr"]))
    rt = _runtime()
    if cai.get("stream"):
        synchronize_stream(cai["stream"])
    check(rt.cudaMemcpy(host.ctypes.data, cai["data"][0], host.nbytes, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost))
    return host


def copy_bandwidth_gbs(nbytes: int = 64 << 20, repeats: int = 5) -> dict:
    """Host-to-device bandwidth measured here, from pinned and from pageable memory (best of
    `repeats`, GB/s, wall time of the copy and its sync: a pageable copy is staged by the driver on
    the calling thread, which events on the stream would not see): the floor of an end-to-end call
    is its input over this plus the engine."""
    rt = _runtime()
    stream = Stream()
    device, pinned = DeviceBuffer(nbytes), PinnedBuffer(nbytes, np.uint8)
    pageable = np.ones(nbytes, np.uint8)  # written, so its pages exist before the copy
    out = {}
    try:
        for name, host in (("pinned", pinned.array), ("pageable", pageable)):
            best = math.inf
            for _ in range(repeats):
                start = time.perf_counter()
                check(rt.cudaMemcpyAsync(device.ptr, host.ctypes.data, nbytes,
                                         rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream.handle))
                stream.synchronize()
                best = min(best, time.perf_counter() - start)
            out[f"h2d_{name}_gbs"] = nbytes / best / 1e9
    finally:
        for thing in (device, pinned, stream):
            thing.free()
    out["bytes"] = nbytes
    return out
