"""Every backend against PyTorch FP32 on the CPU, for every batch size: shape, values, argmax."""
import numpy as np
import pytest

from model.compare import MAX_ACCURACY_DROP, TOLERANCES, accuracy, compare
from model.profile import INPUT_NAME, OUTPUT_NAME
from tests.backends import backend_params


@pytest.fixture(params=backend_params())
def backend(request, runner_pool):
    name, precision = request.param
    return runner_pool(name), precision


def test_output_shape_is_batch_by_classes(backend, golden, batch_size):
    runner, _ = backend
    x, _ = golden[batch_size]
    out = runner.infer({INPUT_NAME: x})
    assert set(out) == {OUTPUT_NAME}
    assert out[OUTPUT_NAME].shape == (batch_size, 100)


def test_outputs_match_pytorch(backend, golden, batch_size):
    runner, precision = backend
    x, ref = golden[batch_size]
    result = compare(ref, runner.infer({INPUT_NAME: x})[OUTPUT_NAME], precision)
    assert result, result.message


def test_repeated_calls_with_changing_batch_are_stable(backend, golden):
    """Shapes change between calls (the dynamic-shape path) and results must not depend on order."""
    runner, precision = backend
    sizes = [32, 1, 7, 32]
    outs = [runner.infer({INPUT_NAME: golden[n][0]})[OUTPUT_NAME] for n in sizes if n in golden]
    for n, out in zip([n for n in sizes if n in golden], outs):
        assert compare(golden[n][1], out, precision), n


def _holdout_logits(runner, holdout, chunk: int) -> np.ndarray:
    return np.concatenate([runner.infer({INPUT_NAME: holdout.x[i : i + chunk]})[OUTPUT_NAME]
                           for i in range(0, len(holdout), chunk)])


@pytest.fixture(scope="module")
def holdout_chunk(profile) -> int:
    return min(1000, profile.max)


@pytest.fixture(scope="module")
def reference_holdout_logits(runner_pool, dataset, holdout_chunk):
    """PyTorch FP32 CPU logits for the held-out split, computed once for every backend."""
    return _holdout_logits(runner_pool("pytorch-cpu"), dataset.holdout, holdout_chunk)


def test_holdout_accuracy_matches_pytorch(backend, dataset, reference_holdout_logits, holdout_chunk):
    runner, precision = backend
    ref_logits = reference_holdout_logits
    logits = _holdout_logits(runner, dataset.holdout, holdout_chunk)
    ref_acc, acc = accuracy(ref_logits, dataset.holdout.y), accuracy(logits, dataset.holdout.y)
    agreement = float((ref_logits.argmax(1) == logits.argmax(1)).mean())
    report = f"{runner.name}: top-1 {acc:.4f} vs PyTorch FP32 {ref_acc:.4f}, agreement {agreement:.4f}"
    assert ref_acc - acc <= MAX_ACCURACY_DROP[precision] + 1e-9, report
    assert agreement >= TOLERANCES[precision].min_top1_agreement, report
    if precision == "fp32":
        assert acc == ref_acc, report
