"""Bad feeds fail the same clear way on every backend of every model; odd-but-valid memory layouts
give the right answer."""
import re

import numpy as np
import pytest

from model.backends.base import InputError
from model.compare import compare_outputs
from model.spec import BATCH

pytestmark = pytest.mark.backends(include_reference=True)


def _first(spec, kind: str):
    """The first input whose dtype is float (`f`) or integer (`i`), or None."""
    return next((t for t in spec.inputs if np.dtype(t.dtype).kind == kind), None)


def _probe(golden):
    """An odd batch where the profile holds one, else its smallest."""
    return golden[7] if 7 in golden else golden[min(golden)]


def _with(feed: dict, name: str, value) -> dict:
    return {**feed, name: value}


def _fixed_dim(t):
    return next((i for i, d in enumerate(t.shape) if isinstance(d, int)), None)


# Each case: (spec, profile, valid feed) -> (bad feed, regex its error must match), or a skip reason.
def _dtype(spec, p, feed):
    t = spec.inputs[0]
    # A dtype of the same kind but another width (an int32 input gets int64), never the declared one.
    wrong = next(d for d in ((np.float64, np.float16) if np.dtype(t.dtype).kind == "f" else (np.int32, np.int64))
                 if np.dtype(d) != np.dtype(t.dtype))
    return _with(feed, t.name, feed[t.name].astype(wrong)), rf"Input tensor: {t.name} \| Received dtype {np.dtype(wrong).name} \| Expected {t.dtype}"


def _byteswapped(spec, p, feed):
    t = spec.inputs[0]
    swapped = feed[t.name].astype(np.dtype(t.dtype).newbyteorder())
    return _with(feed, t.name, swapped), rf"Received dtype {t.dtype} \((big|little)-endian, '[<>]\w\d'\) \| Expected {t.dtype}"


def _rank_low(spec, p, feed):
    t = spec.inputs[0]
    return _with(feed, t.name, feed[t.name][0]), rf"Input tensor: {t.name} \| Received incompatible shape"


def _rank_high(spec, p, feed):
    t = spec.inputs[0]
    return _with(feed, t.name, feed[t.name][None]), rf"Input tensor: {t.name} \| Received incompatible shape"


def _fixed(spec, p, feed):
    t = next((t for t in spec.inputs if _fixed_dim(t) is not None), None)
    if t is None:
        return f"{spec.name}'s inputs have no fixed dim"
    i = _fixed_dim(t)
    shape = list(feed[t.name].shape)
    shape[i] += 1
    bad = np.zeros(shape, feed[t.name].dtype)
    return _with(feed, t.name, bad), rf"Received incompatible shape {re.escape(str(tuple(shape)))}"


def _batch(size_of):
    def case(spec, p, feed):
        n = size_of(p)
        bad = {t.name: np.zeros((n, *feed[t.name].shape[1:]), feed[t.name].dtype) for t in spec.inputs}
        return bad, rf"Received batch {n} outside the supported range \[{p.min}, {p.max}\]"
    return case


def _axis_above_max(spec, p, feed):
    if not spec.axes:
        return f"{spec.name} has no dynamic axis besides the batch"
    axis = spec.axes[0]
    bad = spec.sample(2, **{axis.name: axis.opt})
    t = next(t for t in spec.inputs if axis.name in t.shape)
    i = t.shape.index(axis.name)
    shape = list(bad[t.name].shape)
    shape[i] = axis.max + 1
    bad[t.name] = np.zeros(shape, bad[t.name].dtype)
    return bad, rf"Input tensor: {t.name} \| Received {axis.name} {axis.max + 1} outside the supported range \[{axis.min}, {axis.max}\]"


def _axes_disagree(spec, p, feed):
    shared = [t for t in spec.inputs if any(d != BATCH for d in t.dynamic_axes.values())]
    if len(shared) < 2:
        return f"{spec.name} has no two inputs sharing a dynamic axis"
    axis = next(d for d in shared[0].dynamic_axes.values() if d != BATCH)
    size = spec.axis(axis).min + 1
    bad = spec.sample(2, **{axis: size + 1})
    t = shared[1]
    i = t.shape.index(axis)
    bad[t.name] = np.ascontiguousarray(np.take(bad[t.name], range(size), axis=i))
    return bad, rf"Input tensor: {t.name} \| Received {axis} {size} \| Expected {axis} {size + 1}, as in input {shared[0].name}"


def _values(spec, p, feed):
    t = next((t for t in spec.inputs if t.values is not None), None)
    if t is None:
        return f"{spec.name} declares no value range"
    bad = feed[t.name].copy()
    bad.flat[0] = t.values[1] + 1
    return _with(feed, t.name, bad), rf"Input tensor: {t.name} \| Received values in \[.*, {t.values[1] + 1}\] \| Expected values in \[{t.values[0]}, {t.values[1]}\]"


def _nonfinite(value, label):
    def case(spec, p, feed):
        t = _first(spec, "f")
        if t is None:
            return f"{spec.name} has no float input"
        bad = feed[t.name].copy()
        bad.flat[5] = value
        return _with(feed, t.name, bad), rf"Input tensor: {t.name} \| Received 1 NaN/Inf values"
    return case


def _not_array(spec, p, feed):
    t = spec.inputs[0]
    return _with(feed, t.name, feed[t.name].tolist()), rf"Input tensor: {t.name} \| Received a list, not a numpy array"


BAD_FEEDS = {
    "dtype": _dtype, "byteswapped": _byteswapped, "rank_low": _rank_low, "rank_high": _rank_high,
    "fixed_dim": _fixed, "batch0": _batch(lambda p: 0), "above_max": _batch(lambda p: p.max + 1),
    "axis_above_max": _axis_above_max, "axes_disagree": _axes_disagree, "values": _values,
    "nan": _nonfinite(np.nan, "nan"), "inf": _nonfinite(np.inf, "inf"), "list": _not_array,
}


@pytest.mark.parametrize("case", BAD_FEEDS, ids=list(BAD_FEEDS))
def test_bad_input_names_tensor_received_and_expected(backend, model_spec, profile, golden, case):
    runner, _ = backend
    made = BAD_FEEDS[case](model_spec, profile, _probe(golden)[0])
    if isinstance(made, str):
        pytest.skip(made)
    feed, pattern = made
    with pytest.raises(InputError, match=pattern) as info:
        runner.infer(feed)
    assert "Input tensor: " in str(info.value) and "Expected" in str(info.value)


def test_wrong_and_missing_names(backend, model_spec, golden):
    runner, _ = backend
    feed = _probe(golden)[0]
    first = model_spec.input_names[0]
    renamed = {("images" if k == first else k): v for k, v in feed.items()}
    with pytest.raises(InputError, match=rf"missing \['{first}'\]; unexpected \['images'\]"):
        runner.infer(renamed)
    with pytest.raises(InputError, match="must be a dict"):
        runner.infer(feed[first])


@pytest.mark.parametrize("layout", ["fortran", "strided", "transposed_view"])
def test_non_contiguous_inputs_give_the_right_answer(backend, golden, model_spec, layout):
    runner, precision = backend
    feed, ref = _probe(golden)
    fed = {}
    for name, x in feed.items():
        if layout == "fortran":
            fed[name] = np.asfortranarray(x)
        elif layout == "strided":  # every other row of twice the rows, on an axis longer than 1 (a batch of 1 is contiguous)
            axis = next((i for i, n in enumerate(x.shape) if n > 1), 0)
            fed[name] = np.repeat(x, 2, axis=axis)[(slice(None),) * axis + (slice(None, None, 2),)]
        else:
            fed[name] = np.ascontiguousarray(x.swapaxes(-1, -2)).swapaxes(-1, -2)
        assert np.array_equal(fed[name], x)
    assert not all(v.flags.c_contiguous for v in fed.values())
    assert compare_outputs(ref, runner.infer(fed), precision, model_spec)


def test_runner_does_not_keep_a_reference_to_its_outputs(backend, golden):
    runner, _ = backend
    first = runner.infer(_probe(golden)[0])
    kept = {k: v.copy() for k, v in first.items()}
    runner.infer(golden[32 if 32 in golden else max(golden)][0])
    assert all(np.array_equal(first[k], kept[k]) for k in kept)


def test_nonfinite_inputs_pass_when_allowed(trained):
    from model.backends.pytorch import TorchRunner
    from model.zoo import get

    spec = get("simplecnn")
    with TorchRunner(trained.model, spec.input_metadata(), spec.output_names, allow_nonfinite=True) as runner:
        out = runner.infer({"input": np.full((2, 3, 32, 32), np.nan, np.float32)})["output"]
    assert out.shape == (2, 100) and np.isnan(out).all()


def test_inactive_runner_says_how_to_activate(trained):
    from model.backends.pytorch import TorchRunner
    from model.zoo import get

    spec = get("simplecnn")
    with pytest.raises(RuntimeError, match="activate"):
        TorchRunner(trained.model, spec.input_metadata(), spec.output_names).infer({"input": np.zeros((1, 3, 32, 32), np.float32)})


def test_onnxruntime_silent_cpu_fallback_is_refused(model_artifacts, monkeypatch):
    """onnxruntime-gpu without a usable GPU quietly runs on the CPU; the runner must not."""
    import onnxruntime as ort

    from model.backends.base import BackendUnavailable
    from model.backends.onnxruntime import OrtRunner

    real = ort.InferenceSession

    class FellBack(real):
        def get_providers(self):
            return ["CPUExecutionProvider"]

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession",
                        lambda path, sess_options=None, providers=None, **kw: FellBack(path, sess_options, providers=["CPUExecutionProvider"], **kw))
    runner = OrtRunner(model_artifacts.onnx, model_artifacts.spec.input_metadata(), device="cuda")
    with pytest.raises(BackendUnavailable, match=r"asked for CUDAExecutionProvider but the session runs on \['CPUExecutionProvider'\]"):
        runner.activate()


@pytest.mark.parametrize("declared", ["float32", "float64", "float16", "int64", "int32", "bool"])
def test_the_wrong_dtype_fed_is_never_the_declared_one(declared):
    """An int32 input was fed int32 as its 'wrong' dtype, so the dtype check could not fail on it."""
    from model.profile import BatchProfile
    from model.spec import BATCH, ModelSpec, TensorSpec

    spec = ModelSpec("dtypes", [TensorSpec("x", declared, (BATCH, 3))], [TensorSpec("y", "float32", (BATCH, 3))],
                     BatchProfile(1, (2,), 4))
    feed = {"x": np.zeros((2, 3), declared)}
    wrong, message = _dtype(spec, None, feed)
    assert wrong["x"].dtype != np.dtype(declared) and f"Expected {declared}" in message
