"""Every backend against the model's reference (PyTorch FP32 on the CPU, or ONNX Runtime CPU FP32
for a model without PyTorch source), for every model and batch size: shape, values, decisions."""
import pytest

from model.compare import MAX_ACCURACY_DROP, compare_outputs
from model.diagnose.hint import first_diverging_layer
from model.evaluate import evaluation_feed, run_chunked


def _expected_shape(spec, name: str, feed: dict) -> tuple:
    return spec.output_shapes(spec.axis_sizes(feed))[name]


@pytest.fixture
def outputs(backend, golden, batch_size, model_store, model_name, backend_name):
    """The backend's outputs for the golden feed of this batch: one call, judged by the shape test
    and the parity test alike (at batch 4096 on the CPU each call costs seconds). Kept, not copied:
    a runner that later wrote into outputs it had handed out would fail the parity test."""
    runner, _ = backend
    return model_store.memo(model_name, f"outputs-{backend_name}-{batch_size}",
                            lambda: runner.infer(golden[batch_size][0]))


def test_output_names_and_shapes(outputs, golden, model_spec, batch_size):
    feed, _ = golden[batch_size]
    assert list(outputs) == model_spec.output_names
    for name, value in outputs.items():
        assert value.shape == _expected_shape(model_spec, name, feed), name


def test_outputs_match_the_reference(outputs, backend, golden, model_spec, batch_size, model_artifacts, backend_name):
    _, precision = backend
    result = compare_outputs(golden[batch_size][1], outputs, precision, model_spec)
    # The message (built only on failure) ends with the first diverging layer and the command for the rest.
    assert result, result.message + first_diverging_layer(model_artifacts, backend_name, golden[batch_size][0])


def test_repeated_calls_with_changing_batch_are_stable(backend, golden, model_spec):
    """Shapes change between calls (the dynamic-shape path) and results must not depend on order."""
    runner, precision = backend
    sizes = [n for n in (32, 1, 7, 32) if n in golden]
    outs = [runner.infer(golden[n][0]) for n in sizes]
    for n, out in zip(sizes, outs):
        assert compare_outputs(golden[n][1], out, precision, model_spec), n


def test_other_axes_change_between_calls(backend, reference_runner, model_spec):
    """Every dynamic axis besides the batch (a sequence length) at its min, an odd size and max."""
    if not model_spec.axes:
        pytest.skip(f"{model_spec.name} has no dynamic axis besides the batch")
    runner, precision = backend
    for axis in model_spec.axes:
        for size in sorted({axis.min, min(axis.max, max(axis.min, 13) | 1), axis.max}):
            feed = model_spec.sample(3, seed=size, **{axis.name: size})
            result = compare_outputs(reference_runner.infer(feed), runner.infer(feed), precision, model_spec)
            assert result, f"{axis.name}={size}: {result.message}"


@pytest.fixture(scope="session")
def reference_evaluation(model_store, model_name, reference_runner, model_artifacts):
    """The reference's outputs on the whole evaluation feed, computed once per model."""
    def make():
        feed, labels = evaluation_feed(model_artifacts)
        return run_chunked(reference_runner, feed, 500), labels
    return model_store.memo(model_name, "reference_evaluation", make)


def test_evaluation_metric_matches_the_reference(backend, model_artifacts, model_spec, reference_evaluation):
    """Top-1 on the held-out split (where the model has data) within the precision's gate, and
    top-1 agreement with the reference's decisions over the whole evaluation feed."""
    if not model_spec.logits:
        pytest.skip(f"{model_spec.name} has no classifier output: its values are checked by the parity tests")
    runner, precision = backend
    ref, labels = reference_evaluation
    feed, _ = evaluation_feed(model_artifacts)
    out = run_chunked(runner, feed, 500)
    name = model_spec.logits[0]
    agreement = float((model_spec.decisions(ref[name]) == model_spec.decisions(out[name])).mean())
    tol = model_spec.tolerance(precision, name)
    report = f"{runner.name}: agreement {agreement:.4f} with the reference (min {tol.min_top1_agreement})"
    assert agreement >= tol.min_top1_agreement, report
    if labels is not None:
        ref_acc, acc = (float((model_spec.decisions(v[name]) == labels).mean()) for v in (ref, out))
        report += f"; top-1 {acc:.4f} vs reference {ref_acc:.4f}"
        assert ref_acc - acc <= MAX_ACCURACY_DROP[precision] + 1e-9, report
        if precision == "fp32":
            assert acc == ref_acc, report
