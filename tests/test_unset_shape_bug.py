"""The bug the user hit, reproduced on a real engine and caught by this suite's own checks."""
import pytest

from model.compare import compare
from model.profile import INPUT_NAME, OUTPUT_NAME

pytestmark = pytest.mark.needs_trt


@pytest.fixture(scope="module")
def naive(model_artifacts):
    from tests.naive_trt import NaiveTrtRunner

    runner = NaiveTrtRunner(model_artifacts.engine("fp32").plan())
    yield runner
    runner.close()


@pytest.mark.parametrize("batch", [32, 1], ids=["bs32", "bs1"])
def test_suite_checks_detect_the_naive_runner(naive, golden, batch):
    x, ref = golden[batch]
    out = naive.infer(x)

    # What the user saw: a flat buffer, (3200,) for 32 images, (100,) for one.
    assert out.shape == (batch * 100,)
    # The suite's shape and parity check catches it...
    result = compare(ref, out)
    assert not result
    assert f"shape mismatch: received ({batch * 100},), expected ({batch}, 100)" in result.message
    # ...even if someone reshaped the flat buffer: nothing was computed into it.
    assert not compare(ref, out.reshape(batch, 100))
    # And TensorRT itself refused: execute_async_v3 returned False (8.6) or logged Error Code 3 (10+),
    # and the context never resolved the output's shape.
    assert naive.execute_ok is False or any("Error Code 3" in m for m in naive.logger.errors())
    assert naive.context_output_dims != (batch, 100)


def test_the_correct_runner_passes_the_same_checks(runner_pool, golden):
    runner = runner_pool("tensorrt-fp32")
    x, ref = golden[32]
    logger = runner.runner_for(32).logger
    errors_before = len(logger.errors())  # the pooled runner may have been refused before
    out = runner.infer({INPUT_NAME: x})[OUTPUT_NAME]
    assert out.shape == (32, 100)
    assert compare(ref, out)
    assert logger.errors()[errors_before:] == []

