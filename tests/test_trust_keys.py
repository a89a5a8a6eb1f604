"""Every cached artifact is keyed by everything that made it: the code of forward() as well as the
weights, so an edited factory or a retrained model never gets a stale export."""
from dataclasses import replace

import numpy as np
import onnxruntime as ort
import pytest
import torch

from model import code_digest, zoo
from model.artifacts import ModelArtifacts
from model.backends.base import BackendUnavailable
from model.export import onnx_path_for
from model.profile import BatchProfile
from model.sources import from_factory
from model.spec import BATCH, ModelSpec, TensorSpec

FACTORY = '''
import torch
from model.profile import BatchProfile
from model.spec import BATCH, ModelSpec, TensorSpec


def make():
    from blocks import Head

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.{act}(), Head())
    return net, ModelSpec("edited", [TensorSpec("x", "float32", (BATCH, 6))], [TensorSpec("y", "float32", (BATCH, 3))],
                          BatchProfile(min=1, opts=(4,), max=8))
'''
BLOCKS = '''
import torch


class Head(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(x) * {scale}
'''


def _onnx_outputs(path, feed):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)[0]


def _torch_outputs(spec, feed):
    with torch.inference_mode():
        return spec.module(None)(torch.from_numpy(feed["x"])).numpy()


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A user's folder: a factory file importing a local module (`blocks.py`) inside its factory."""
    folder = tmp_path / "project"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(__import__("sys").modules, "blocks", raising=False)

    def write(act="ReLU", scale=1):
        (folder / "net.py").write_text(FACTORY.format(act=act))
        (folder / "blocks.py").write_text(BLOCKS.format(scale=scale))
        __import__("sys").modules.pop("blocks", None)  # the next import reads the edited file
        return from_factory(f"{folder / 'net.py'}:make")
    return write


def test_an_edited_forward_rebuilds_the_export(project, tmp_path):
    feed = {"x": np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)}
    relu = project("ReLU")
    first = ModelArtifacts(relu, tmp_path / "cache", progress=False)
    np.testing.assert_allclose(_onnx_outputs(first.onnx, feed), _torch_outputs(relu, feed), atol=1e-5)

    tanh = project("Tanh")  # same seed, same weights: only forward() changed
    second = ModelArtifacts(tanh, tmp_path / "cache", progress=False)
    assert second.checkpoint.read_bytes() == first.checkpoint.read_bytes()
    assert second.onnx != first.onnx
    np.testing.assert_allclose(_onnx_outputs(second.onnx, feed), _torch_outputs(tanh, feed), atol=1e-5)
    assert not np.allclose(_onnx_outputs(second.onnx, feed), _onnx_outputs(first.onnx, feed), atol=1e-3)

    scaled = project("Tanh", scale=2)  # the edit is in a local module the factory imports
    third = ModelArtifacts(scaled, tmp_path / "cache", progress=False)
    assert third.onnx not in (first.onnx, second.onnx)
    np.testing.assert_allclose(_onnx_outputs(third.onnx, feed), _torch_outputs(scaled, feed), atol=1e-5)


def test_the_code_digest_covers_local_imports_and_not_installed_packages(project, tmp_path):
    project()
    files = code_digest.local_sources(tmp_path / "project" / "net.py", ["blocks", "torch.nn.modules.linear"])
    assert [f.name for f in files] == ["blocks.py", "net.py"]


def _spec(net: torch.nn.Module) -> ModelSpec:
    return ModelSpec("weights", [TensorSpec("x", "float32", (BATCH, 6))], [TensorSpec("y", "float32", (BATCH, 3))],
                     BatchProfile(min=1, opts=(4,), max=8), module=lambda ctx: net)


def test_two_weights_in_one_cache_give_two_exports_and_everything_downstream_follows(tmp_path):
    feed = {"x": np.random.default_rng(1).standard_normal((4, 6)).astype(np.float32)}
    arts = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        spec = _spec(torch.nn.Sequential(torch.nn.Linear(6, 3)).eval())
        arts.append(ModelArtifacts(spec, tmp_path, progress=False))
        # Each export computes its own module's function: a shared (stale) file would fail one of these.
        np.testing.assert_allclose(_onnx_outputs(arts[-1].onnx, feed), _torch_outputs(spec, feed), atol=1e-5)
    a, b = arts
    assert a.spec.code == b.spec.code and a.onnx != b.onnx
    assert a.onnx_variant("fp16") != b.onnx_variant("fp16")


def test_zoo_identity_keys_hold_the_zoo_files_code(tmp_path):
    """The GPU kit's Python cannot build resnet18 (no torchvision) and finds the export by its
    identity key; that key still changes when the zoo file does."""
    spec = zoo.get("resnet18")
    assert spec.code == code_digest.of_callable(spec.module) != ""
    arts = ModelArtifacts(spec, tmp_path, progress=False)
    arts.__dict__["_built"] = BackendUnavailable("no torchvision in this Python")
    key = arts._onnx_key()
    assert key["identity"] == spec.identity and key["code"] == spec.code
    edited = ModelArtifacts(replace(spec, code="edited"), tmp_path, progress=False)
    edited.__dict__["_built"] = arts._built
    assert onnx_path_for(spec, key, tmp_path) != onnx_path_for(spec, edited._onnx_key(), tmp_path)
