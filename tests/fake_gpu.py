"""A fake GPU for the TensorRT runner's host-path tests: device memory, streams, events, the
NaN/Inf kernels and a TensorRT context, executed at once in program order. It moves the data,
runs a stand-in model (output row = first 100 input values x 2 + 1) and fails any device read not
ordered after the writes it reads: the engine may only read rows uploaded on its own stream or on
one it waited for through an event. What it cannot show: real CUDA/TensorRT behaviour
(tests/test_tensorrt.py on a GPU)."""
from __future__ import annotations

import contextlib
import math
import threading
from unittest import mock

import numpy as np

from model.backends.base import TensorMeta
from model.backends.device_arrays import GpuTarget
from model.backends.tensorrt import cuda as cuda_rt
from model.backends.tensorrt import finite_gpu
from model.backends.tensorrt.runner import TrtRunner
from model.backends.tensorrt.staging import ADDRESS_ALIGN, row_alignment
from model.zoo.simplecnn import INPUT_NAME, OUTPUT_NAME

MAX_BATCH, CLASSES, IMAGE = 4096, 100, (3, 32, 32)


def stand_in_model(x: np.ndarray) -> np.ndarray:
    """Row-separable and exact, so a mis-assembled batch shows in the result."""
    return x.reshape(len(x), -1)[:, :CLASSES] * 2 + 1


class FakeGpu:
    """Device memory, streams, events and a TensorRT context, executed at once in program order.
    Every device write is recorded with (stream, sequence number) and every device read is checked
    to be ordered after the writes it reads."""

    def __init__(self) -> None:
        self.memory: dict[int, np.ndarray] = {}  # base address -> bytes
        self.lock = threading.Lock()  # safe to call from any thread
        self._next = 0x7F0000000000
        self.writes: list[tuple[int, int, "FakeStream", int]] = []
        self.calls = {"h2d": 0, "d2h": 0, "d2d": 0, "execute": 0, "set_input_shape": 0, "set_tensor_address": 0,
                      "event_record": 0, "stream_wait": 0, "finite_kernel": 0,
                      "widen_kernel": 0, "h2d_bytes": 0}
        self.host_seen: dict[int, int] = {}  # stream id -> sequence the host has waited for

    def alloc(self, nbytes: int) -> int:
        with self.lock:
            base = self._next
            self.memory[base] = np.zeros(nbytes, np.uint8)
            self._next += (nbytes + 0xFFFF) & ~0xFFFF
        return base

    def bytes_at(self, ptr: int, nbytes: int) -> np.ndarray:
        for base, block in self.memory.items():
            if base <= ptr and ptr + nbytes <= base + block.size:
                return block[ptr - base: ptr - base + nbytes]
        raise AssertionError(f"fake GPU: {nbytes} bytes at 0x{ptr:x} are not inside one allocation")

    def locate(self, ptr: int) -> tuple[str, int]:
        return ("device", 0) if any(b <= ptr < b + m.size for b, m in self.memory.items()) else ("host", -1)

    def write(self, ptr: int, nbytes: int, stream: "FakeStream") -> None:
        self.writes = [w for w in self.writes if not (ptr <= w[0] and w[0] + w[1] <= ptr + nbytes)]  # covered
        self.writes.append((ptr, nbytes, stream, stream.sequence))

    def check_read(self, ptr: int, nbytes: int, stream: "FakeStream", what: str) -> None:
        for start, size, writer, sequence in self.writes:
            if start < ptr + nbytes and ptr < start + size and writer is not stream:
                if stream.seen.get(id(writer), -1) < sequence and self.host_seen.get(id(writer), -1) < sequence:
                    raise AssertionError(f"fake GPU: {what} on {stream.name} reads bytes written on {writer.name} "
                                         f"(op {sequence}) without waiting for them")


class FakeStream:
    def __init__(self, gpu: FakeGpu, name: str) -> None:
        self.gpu, self.name, self.sequence, self.seen = gpu, name, 0, {}
        self.ptr = self.handle = gpu.alloc(1)

    def op(self) -> None:
        self.sequence += 1

    def synchronize(self) -> None:
        self.gpu.host_seen[id(self)] = self.sequence

    def wait(self, event: "FakeEvent") -> None:
        """Later work here follows what the event captured: its stream's work up to the record, and
        (transitively) whatever that stream had waited for by then."""
        self.gpu.calls["stream_wait"] += 1
        if event.stream is not None:
            for key, sequence in {**event.seen, id(event.stream): event.sequence}.items():
                self.seen[key] = max(self.seen.get(key, -1), sequence)

    def free(self) -> None:
        pass


class FakeEvent:
    def __init__(self, gpu: FakeGpu) -> None:
        self.gpu, self.stream, self.sequence, self.seen = gpu, None, -1, {}

    def record(self, stream) -> None:
        with self.gpu.lock:
            self.gpu.calls["event_record"] += 1
            self.stream, self.sequence = (stream, stream.sequence) if isinstance(stream, FakeStream) else (None, -1)
            self.seen = dict(stream.seen) if isinstance(stream, FakeStream) else {}

    def synchronize(self) -> None:
        if self.stream is not None:
            seen = self.gpu.host_seen
            seen[id(self.stream)] = max(seen.get(id(self.stream), -1), self.sequence)

    def free(self) -> None:
        pass


class FakeDeviceBuffer:
    def __init__(self, gpu: FakeGpu, nbytes: int) -> None:
        self.gpu, self.nbytes, self.ptr = gpu, nbytes, gpu.alloc(nbytes)

    def copy_from_host_async(self, host: np.ndarray, stream: FakeStream, offset: int = 0) -> None:
        assert host.flags.c_contiguous and offset + host.nbytes <= self.nbytes
        with self.gpu.lock:
            self.gpu.calls["h2d"] += 1
            self.gpu.calls["h2d_bytes"] += host.nbytes
            stream.op()
            self.gpu.bytes_at(self.ptr + offset, host.nbytes)[:] = host.reshape(-1).view(np.uint8)
            self.gpu.write(self.ptr + offset, host.nbytes, stream)

    def copy_from_device_async(self, ptr: int, nbytes: int, stream: FakeStream) -> None:
        assert nbytes <= self.nbytes
        self.gpu.calls["d2d"] += 1
        stream.op()
        self.gpu.check_read(ptr, nbytes, stream, "a copy on the device")
        self.gpu.bytes_at(self.ptr, nbytes)[:] = self.gpu.bytes_at(ptr, nbytes)
        self.gpu.write(self.ptr, nbytes, stream)

    def copy_to_host_async(self, host: np.ndarray, stream: FakeStream, offset: int = 0) -> None:
        assert host.flags.c_contiguous and offset + host.nbytes <= self.nbytes
        self.gpu.calls["d2h"] += 1
        stream.op()
        self.gpu.check_read(self.ptr + offset, host.nbytes, stream, "a copy to the host")
        host.reshape(-1).view(np.uint8)[:] = self.gpu.bytes_at(self.ptr + offset, host.nbytes)

    def free(self) -> None:
        pass


class FakePinned:
    """A pinned buffer's interface over plain memory."""

    def __init__(self, count: int, dtype=np.float32) -> None:
        self.array = np.zeros(count, dtype)
        self.ptr = self.array.ctypes.data

    def view(self, shape: tuple) -> np.ndarray:
        return self.array[: math.prod(shape)].reshape(shape)

    def free(self) -> None:
        pass


class FakeFiniteCheck:
    """model/backends/tensorrt/finite_gpu.GpuFiniteCheck on the fake GPU: each queued check reads
    its values in stream order (one not ordered after the upload it reads fails, as an engine read
    does) and flags its input when one is NaN/Inf."""

    def __init__(self, gpu: FakeGpu, names: list[str]) -> None:
        self.gpu, self.names, self.flags = gpu, list(names), set()

    def enqueue(self, name: str, ptr: int, count: int, dtype, stream: FakeStream) -> None:
        with self.gpu.lock:
            self.gpu.calls["finite_kernel"] += 1
            stream.op()
            if count > 0:
                nbytes = count * np.dtype(dtype).itemsize
                self.gpu.check_read(ptr, nbytes, stream, "the NaN/Inf check")
                if not np.isfinite(self.gpu.bytes_at(ptr, nbytes).view(dtype)).all():
                    self.flags.add(name)

    def widen(self, name: str, src: int, dst: int, count: int, stream: FakeStream) -> None:
        """finite_gpu.GpuFiniteCheck.widen: float16 at `src` to float32 at `dst`, in stream order."""
        with self.gpu.lock:
            self.gpu.calls["widen_kernel"] += 1
            stream.op()
            if count > 0:
                self.gpu.check_read(src, 2 * count, stream, "the widening")
                half = self.gpu.bytes_at(src, 2 * count).view(np.float16)
                self.gpu.bytes_at(dst, 4 * count).view(np.float32)[:] = half
                self.gpu.write(dst, 4 * count, stream)
                if not np.isfinite(half).all():
                    self.flags.add(name)

    def flagged(self) -> str | None:
        first = next((n for n in self.names if n in self.flags), None)
        self.flags.clear()
        return first

    def clear(self) -> None:
        self.flags.clear()

    def free(self) -> None:
        pass


class FakeContext:
    """TensorRT's execution context for a one-input, one-output model running `stand_in_model`."""

    def __init__(self, gpu: FakeGpu, streams: dict[int, FakeStream]) -> None:
        self.gpu, self.streams, self.shape, self.addresses = gpu, streams, None, {}

    def set_input_shape(self, name: str, shape) -> bool:
        self.gpu.calls["set_input_shape"] += 1
        self.shape = tuple(shape)
        return 1 <= self.shape[0] <= MAX_BATCH

    def get_tensor_shape(self, name: str) -> tuple:
        return self.shape if name == INPUT_NAME else (self.shape[0], CLASSES)

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        self.gpu.calls["set_tensor_address"] += 1
        if ptr % ADDRESS_ALIGN:  # as TensorRT: addresses aligned to 256 bytes
            return False
        self.addresses[name] = ptr
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        with self.gpu.lock:
            return self._execute(stream_handle)

    def _execute(self, stream_handle: int) -> bool:
        self.gpu.calls["execute"] += 1
        stream = self.streams[stream_handle]
        stream.op()
        nbytes_in, nbytes_out = math.prod(self.shape) * 4, self.shape[0] * CLASSES * 4
        self.gpu.check_read(self.addresses[INPUT_NAME], nbytes_in, stream, "the engine")
        x = self.gpu.bytes_at(self.addresses[INPUT_NAME], nbytes_in).view(np.float32).reshape(self.shape)
        out = self.gpu.bytes_at(self.addresses[OUTPUT_NAME], nbytes_out).view(np.float32)
        out[:] = stand_in_model(x).reshape(-1)
        self.gpu.write(self.addresses[OUTPUT_NAME], nbytes_out, stream)
        return True


class FakeGraph:
    """A captured graph replays what was enqueued: here, by enqueuing it again."""

    def __init__(self, stream: FakeStream, enqueue) -> None:
        self.enqueue = enqueue

    def launch(self) -> None:
        self.enqueue()

    def free(self) -> None:
        pass


@contextlib.contextmanager
def fake_graphs():
    """The runner captures graphs through cuda_rt.Graph: a fake one for as long as this lasts."""
    with mock.patch.object(cuda_rt, "Graph", FakeGraph):
        yield


class KernelsMissing:
    """finite_gpu.GpuFiniteCheck where the driver cannot JIT the kernels' PTX."""

    def __init__(self, names) -> None:
        raise OSError("no driver to JIT the PTX (forced by a test)")


def fake_runner(gpu: FakeGpu, kernels: bool = True, **options) -> TrtRunner:
    """A TrtRunner over one dynamic engine (batch 1..4096) with the fake GPU in place of CUDA.
    Half-precision uploads only when asked (`upload_half=True`): the tests compare float32 answers.
    `kernels=False`: the GPU kernels fail to load, as where a driver cannot JIT them (the runner
    then checks on the host and uploads float32)."""
    runner = TrtRunner(b"", label="fp16", **{"upload_half": False, **options})
    runner.inputs, runner.outputs = [INPUT_NAME], [OUTPUT_NAME]
    runner.dtypes = {INPUT_NAME: np.dtype(np.float32), OUTPUT_NAME: np.dtype(np.float32)}
    full = (MAX_BATCH, *IMAGE)
    runner.profiles = [{INPUT_NAME: ((1, *IMAGE), full, full)}]
    runner.shape_range = {INPUT_NAME: ((1, *IMAGE), full)}
    runner.profile_opts, runner._active_profile, runner._batch_major = [MAX_BATCH], 0, True
    runner._row_align = row_alignment([math.prod(IMAGE) * 4, CLASSES * 4])
    runner.host = {INPUT_NAME: FakePinned(math.prod(full)), OUTPUT_NAME: FakePinned(MAX_BATCH * CLASSES)}
    runner.device = {INPUT_NAME: FakeDeviceBuffer(gpu, math.prod(full) * 4), OUTPUT_NAME: FakeDeviceBuffer(gpu, MAX_BATCH * CLASSES * 4)}
    runner.stream, runner.copy_stream = FakeStream(gpu, "engine stream"), FakeStream(gpu, "copy stream")
    runner.check_stream = FakeStream(gpu, "check stream")
    runner.context = FakeContext(gpu, {runner.stream.ptr: runner.stream, runner.copy_stream.ptr: runner.copy_stream})
    runner._make_event = lambda: FakeEvent(gpu)
    runner._producer_event, runner._fork, runner._join = runner._make_event(), runner._make_event(), runner._make_event()
    runner._gpu = GpuTarget(0, gpu.locate, runner.stream.ptr)
    runner._metadata = {INPUT_NAME: TensorMeta(np.dtype(np.float32), (None, *IMAGE), ((1, MAX_BATCH), None, None, None))}
    runner.is_active = True
    runner._set_addresses()
    # The runner's own loading of the kernels and the half-precision buffers, on the fake GPU.
    check = (lambda names: FakeFiniteCheck(gpu, names)) if kernels else KernelsMissing
    with mock.patch.object(finite_gpu, "GpuFiniteCheck", check), \
            mock.patch.object(cuda_rt, "PinnedBuffer", lambda nbytes, dtype: FakePinned(nbytes // np.dtype(dtype).itemsize, dtype)), \
            mock.patch.object(cuda_rt, "DeviceBuffer", lambda nbytes: FakeDeviceBuffer(gpu, nbytes)):
        runner._load_finite_check()
    return runner


class FakeGpuArray:
    """An array in the fake GPU's memory, exposed as a producer would (`__cuda_array_interface__`
    v3, built afresh on each read as PyTorch and CuPy do)."""

    def __init__(self, gpu: FakeGpu, host: np.ndarray) -> None:
        self.shape, self.typestr = host.shape, host.dtype.str
        self.ptr = gpu.alloc(host.nbytes)
        gpu.bytes_at(self.ptr, host.nbytes)[:] = host.reshape(-1).view(np.uint8)

    @property
    def __cuda_array_interface__(self) -> dict:
        return {"shape": self.shape, "typestr": self.typestr, "data": (self.ptr, False), "version": 3,
                "strides": None, "stream": None}


ROW_BYTES = math.prod(IMAGE) * 4


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *IMAGE)).astype(np.float32)


def counted(gpu, fn):
    """fn's result and the fake GPU's calls it made, per kind."""
    before = dict(gpu.calls)
    out = fn()
    return out, {k: gpu.calls[k] - before[k] for k in gpu.calls}


def on_gpu(gpu, view) -> np.ndarray:
    """What a float32 device output (a view the runner returned) holds in the fake GPU's memory."""
    cai = view.__cuda_array_interface__
    return gpu.bytes_at(cai["data"][0], view.nbytes).view(np.float32).reshape(cai["shape"])


def same_refusal(plain, runner, feed: dict) -> str:
    """The InputError both runners raise for `feed`, asserted to be the same; its message."""
    import pytest

    from model.backends.base import InputError

    with pytest.raises(InputError) as expected:
        plain.infer(feed)
    with pytest.raises(InputError) as refused:
        runner.infer(feed)
    assert str(refused.value) == str(expected.value)
    return str(refused.value)
