"""The main job's figures are what the backends computed: each row of comparison.json against the
same figure worked out here from the runners' own outputs and the PyTorch module's."""
import json
from pathlib import Path

import numpy as np
import pytest

from model.cli import main
from tests import tiny_models

FACTORY = f"{Path(tiny_models.__file__)}:classifier"


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    """`compare` of the tiny classifier on every backend (those this machine lacks are rows with a
    reason): its comparison.json rows by backend, and its artifacts in the same cache."""
    from model.artifacts import ModelArtifacts
    from model.sources import from_factory

    cache_dir, out = tmp_path_factory.mktemp("cache"), tmp_path_factory.mktemp("out")
    code = main(["compare", "--model", FACTORY, "--batch-sizes", "1", "--runs", "1", "--out", str(out),
                 "--cache-dir", str(cache_dir)])
    assert code == 0
    summary = json.loads((out / tiny_models.SPEC.name / "comparison.json").read_text())
    return {r["backend"]: r for r in summary["results"]}, ModelArtifacts(from_factory(FACTORY), cache_dir, progress=False)


@pytest.fixture(scope="module")
def recomputed(comparison):
    """Computed here, apart from model/evaluate.py's chunked pass: the PyTorch module's logits on the
    evaluation feed, and each available backend's, from its runner in one call (no chunking)."""
    import torch

    from model.backends.registry import BACKENDS
    from model.evaluate import evaluation_feed

    rows, arts = comparison
    feed, _ = evaluation_feed(arts)
    with torch.inference_mode():
        reference = arts.module(torch.from_numpy(feed["input"])).numpy()
    outputs = {}
    for name, row in rows.items():
        if row["available"] and name != arts.reference:
            with BACKENDS[name].runner(arts) as runner:
                outputs[name] = runner.infer(feed)["logits"]
    return reference, outputs


def test_top1_agreement_of_every_backend_is_computed_from_its_outputs(comparison, recomputed):
    """Every available row's top-1 agreement is the share of evaluation rows where the backend's
    argmax equals the PyTorch module's. The INT8 rows flip some near-tied decisions of this model,
    so a constant 1.0 cannot pass."""
    rows, arts = comparison
    reference, outputs = recomputed
    assert {"onnxruntime-cpu", "onnxruntime-cpu-fp16", "onnxruntime-cpu-int8"} <= set(outputs)
    assert rows[arts.reference]["top1_agreement"] == 1.0  # the reference row is its own outputs
    computed = {name: float((out.argmax(-1) == reference.argmax(-1)).mean()) for name, out in outputs.items()}
    assert min(computed.values()) < 1.0, f"every backend agrees on every row ({computed}): nothing is tested"
    reported = {name: rows[name]["top1_agreement"] for name in outputs}
    assert reported == pytest.approx(computed, abs=1e-9), f"reported {reported}, computed {computed}"


def test_max_abs_error_of_every_backend_is_computed_from_its_outputs(comparison, recomputed):
    """The row's largest |output - reference| over the evaluation feed (the reference row's is 0)."""
    rows, arts = comparison
    reference, outputs = recomputed
    assert rows[arts.reference]["max_abs_error"] == 0.0
    for name, out in outputs.items():
        error = float(np.abs(out.astype(np.float64) - reference).max())
        assert rows[name]["max_abs_error"] == pytest.approx(error, rel=1e-6, abs=1e-7), name
