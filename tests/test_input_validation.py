"""Bad feeds fail the same clear way on every backend; odd-but-valid memory layouts give the right answer."""
import numpy as np
import pytest

from model.compare import compare
from model.profile import INPUT_NAME, OUTPUT_NAME
from model.runners.base import InputError
from tests.backends import backend_params


@pytest.fixture(params=backend_params(include_reference=True))
def backend(request, runner_pool):
    name, precision = request.param
    return runner_pool(name), precision


def _images(n: int, dtype=np.float32) -> np.ndarray:
    return np.random.default_rng(n).standard_normal((n, 3, 32, 32)).astype(dtype)


# Each case: (feed maker given the profile, pattern its error must match given the profile).
BAD_FEEDS = {
    "float64": (lambda p: _images(4, np.float64), lambda p: r"Received dtype float64 \| Expected float32"),
    "int32": (lambda p: _images(4).astype(np.int32), lambda p: r"Received dtype int32"),
    "byteswapped": (lambda p: _images(4).astype(">f4" if np.little_endian else "<f4"),
                    lambda p: r"Received dtype float32 \((big|little)-endian, '[<>]f4'\) \| Expected float32"),
    "rank3": (lambda p: _images(1)[0], lambda p: r"Received incompatible shape \(3, 32, 32\)"),
    "rank5": (lambda p: _images(4)[None], lambda p: r"Received incompatible shape \(1, 4, 3, 32, 32\)"),
    "channels": (lambda p: np.zeros((4, 1, 32, 32), np.float32), lambda p: r"incompatible shape \(4, 1, 32, 32\)"),
    "height": (lambda p: np.zeros((4, 3, 31, 32), np.float32), lambda p: r"incompatible shape \(4, 3, 31, 32\)"),
    "width": (lambda p: np.zeros((4, 3, 32, 64), np.float32), lambda p: r"incompatible shape \(4, 3, 32, 64\)"),
    "batch0": (lambda p: np.zeros((0, 3, 32, 32), np.float32),
               lambda p: rf"Received batch 0 outside the supported range \[{p.min}, {p.max}\]"),
    "above_max": (lambda p: np.zeros((p.max + 1, 3, 32, 32), np.float32),
                  lambda p: rf"Received batch {p.max + 1} outside the supported range \[{p.min}, {p.max}\]"),
    "nan": (lambda p: np.where(np.arange(4 * 3072).reshape(4, 3, 32, 32) == 5, np.nan, 0).astype(np.float32),
            lambda p: r"Received 1 NaN/Inf values"),
    "inf": (lambda p: np.full((2, 3, 32, 32), np.inf, np.float32), lambda p: r"Received 6144 NaN/Inf values"),
    "list": (lambda p: _images(2).tolist(), lambda p: r"Received a list, not a numpy array"),
}


@pytest.mark.parametrize("case", BAD_FEEDS, ids=list(BAD_FEEDS))
def test_bad_input_names_tensor_received_and_expected(backend, profile, case):
    runner, _ = backend
    make, pattern = BAD_FEEDS[case]
    with pytest.raises(InputError, match=pattern(profile)) as info:
        runner.infer({INPUT_NAME: make(profile)})
    assert f"Input tensor: {INPUT_NAME}" in str(info.value) and ("Expected" in str(info.value))


def test_wrong_and_missing_names(backend):
    runner, _ = backend
    with pytest.raises(InputError, match=r"missing \['input'\]; unexpected \['images'\]"):
        runner.infer({"images": _images(1)})
    with pytest.raises(InputError, match="must be a dict"):
        runner.infer(_images(1))


@pytest.mark.parametrize("layout", ["fortran", "strided", "transposed_view"])
def test_non_contiguous_inputs_give_the_right_answer(backend, golden, layout):
    runner, precision = backend
    x, ref = golden[7]
    if layout == "fortran":
        fed = np.asfortranarray(x)
    elif layout == "strided":
        fed = np.repeat(x, 2, axis=0)[::2]
    else:
        fed = np.ascontiguousarray(x.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)
    assert not fed.flags.c_contiguous and np.array_equal(fed, x)
    assert compare(ref, runner.infer({INPUT_NAME: fed})[OUTPUT_NAME], precision)


def test_runner_does_not_keep_a_reference_to_its_outputs(backend, golden):
    runner, _ = backend
    x, _ = golden[7]
    first = runner.infer({INPUT_NAME: x})[OUTPUT_NAME]
    kept = first.copy()
    runner.infer({INPUT_NAME: golden[32][0]})
    assert np.array_equal(first, kept)


def test_nonfinite_inputs_pass_when_allowed(trained):
    from model.runners.torch_runner import TorchRunner

    with TorchRunner(trained.model, allow_nonfinite=True) as runner:
        out = runner.infer({INPUT_NAME: np.full((2, 3, 32, 32), np.nan, np.float32)})[OUTPUT_NAME]
    assert out.shape == (2, 100) and np.isnan(out).all()


def test_inactive_runner_says_how_to_activate(trained):
    from model.runners.torch_runner import TorchRunner

    with pytest.raises(RuntimeError, match="activate"):
        TorchRunner(trained.model).infer({INPUT_NAME: _images(1)})


def test_onnxruntime_silent_cpu_fallback_is_refused(onnx_path, monkeypatch):
    """onnxruntime-gpu without a usable GPU quietly runs on the CPU; the runner must not."""
    import onnxruntime as ort

    from model.runners.base import BackendUnavailable
    from model.runners.ort_runner import OrtRunner

    real = ort.InferenceSession

    class FellBack(real):
        def get_providers(self):
            return ["CPUExecutionProvider"]

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession",
                        lambda path, sess_options=None, providers=None: FellBack(path, sess_options, providers=["CPUExecutionProvider"]))
    with pytest.raises(BackendUnavailable, match=r"asked for CUDAExecutionProvider but the session runs on \['CPUExecutionProvider'\]"):
        OrtRunner(onnx_path, device="cuda").activate()
