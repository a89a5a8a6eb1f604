"""Arrays already on a GPU, read through `__cuda_array_interface__` (v2/v3) or DLPack.

Nothing here touches CUDA: a producer's interface is parsed into a `GpuArray` (pointer, dtype,
shape, strides, device, producer stream), and `GpuTarget.locate` (the runner's own pointer lookup,
`cudaPointerGetAttributes` on a GPU) answers where a bare pointer lives. So the whole check runs,
and is tested, on a machine without a GPU.

`DeviceView` is the other direction: a pointer the runner owns, exposed as
`__cuda_array_interface__` v3 for `infer(..., outputs="device")`.
"""
from __future__ import annotations

import ctypes
import math
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

# DLPack device types (dlpack.h): what `__dlpack_device__()` returns first.
KDL_CPU, KDL_CUDA, KDL_CUDA_HOST, KDL_CUDA_MANAGED = 1, 2, 3, 13
_DLPACK_DEVICE_NAMES = {KDL_CPU: "CPU", KDL_CUDA: "CUDA", KDL_CUDA_HOST: "CUDA pinned host", KDL_CUDA_MANAGED: "CUDA managed"}
_DLPACK_KINDS = {0: "i", 1: "u", 2: "f"}  # DLDataTypeCode: int, uint, float (others have no numpy dtype here)
_DLPACK_CODE_NAMES = {0: "int", 1: "uint", 2: "float", 3: "opaque", 4: "bfloat", 5: "complex", 6: "bool"}


@dataclass(frozen=True)
class GpuArray:
    """What a producer said about its array; `memory`/`device` are None until located."""
    ptr: int
    shape: tuple
    dtype: object  # np.dtype, or the DLPack type's name when numpy has none (bfloat16)
    strides: tuple | None  # in bytes; None means C-contiguous
    interface: str  # "__cuda_array_interface__ v3", "DLPack": named in errors
    source: object  # the caller's object: kept alive for the call, used as-is by PyTorch
    memory: str | None = None  # "device" | "managed" | "host"
    device: int | None = None
    stream: int | None = None  # the producer's stream the consumer must wait on (CAI v3)
    keepalive: object = None  # a DLPack capsule, whose deleter runs when it is collected

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * np.dtype(self.dtype).itemsize

    def c_contiguous(self) -> bool:
        if self.strides is None:
            return True
        expected = np.dtype(self.dtype).itemsize
        for dim, stride in zip(reversed(self.shape), reversed(self.strides)):
            if dim > 1 and stride != expected:  # a stride over a length-1 axis never matters
                return False
            expected *= dim
        return True


@dataclass(frozen=True)
class GpuTarget:
    """The GPU a runner reads its inputs on. `locate(ptr) -> (memory, device)` with memory one of
    "device", "managed", "host" (cudaPointerGetAttributes on a GPU, a fake in tests); `stream` is
    the handle the runner reads on, handed to `__dlpack__(stream=...)` so a DLPack producer orders
    its own work before it."""
    device: int
    locate: Callable[[int], tuple[str, int]]
    stream: int | None = None


class InterfaceError(ValueError):
    """A producer's interface that cannot be read; the caller adds the tensor's name."""


def is_gpu_candidate(value) -> bool:
    return hasattr(value, "__cuda_array_interface__") or hasattr(value, "__dlpack_device__")


def describe(value, stream: int | None = None) -> GpuArray:
    """The GPU array behind `value` (see `is_gpu_candidate`). `__cuda_array_interface__` is
    preferred: it needs no capsule. Its device comes from `__dlpack_device__` when the object has
    one too (PyTorch, CuPy); a bare interface is located by pointer later."""
    try:
        cai = value.__cuda_array_interface__
    except AttributeError:  # PyTorch raises it for a CPU tensor: DLPack then says where it lives
        cai = None
    if cai is not None:
        array = _from_cai(value, cai)
        if hasattr(value, "__dlpack_device__"):
            kind, index = value.__dlpack_device__()
            array = _located_by_dlpack(array, int(kind), int(index))
        return array
    return _from_dlpack(value, stream)


def _located_by_dlpack(array: GpuArray, kind: int, index: int) -> GpuArray:
    memory = {KDL_CUDA: "device", KDL_CUDA_MANAGED: "managed"}.get(kind, "host")
    return replace(array, memory=memory, device=index)


def _from_cai(value, cai) -> GpuArray:
    if not isinstance(cai, dict):
        raise InterfaceError(f"__cuda_array_interface__ is a {type(cai).__name__}, not a dict")
    version = cai.get("version")
    if not isinstance(version, int) or version < 2:
        raise InterfaceError(f"__cuda_array_interface__ version {version!r} is not supported (expected 2 or 3)")
    missing = [k for k in ("shape", "typestr", "data") if k not in cai]
    if missing:
        raise InterfaceError(f"__cuda_array_interface__ lacks {missing}")
    if cai.get("mask") is not None:
        raise InterfaceError("__cuda_array_interface__ carries a mask (masked arrays are not supported)")
    # v2 carries no stream: its producers (PyTorch's default stream among them) order their work
    # on the legacy default stream (1), which the runner then waits for on the device.
    stream = cai.get("stream") if version >= 3 else 1
    if stream == 0:  # the interface forbids it: it cannot say which default stream is meant
        raise InterfaceError("__cuda_array_interface__ stream is 0, which the interface disallows (use 1, 2 or a handle)")
    try:
        dtype = np.dtype(cai["typestr"])
    except TypeError as exc:
        raise InterfaceError(f"__cuda_array_interface__ typestr {cai['typestr']!r} is not a dtype: {exc}") from None
    strides = cai.get("strides")
    return GpuArray(ptr=int(cai["data"][0]), shape=tuple(int(d) for d in cai["shape"]), dtype=dtype,
                    strides=None if strides is None else tuple(int(s) for s in strides),
                    interface=f"__cuda_array_interface__ v{version}", source=value, stream=stream)


# -- DLPack (dlpack.h, the legacy unversioned "dltensor" capsule every producer still returns) ----------

class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", _DLDevice), ("ndim", ctypes.c_int32),
                ("dtype", _DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_pointer.restype = ctypes.c_void_p
_capsule_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]


def _from_dlpack(value, stream: int | None) -> GpuArray:
    kind, index = (int(v) for v in value.__dlpack_device__())
    if kind not in (KDL_CUDA, KDL_CUDA_MANAGED):
        # Refused before any capsule is made: only where it lives matters for the error.
        return GpuArray(ptr=0, shape=(), dtype=None, strides=None, interface=f"DLPack ({dlpack_device_name(kind)})", source=value,
                        memory="host", device=index if kind != KDL_CPU else None)
    # The consumer's stream: the producer orders its pending work before it (DLPack's protocol).
    # Without one, the legacy default stream (1), which the consumer then waits for itself.
    capsule = value.__dlpack__(stream=1 if stream is None else stream)
    tensor = _DLTensor.from_address(_capsule_pointer(capsule, b"dltensor"))
    if tensor.dtype.lanes != 1:
        raise InterfaceError(f"DLPack dtype has {tensor.dtype.lanes} lanes (vector types are not supported)")
    code, bits = tensor.dtype.code, tensor.dtype.bits
    dtype = (np.dtype(f"{_DLPACK_KINDS[code]}{bits // 8}") if code in _DLPACK_KINDS and bits % 8 == 0
             else f"{_DLPACK_CODE_NAMES.get(code, f'code{code}')}{bits}")
    shape = tuple(tensor.shape[i] for i in range(tensor.ndim))
    strides = None
    if tensor.strides and isinstance(dtype, np.dtype):  # DLPack strides count elements, not bytes
        strides = tuple(tensor.strides[i] * dtype.itemsize for i in range(tensor.ndim))
    return GpuArray(ptr=(tensor.data or 0) + tensor.byte_offset, shape=shape, dtype=dtype, strides=strides,
                    interface="DLPack", source=value, memory="device" if kind == KDL_CUDA else "managed",
                    device=index, stream=1 if stream is None else None, keepalive=capsule)


def dlpack_device_name(kind: int) -> str:
    return _DLPACK_DEVICE_NAMES.get(kind, f"device type {kind}")


class DeviceView:
    """A runner-owned device buffer seen as an array (`__cuda_array_interface__` v3), valid until the
    runner's next `infer` call overwrites it. `torch.as_tensor(view, device="cuda")` and
    `cupy.asarray(view)` take it without a copy."""

    def __init__(self, ptr: int, shape: tuple, dtype, owner=None) -> None:
        self.ptr, self.shape, self.dtype = int(ptr), tuple(shape), np.dtype(dtype)
        self._owner = owner  # what keeps the memory alive (an OrtValue, say)

    @property
    def __cuda_array_interface__(self) -> dict:
        # stream None: the runner synchronized before it handed the view out.
        return {"shape": self.shape, "typestr": self.dtype.str, "data": (self.ptr, False),
                "version": 3, "strides": None, "stream": None}

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    def __repr__(self) -> str:
        return f"DeviceView(ptr=0x{self.ptr:x}, shape={self.shape}, dtype={self.dtype.name})"
