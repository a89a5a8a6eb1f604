"""Property tests: any batch in range, any finite values in a plausible range, same answer as PyTorch."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from model.compare import compare
from model.profile import INPUT_NAME, OUTPUT_NAME
from model.runners.base import InputError
from tests.backends import backend_params

# Normalized CIFAR pixels lie in about [-2, 2.1]; allow a margin beyond.
pixel = st.floats(-4.0, 4.0, allow_nan=False, allow_infinity=False, width=32)


# INT8 is calibrated on the data distribution: arbitrary values saturate its calibrated ranges,
# so it is checked on held-out data (test_parity.py), not here.
@pytest.fixture(params=backend_params(precisions=("fp32", "fp16")))
def backend(request, runner_pool):
    name, precision = request.param
    return runner_pool(name), precision


@pytest.fixture(scope="module")
def reference(runner_pool):
    return runner_pool("pytorch-cpu")


@given(data=st.data())
def test_random_batches_match_pytorch(backend, reference, profile, data):
    runner, precision = backend
    batch = data.draw(st.integers(profile.min, min(64, profile.max)), label="batch")
    x = data.draw(arrays(np.float32, (batch, 3, 32, 32), elements=pixel), label="x")
    ref = reference.infer({INPUT_NAME: x})[OUTPUT_NAME]
    out = runner.infer({INPUT_NAME: x})[OUTPUT_NAME]
    assert out.shape == (batch, 100)
    result = compare(ref, out, precision)
    assert result, result.message


wrong_shapes = st.lists(st.integers(0, 40), min_size=1, max_size=5).filter(
    lambda s: int(np.prod(s)) <= 200_000 and (len(s) != 4 or s[1:] != [3, 32, 32] or s[0] == 0))


@given(shape=wrong_shapes)
def test_any_wrong_shape_is_rejected_by_name(reference, shape):
    with pytest.raises(InputError, match=rf"Input tensor: {INPUT_NAME} \| Received"):
        reference.infer({INPUT_NAME: np.zeros(shape, np.float32)})
