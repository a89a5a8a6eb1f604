"""The bug the user hit, reproduced on a real engine of every model and caught by this suite's own
checks, for every dynamic axis (the batch, and a sequence axis where the model has one)."""
import pytest

from model.compare import compare_outputs

pytestmark = pytest.mark.needs_trt


@pytest.fixture(scope="module", params=["flat", "max"])
def naive(request, runner_test_engine):
    from tests.naive_trt import NaiveTrtRunner

    runner = NaiveTrtRunner(runner_test_engine.plan(), mode=request.param)
    yield runner
    runner.close()


def _feeds(spec, golden):
    """The suite's probe feeds, and one per other dynamic axis at a size off its opt."""
    feeds = {f"bs{n}": golden[n] for n in (32, 1) if n in golden}
    for axis in spec.axes:
        size = max(axis.min, min(axis.max, axis.opt // 2 + 1))
        feeds[f"{axis.name}{size}"] = (spec.sample(3, seed=11, **{axis.name: size}), None)
    return feeds


def test_suite_checks_detect_the_naive_runner(naive, golden, model_spec, reference_runner):
    for label, (feed, ref) in _feeds(model_spec, golden).items():
        ref = ref if ref is not None else reference_runner.infer(feed)
        out = naive.infer(feed)
        result = compare_outputs(ref, out, "fp32", model_spec)
        # What the user saw: a flat buffer, or one the profile's max shape; either way caught.
        assert not result, f"{label}: the naive runner's output passed the checks"
        assert "shape mismatch" in result.message, f"{label}: {result.message}"
        # ...even if someone reshaped the buffer to the expected shape: nothing was computed into it.
        reshaped = {n: out[n].ravel()[: ref[n].size].reshape(ref[n].shape) for n in ref if out[n].size >= ref[n].size}
        if len(reshaped) == len(ref):
            assert not compare_outputs(ref, reshaped, "fp32", model_spec), label
        # And TensorRT itself refused: execute_async_v3 returned False (8.6) or logged Error Code 3 (10+),
        # and the context never resolved the outputs' shapes.
        assert naive.execute_ok is False or any("Error Code 3" in m for m in naive.logger.errors()), label
        assert all(dims != ref[n].shape for n, dims in naive.context_output_dims.items()), label


def test_the_correct_runner_passes_the_same_checks(runner_pool, golden, model_spec, reference_runner):
    runner = runner_pool("tensorrt-fp32")
    for label, (feed, ref) in _feeds(model_spec, golden).items():
        ref = ref if ref is not None else reference_runner.infer(feed)
        batch = next(iter(feed.values())).shape[0]
        logger = runner.runner_for(batch).logger
        errors_before = len(logger.errors())  # the pooled runner may have been refused before
        result = compare_outputs(ref, runner.infer(feed), "fp32", model_spec)
        assert result, f"{label}: {result.message}"
        assert logger.errors()[errors_before:] == [], label
