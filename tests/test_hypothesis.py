"""Property tests: any batch (and any size of every other dynamic axis) in range, any plausible
values, same answer as the reference; any wrong shape refused by name."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from model.backends.base import InputError
from model.compare import compare_outputs

# Normalized pixels lie in about [-2, 2.1]; allow a margin beyond.
value = st.floats(-4.0, 4.0, allow_nan=False, allow_infinity=False, width=32)

# INT8 is calibrated on the data distribution: arbitrary values saturate its calibrated ranges,
# so it is checked on held-out or sample data (test_parity.py), not here.
pytestmark = pytest.mark.backends(precisions=("fp32", "fp16"))


def _draw_feed(data, spec, profile) -> dict:
    batch = data.draw(st.integers(profile.min, min(8, profile.max)), label="batch")
    sizes = {a.name: data.draw(st.integers(a.min, min(a.max, 24)), label=a.name) for a in spec.axes}
    feed = spec.sample(batch, seed=data.draw(st.integers(0, 2**16), label="seed"), **sizes)
    for t in spec.inputs:  # float inputs drawn element by element; integer inputs from the sampler's valid ids
        if np.dtype(t.dtype).kind == "f":
            feed[t.name] = data.draw(arrays(np.dtype(t.dtype), feed[t.name].shape, elements=value), label=t.name)
    return feed


@given(data=st.data())
def test_random_feeds_match_the_reference(backend, reference_runner, model_spec, profile, data):
    runner, precision = backend
    feed = _draw_feed(data, model_spec, profile)
    result = compare_outputs(reference_runner.infer(feed), runner.infer(feed), precision, model_spec)
    assert result, result.message


wrong_shapes = st.lists(st.integers(0, 40), min_size=1, max_size=5).filter(lambda s: int(np.prod(s)) <= 200_000)


@given(shape=wrong_shapes)
def test_any_wrong_shape_is_rejected_by_name(reference_runner, model_spec, golden, shape):
    feed = dict(golden[min(golden)][0])
    t = model_spec.inputs[0]
    try:  # a drawn shape the model accepts is not a wrong shape
        reference_runner.infer({**feed, t.name: np.zeros(shape, t.dtype)})
    except InputError as exc:
        assert f"Input tensor: {t.name} | Received" in str(exc)
    else:
        meta = model_spec.input_metadata()[t.name]
        assert len(shape) == len(meta.shape) and all(
            (d is None and r[0] <= s <= r[1]) or d == s for s, d, r in zip(shape, meta.shape, meta.ranges))
