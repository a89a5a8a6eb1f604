"""Feeds already on a GPU are checked like host arrays, with the same clear errors, on any machine:
the producers here are small fakes exposing `__cuda_array_interface__` or DLPack, and where a
pointer lives is answered by a fake lookup instead of cudaPointerGetAttributes."""
import numpy as np
import pytest

from model.backends.base import InputError, Runner, TensorMeta, check_feed
from model.backends.device_arrays import DeviceView, GpuArray, GpuTarget

META = {"input": TensorMeta(np.dtype(np.float32), (None, 3, 32, 32), ((1, 4096), None, None, None))}
EXPECTED = r"Expected float32 \(N, 3, 32, 32\) with N in \[1, 4096\]"
DEVICE_PTR = 0x7F00_0000_0000


def located(memory="device", device=0):
    return GpuTarget(device=0, locate=lambda ptr: (memory, device))


class FakeCai:
    """What CuPy, Numba or a cuda-python buffer expose: only the interface dict."""

    def __init__(self, shape=(4, 3, 32, 32), typestr="<f4", strides=None, version=3, ptr=DEVICE_PTR, **extra):
        self.__cuda_array_interface__ = {"shape": shape, "typestr": typestr, "data": (ptr, False),
                                         "version": version, "strides": strides, **extra}


class FakeTorchLike(FakeCai):
    """Like a torch CUDA tensor: the interface dict and a DLPack device saying where it is."""

    def __init__(self, device=(2, 0), **kw):
        super().__init__(**kw)
        self._device = device

    def __dlpack_device__(self):
        return self._device


class FakeDlpack:
    """DLPack only. The capsule comes from a numpy array (so its layout is real); the device is
    what `__dlpack_device__` claims, as a GPU producer's would be."""

    def __init__(self, array, device=(2, 0)):
        self.array, self._device = array, device

    def __dlpack_device__(self):
        return self._device

    def __dlpack__(self, stream=None):
        self.stream_asked = stream
        return self.array.__dlpack__()


def _check(value, gpu=None):
    return check_feed({"input": value}, META, gpu=gpu or located())


def test_a_good_cuda_array_interface_feed_is_described():
    out = _check(FakeCai())["input"]
    assert isinstance(out, GpuArray)
    assert (out.ptr, out.shape, out.dtype, out.memory, out.device, out.stream) == (
        DEVICE_PTR, (4, 3, 32, 32), np.float32, "device", 0, None)


BAD_CAI = {
    "float64": (FakeCai(typestr="<f8"), rf"Received dtype float64 \| {EXPECTED} \(convert on the GPU"),
    "float16": (FakeCai(typestr="<f2"), r"Received dtype float16 \| Expected float32"),
    "shape": (FakeCai(shape=(4, 1, 32, 32)), rf"Received incompatible shape \(4, 1, 32, 32\) \| {EXPECTED}"),
    "rank": (FakeCai(shape=(3, 32, 32)), r"Received incompatible shape \(3, 32, 32\)"),
    "batch": (FakeCai(shape=(4097, 3, 32, 32)), r"Received batch 4097 outside the supported range \[1, 4096\]"),
    "strided": (FakeCai(strides=(2 * 12288, 4096, 128, 4)),
                r"Received non-contiguous strides \(24576, 4096, 128, 4\) \(bytes\) for shape \(4, 3, 32, 32\) \| "
                r"Expected a C-contiguous GPU array"),
    "transposed": (FakeCai(strides=(12288, 4096, 4, 128)), r"non-contiguous strides \(12288, 4096, 4, 128\)"),
    "version1": (FakeCai(version=1), r"whose __cuda_array_interface__ version 1 is not supported \(expected 2 or 3\)"),
    "mask": (FakeCai(mask=object()), r"carries a mask"),
    "stream0": (FakeCai(stream=0), r"stream is 0, which the interface disallows"),
}


@pytest.mark.parametrize("case", BAD_CAI, ids=list(BAD_CAI))
def test_bad_gpu_feeds_name_the_tensor_what_was_received_and_expected(case):
    value, pattern = BAD_CAI[case]
    with pytest.raises(InputError, match=pattern) as info:
        _check(value)
    assert str(info.value).startswith("Input tensor: input | Received")


def test_contiguity_ignores_strides_of_length_one_axes():
    assert _check(FakeCai(shape=(1, 3, 32, 32), strides=(999, 4096, 128, 4)))["input"].c_contiguous()


def test_a_tensor_on_another_gpu_is_refused_by_name():
    with pytest.raises(InputError, match=r"Input tensor: input \| Received a tensor on GPU 1 \| Expected one on GPU 0, "
                                         r"the runner's device \(move it there first, e.g. .to\('cuda:0'\)\)"):
        _check(FakeCai(), located("device", 1))


def test_host_memory_behind_the_gpu_interface_is_refused_by_name():
    with pytest.raises(InputError, match=r"Input tensor: input \| Received host memory behind __cuda_array_interface__ v3 "
                                         r"\(pointer 0x7f0000000000\) \| Expected device memory on GPU 0"):
        _check(FakeCai(), located("host", -1))


def test_managed_memory_on_the_runners_gpu_is_taken():
    assert _check(FakeCai(), located("managed", 0))["input"].memory == "managed"


def test_a_pointer_cuda_cannot_locate_is_refused_with_the_drivers_words():
    def locate(ptr):
        raise RuntimeError("CUDA call failed: cudaErrorInvalidValue: invalid argument")

    with pytest.raises(InputError, match=r"Received pointer 0x7f0000000000 from __cuda_array_interface__ v3 that CUDA "
                                         r"cannot locate \(CUDA call failed: cudaErrorInvalidValue"):
        _check(FakeCai(), GpuTarget(0, locate))


def test_a_dlpack_device_is_trusted_without_a_pointer_lookup():
    def locate(ptr):
        raise AssertionError("the DLPack device should have answered")

    out = _check(FakeTorchLike(device=(2, 0)), GpuTarget(0, locate))["input"]
    assert (out.memory, out.device) == ("device", 0)
    with pytest.raises(InputError, match=r"Received a tensor on GPU 3"):
        _check(FakeTorchLike(device=(2, 3)), GpuTarget(0, locate))
    with pytest.raises(InputError, match=r"Received host memory behind"):
        _check(FakeTorchLike(device=(1, 0)), GpuTarget(0, locate))


def test_a_cuda_array_interface_v3_stream_is_kept_for_the_runner_to_wait_on():
    assert _check(FakeCai(stream=7))["input"].stream == 7
    assert _check(FakeCai(stream=None))["input"].stream is None
    assert _check(FakeCai(version=2))["input"].stream == 1  # v2 says nothing: the legacy default stream


def _images(n=4, dtype=np.float32):
    return np.arange(n * 3 * 32 * 32, dtype=dtype).reshape(n, 3, 32, 32)


def test_a_dlpack_feed_is_read_from_its_capsule():
    x = _images()
    producer = FakeDlpack(x)
    out = check_feed({"input": producer}, META, gpu=GpuTarget(0, located().locate, stream=1234))["input"]
    assert (out.ptr, out.shape, out.dtype, out.device) == (x.ctypes.data, x.shape, np.float32, 0)
    assert producer.stream_asked == 1234 and out.stream is None  # the producer ordered itself before our stream
    unasked = check_feed({"input": FakeDlpack(x)}, META, gpu=GpuTarget(0, located().locate))["input"]
    assert unasked.stream == 1  # no stream of ours: the legacy default stream, waited on by the runner


BAD_DLPACK = {
    "cpu": (lambda: FakeDlpack(_images(), device=(1, 0)),
            r"Received a FakeDlpack on the host \(DLPack \(CPU\)\) \| Expected a numpy array or an array on GPU 0"),
    "pinned_host": (lambda: FakeDlpack(_images(), device=(3, 0)), r"on the host \(DLPack \(CUDA pinned host\)\)"),
    "other_gpu": (lambda: FakeDlpack(_images(), device=(2, 1)), r"Received a tensor on GPU 1 \| Expected one on GPU 0"),
    "float64": (lambda: FakeDlpack(_images(dtype=np.float64)), r"Received dtype float64 \| Expected float32"),
    "int32": (lambda: FakeDlpack(_images(dtype=np.int32)), r"Received dtype int32"),
    "transposed": (lambda: FakeDlpack(_images().transpose(0, 1, 3, 2)), r"non-contiguous strides \(12288, 4096, 4, 128\)"),
    "shape": (lambda: FakeDlpack(np.zeros((2, 3, 16, 16), np.float32)), r"Received incompatible shape \(2, 3, 16, 16\)"),
}


@pytest.mark.parametrize("case", BAD_DLPACK, ids=list(BAD_DLPACK))
def test_bad_dlpack_feeds_name_the_tensor(case):
    make, pattern = BAD_DLPACK[case]
    with pytest.raises(InputError, match=pattern) as info:
        _check(make())
    assert str(info.value).startswith("Input tensor: input | Received")


def test_a_host_runner_refuses_gpu_arrays_as_before():
    with pytest.raises(InputError, match=rf"Input tensor: input \| Received a FakeCai, not a numpy array \| {EXPECTED}$"):
        check_feed({"input": FakeCai()}, META)
    with pytest.raises(InputError, match=r"Received a list, not a numpy array or a GPU array"):
        _check([1.0])


def test_staged_host_arrays_come_back_unchecked_and_in_their_own_layout():
    x = np.asfortranarray(np.full((2, 3, 32, 32), np.nan, np.float32))
    assert check_feed({"input": x}, META, staged=True)["input"] is x
    with pytest.raises(InputError, match=r"Received 6144 NaN/Inf values"):
        check_feed({"input": x}, META)


def test_device_view_exposes_the_interface_it_is_read_through():
    view = DeviceView(DEVICE_PTR, (4, 100), np.float32)
    assert view.__cuda_array_interface__ == {"shape": (4, 100), "typestr": "<f4", "data": (DEVICE_PTR, False),
                                             "version": 3, "strides": None, "stream": None}
    assert _check(FakeCai())["input"].nbytes == 4 * 3 * 32 * 32 * 4


class _HostRunner(Runner):
    name = "host-runner"

    def _activate(self):
        pass

    def _deactivate(self):
        pass

    def _input_metadata(self):
        return META

    def _infer(self, feed, outputs="host"):
        return {"output": feed["input"][:, 0, 0, :2]}


def test_outputs_option_is_checked_by_name():
    with _HostRunner() as runner:
        assert runner.infer({"input": _images()})["output"].shape == (4, 2)
        with pytest.raises(ValueError, match=r"host-runner: outputs must be one of \['host', 'device'\], received 'gpu'"):
            runner.infer({"input": _images()}, outputs="gpu")
        with pytest.raises(ValueError, match=r"outputs='device' needs a runner on a GPU; this one runs on the host"):
            runner.infer({"input": _images()}, outputs="device")
        with pytest.raises(NotImplementedError, match="host-runner has no pinned input buffers"):
            runner.pinned_inputs(4)
