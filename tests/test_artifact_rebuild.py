"""Changed weights reach every artifact built from them: a retrained or edited model sharing a cache
with its earlier self gets a new ONNX file, new FP16/INT8 variants and new engines, each computing
with the new weights, never the old files served under the old name."""
import numpy as np
import pytest

from model.artifacts import ModelArtifacts
from tests import tiny_models


def _torch_outputs(arts: ModelArtifacts, feed: dict) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return arts.module(torch.from_numpy(feed["input"])).numpy()


def _ort_outputs(path, feed: dict) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], feed)[0]


@pytest.fixture(scope="module")
def two_builds(tmp_path_factory):
    """The tiny model with two sets of weights, built one after the other in one cache folder.
    Engines at builder level 0: what reaches a plan does not depend on the level, and level 5 made
    these six plans minutes of a cold GPU run, once per pytest run."""
    cache_dir = tmp_path_factory.mktemp("cache")
    old = ModelArtifacts(tiny_models.spec_with_weights(0), cache_dir, progress=False, optimization_level=0)
    old.onnx_variant("fp16"), old.onnx_variant("int8")  # the old model's files are there first
    new = ModelArtifacts(tiny_models.spec_with_weights(1), cache_dir, progress=False, optimization_level=0)
    feed = tiny_models.SPEC.sample(64, seed=3)
    return old, new, feed, {a: _torch_outputs(a, feed) for a in (old, new)}


# The largest mean |error| a file's outputs may have from its own module's, as a share of the mean
# distance between the two modules' outputs. Measured: FP32 7e-8, FP16 2e-4, INT8 0.06-0.10 (its
# other-weights figure is 0.98: an old file served for new weights fails every row).
SHARE = {"fp32": 1e-5, "fp16": 0.01, "int8": 0.25}


def _distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b).mean())


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_each_onnx_file_computes_with_its_own_weights(two_builds, precision):
    """Each build's file (FP32 export, FP16 graph, Q/DQ INT8 model) is its own, and its outputs lie
    near its own module's, far from the other weights'."""
    old, new, feed, torch_out = two_builds
    paths = {a: a.onnx_variant(precision) for a in (old, new)}
    assert paths[old] != paths[new], f"both weights were given {paths[old]}"
    apart = _distance(torch_out[old], torch_out[new])
    assert apart > 0.1, "the two seeds drew weights too alike to tell the files apart"
    for arts, other in ((old, new), (new, old)):
        out = _ort_outputs(paths[arts], feed)
        own, foreign = _distance(out, torch_out[arts]), _distance(out, torch_out[other])
        assert own <= SHARE[precision] * apart, (
            f"{precision} file {paths[arts].name} is {own:.3g} from its own module's outputs, {foreign:.3g} from "
            f"the other weights' (they lie {apart:.3g} apart)")


def test_the_runners_follow_the_new_weights(two_builds):
    """What the backends run, through the registry: ONNX Runtime CPU on the new build matches the
    new module, not the old one."""
    from model.backends.registry import BACKENDS

    old, new, feed, torch_out = two_builds
    with BACKENDS["onnxruntime-cpu"].runner(new) as runner:
        out = runner.infer(feed)["logits"]
    np.testing.assert_allclose(out, torch_out[new], atol=1e-5, rtol=1e-4)
    assert not np.allclose(out, torch_out[old], atol=1e-2)


@pytest.mark.needs_trt
@pytest.mark.parametrize("precision, typed_graph", [("fp32", False), ("fp16", True), ("int8", True)])
def test_engines_are_built_from_the_new_weights(two_builds, precision, typed_graph):
    """The TensorRT plans of the two builds differ, and each engine set computes with its own weights."""
    from model.backends.tensorrt.engine_set import TrtEngineSet

    old, new, feed, torch_out = two_builds
    apart = _distance(torch_out[old], torch_out[new])
    engines = {a: a.engine_set(precision, typed_graph) for a in (old, new)}
    assert {e.path for e in engines[old].values()}.isdisjoint(e.path for e in engines[new].values())
    for arts in (old, new):
        plans = {profile: engine.plan() for profile, engine in engines[arts].items()}
        with TrtEngineSet(plans, label=precision, declared=arts.spec.input_metadata()) as runner:
            out = runner.infer(feed)["logits"]
        own = _distance(out, torch_out[arts])
        assert own <= SHARE[precision] * apart, f"{precision} engine of {arts.checkpoint.name}: {own:.3g} from its module"


def test_an_onnx_file_edited_in_place_gets_new_variants(tmp_path):
    """A user's ONNX file (no PyTorch source) rewritten at the same path with other weights: its
    FP16 variant, cached beside the old one, is made again from the new file's bytes."""
    from model.export import export_onnx
    from model.sources import from_onnx

    cache_dir, path = tmp_path / "cache", tmp_path / "model.onnx"
    feed = tiny_models.SPEC.sample(16, seed=4)
    variants = []
    for seed in (0, 1):
        export_onnx(tiny_models.network(seed), tiny_models.SPEC, path)
        arts = ModelArtifacts(from_onnx(str(path)), cache_dir, progress=False)
        variants.append(arts.onnx_variant("fp16"))
        np.testing.assert_allclose(_ort_outputs(variants[-1], feed), _ort_outputs(path, feed), atol=1e-2, rtol=1e-2)
    assert variants[0] != variants[1]


def test_an_export_at_another_opset_is_its_own_file(tmp_path):
    """The opset is part of the export's key: asking for opset 16 after 17 was cached gives an opset-16 file."""
    import onnx

    from model.export import OPSET, onnx_for_module

    spec, module = tiny_models.SPEC, tiny_models.network(0)
    files = {opset: onnx_for_module(spec, module, {"model": spec.name}, tmp_path, opset=opset)
             for opset in (OPSET, OPSET - 1)}
    for opset, path in files.items():
        assert {o.domain or "ai.onnx": o.version for o in onnx.load(str(path)).opset_import}["ai.onnx"] == opset
