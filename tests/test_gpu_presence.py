"""Why no GPU can be used, said so that it sends the user the right way: a machine without an
NVIDIA GPU or driver is told so, not to upgrade a driver it does not have; a driver older than the
CUDA runtime is told to upgrade (model/backends/tensorrt/cuda.py, read by model/capabilities.py)."""
import enum
import glob

import pytest

from model.backends.tensorrt import cuda as cuda_rt


@pytest.fixture
def fresh_reason():
    cuda_rt.gpu_unavailable_reason.cache_clear()
    yield cuda_rt.gpu_unavailable_reason
    cuda_rt.gpu_unavailable_reason.cache_clear()


def test_a_machine_without_an_nvidia_driver_is_told_so_not_to_upgrade_it(fresh_reason):
    """On this machine's own CUDA runtime: where no driver is loaded, cudaGetDeviceCount says
    cudaErrorInsufficientDriver ("CUDA driver version is insufficient"), which must not reach the user."""
    pytest.importorskip("cuda.bindings")
    from cuda.bindings import runtime as rt

    reason = fresh_reason()
    if reason is None:
        pytest.skip("a GPU is usable here")
    status, driver = rt.cudaDriverGetVersion()
    if status == rt.cudaError_t.cudaSuccess and driver > 0 and glob.glob("/dev/nvidia[0-9]*"):
        pytest.skip(f"an NVIDIA driver (CUDA {driver}) and its devices are here: {reason}")
    assert reason.startswith("no NVIDIA GPU or driver found: "), reason
    assert "insufficient" not in reason.lower() and "upgrade" not in reason.lower(), reason


@pytest.mark.parametrize("status, count, driver, nodes, expected", [
    ("cudaErrorInsufficientDriver", 0, 0, [], "no NVIDIA GPU or driver found: no NVIDIA driver is loaded "
     "(cudaDriverGetVersion() returned 0; device nodes: no /dev/nvidia*)"),
    ("cudaErrorNoDevice", 0, 12040, [], "no NVIDIA GPU or driver found: the NVIDIA driver (CUDA 12.4) sees no GPU "
     "(device nodes: no /dev/nvidia*; cudaGetDeviceCount() said cudaErrorNoDevice, 0 devices)"),
    ("cudaSuccess", 0, 13000, ["/dev/nvidia0"], "no NVIDIA GPU or driver found: the NVIDIA driver (CUDA 13.0) sees no "
     "GPU (device nodes: /dev/nvidia0; cudaGetDeviceCount() said cudaSuccess, 0 devices)"),
    ("cudaErrorInsufficientDriver", 0, 11040, ["/dev/nvidia0"], "the NVIDIA driver supports CUDA up to 11.4, older "
     "than the CUDA runtime 13.0 this Python loads: upgrade the driver, or install a cuda-python built for CUDA 11.4"),
    ("cudaSuccess", 2, 13000, ["/dev/nvidia0", "/dev/nvidia1"], None),
    ("cudaErrorInitializationError", 0, 13000, ["/dev/nvidia0"], None),  # not ours to name: the caller's generic text
], ids=["no-driver", "no-device", "count-0", "old-driver", "usable", "other-error"])
def test_each_answer_of_the_runtime_is_explained(status, count, driver, nodes, expected):
    assert cuda_rt.explain_device_count(status, count, driver, 13000, nodes) == expected


class _Err(enum.Enum):
    cudaSuccess = 0
    cudaErrorInsufficientDriver = 35
    cudaErrorInitializationError = 3


class _FakeRuntime:
    """cuda-python's runtime, answering as a machine with the given driver would."""
    cudaError_t = _Err

    def __init__(self, status: _Err, driver: int) -> None:
        self.status, self.driver = status, driver

    def cudaGetDeviceCount(self):
        return self.status, 0

    def cudaDriverGetVersion(self):
        return _Err.cudaSuccess, self.driver

    def cudaRuntimeGetVersion(self):
        return _Err.cudaSuccess, 13000

    def cudaGetErrorName(self, status):
        return _Err.cudaSuccess, status.name.encode()

    def cudaGetErrorString(self, status):
        return _Err.cudaSuccess, b"what the runtime says"


@pytest.mark.parametrize("status, driver, expected", [
    (_Err.cudaErrorInsufficientDriver, 0, "no NVIDIA GPU or driver found: no NVIDIA driver is loaded"),
    (_Err.cudaErrorInsufficientDriver, 12020, "the NVIDIA driver supports CUDA up to 12.2, older than the CUDA runtime "
     "13.0 this Python loads: upgrade the driver"),
    (_Err.cudaErrorInitializationError, 13000, "no usable CUDA device: CUDA call failed: cudaErrorInitializationError: "
     "what the runtime says"),
])
def test_the_reason_reads_the_runtime_and_the_driver(fresh_reason, monkeypatch, status, driver, expected):
    monkeypatch.setattr(cuda_rt, "_runtime", lambda: _FakeRuntime(status, driver))
    assert fresh_reason().startswith(expected)
