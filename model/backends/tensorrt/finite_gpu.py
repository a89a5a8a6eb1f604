"""The NaN/Inf check of host inputs done on the GPU, right after their upload.

On the host the check cost more than the copy it guarded: on the H200's host a batch of 4096
(48 MiB) took 4.04 ms end to end from the runner's own pinned buffers, where nothing is copied and
only the check ran on the staging threads, against 2.13 ms for the PCIe copy plus the engine. On
the GPU the same check reads the uploaded bytes once at device bandwidth (tens of microseconds for
48 MiB) and is queued behind the upload, so the host only copies.

The kernels (nonfinite.ptx, hand-written PTX 6.0 for sm_50 and up, JIT-compiled by the driver
when loaded; checked with `ptxas -arch=sm_90`) test every value's exponent bits. A value found
non-finite makes its thread store 1 into the input's flag: a word of page-locked host memory the
device writes through its mapped address, so no memset and no copy back are queued, and a CUDA
graph holds only the kernel. Flags are cleared once read set, before the call raises.

`widen` (kernel widen16) serves the runner's half-precision uploads (`upload_half`): a float32
batch staged and uploaded as float16 is written back as float32 where the engine reads it, and
checked in the same pass; the flag then also means "a value outside float16's range", since an
overflow reads as Inf there (the runner runs such a call again from float32).
"""
from __future__ import annotations

import ctypes
import math
from pathlib import Path

import numpy as np

from model.backends.tensorrt import cuda as cuda_rt

PTX = Path(__file__).with_name("nonfinite.ptx")
# dtype -> (kernel, exponent mask): a value is NaN/Inf when all the bits of the mask are set.
KERNELS = {np.dtype(np.float32): ("nonfinite32", 0x7F800000), np.dtype(np.float16): ("nonfinite16", 0x7C00)}
THREADS = 256
WIDEN = "widen16"
MAX_BLOCKS = 1024  # 8 blocks of 256 per SM on a 132-SM H200: enough loads in flight to read at bandwidth


class OutOfHalf(Exception):
    """A half-precision upload flagged NaN/Inf: a NaN/Inf in the input, or a value beyond
    float16's range. The runner runs the call again from float32, which tells the two apart."""


def supports(dtype) -> bool:
    return np.dtype(dtype) in KERNELS


def grid(count: int) -> int:
    """Blocks for `count` values: one value per thread up to MAX_BLOCKS blocks, grid-stride beyond."""
    return max(1, min(MAX_BLOCKS, math.ceil(count / THREADS)))


def _driver():
    from cuda.bindings import driver
    return driver


def _check(result):
    driver = _driver()
    status, *values = result if isinstance(result, tuple) else (result,)
    if status != driver.CUresult.CUDA_SUCCESS:
        name = driver.cuGetErrorName(status)[1]
        raise cuda_rt.CudaError(f"CUDA driver call failed: {name.decode() if isinstance(name, bytes) else name}")
    return values[0] if len(values) == 1 else tuple(values) if values else None


class GpuFiniteCheck:
    """The kernels loaded into the current context, and one flag per checked input.

    `enqueue(name, ptr, count, dtype, stream)` queues the check of `count` values at device
    address `ptr`; after the stream's work is waited for, `flagged()` names the first input found
    holding a NaN/Inf (None: all finite) and clears the flags."""

    def __init__(self, names: list[str]) -> None:
        driver = _driver()
        self.names = list(names)
        self._image = ctypes.create_string_buffer(PTX.read_bytes())  # NUL-terminated, as the driver reads PTX
        self._module = _check(driver.cuModuleLoadData(ctypes.addressof(self._image)))
        try:
            self._functions = {dtype: _check(driver.cuModuleGetFunction(self._module, name.encode()))
                               for dtype, (name, _) in KERNELS.items()}
            self._widen = _check(driver.cuModuleGetFunction(self._module, WIDEN.encode()))
            self._flags = cuda_rt.PinnedBuffer(4 * max(1, len(self.names)), np.uint32)
            self._flags.array[:] = 0
            self._flag_device = int(cuda_rt.check(cuda_rt._runtime().cudaHostGetDevicePointer(self._flags.ptr, 0)))
        except BaseException:
            _check(driver.cuModuleUnload(self._module))
            raise
        self._slot = {n: i for i, n in enumerate(self.names)}
        self._streams: dict[int, object] = {}
        self._launch, self._ok = driver.cuLaunchKernel, driver.CUresult.CUDA_SUCCESS

    def _stream(self, stream) -> object:
        handle = self._streams.get(stream.ptr)
        if handle is None:
            handle = self._streams[stream.ptr] = _driver().CUstream(stream.ptr)
        return handle

    def enqueue(self, name: str, ptr: int, count: int, dtype, stream) -> None:
        if count <= 0:
            return
        _, mask = KERNELS[np.dtype(dtype)]
        self._run(self._functions[np.dtype(dtype)], count, [ptr, count, mask, self._flag_device + 4 * self._slot[name]],
                  stream)

    def _run(self, function, count: int, args: list[int], stream) -> None:
        # Each parameter read from its own 8-byte slot (a u32 from the low half: little endian); the
        # driver copies them at launch (and capture), so they need not outlive this call.
        values = np.array(args, dtype=np.uint64)
        params = np.array([values.ctypes.data + 8 * i for i in range(len(args))], dtype=np.uint64)
        result = self._launch(function, grid(count), 1, 1, THREADS, 1, 1, 0, self._stream(stream), params.ctypes.data, 0)
        if result[0] != self._ok:
            _check(result)

    def widen(self, name: str, src: int, dst: int, count: int, stream) -> None:
        """Queue the float16 -> float32 copy of `count` values from `src` to `dst` (device
        addresses), flagging `name` if one is NaN/Inf (or was out of float16's range)."""
        if count <= 0:
            return
        self._run(self._widen, count, [src, dst, count, self._flag_device + 4 * self._slot[name]], stream)

    def flagged(self) -> str | None:
        """The first input flagged since the last clear (call once its checks have finished)."""
        flags = self._flags.array
        if not flags.any():
            return None
        first = self.names[int(np.flatnonzero(flags[: len(self.names)])[0])]
        flags[:] = 0
        return first

    def clear(self) -> None:
        self._flags.array[:] = 0

    def free(self) -> None:
        if self._module is not None:
            self._flags.free()
            _check(_driver().cuModuleUnload(self._module))
            self._module = None
