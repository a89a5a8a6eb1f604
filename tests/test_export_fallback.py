"""Where the TorchScript exporter cannot export a model, the dynamo exporter does, brought to the
opset TensorRT 8.6 parses; where neither can, one paragraph names the model, the step and the
operator, without the Torch IR dump."""
import numpy as np
import onnx
import pytest
import torch

from model import dynamo_export, export
from model.profile import BatchProfile
from model.spec import BATCH, ModelSpec, TensorSpec


class Diff(torch.nn.Module):
    """aten::diff: what transformers 5 decoders call without an attention mask; no opset-17 symbolic."""

    def forward(self, x):
        return torch.diff(x, dim=-1) * 2


class Svd(torch.nn.Module):
    """Singular values: neither exporter has an ONNX function for them."""

    def forward(self, x):
        return torch.linalg.svdvals(x.reshape(x.shape[0], 2, 2))


def _spec(name, width):
    return ModelSpec(name, [TensorSpec("x", "float32", (BATCH, 4))], [TensorSpec("y", "float32", (BATCH, width))],
                     BatchProfile(1, (2,), 8), source=f"tests/test_export_fallback.py:{name}")


@pytest.fixture(scope="module")
def diff_export(cache_dir):
    spec = _spec("diff-op", 3)
    return spec, export.onnx_for_module(spec, Diff(), {"model": spec.name, "code": "torch.diff(x) * 2"}, cache_dir)


def test_torchscript_failure_falls_back_to_dynamo(diff_export):
    import onnxruntime as ort

    spec, path = diff_export
    made = export.exporter_of(path)
    assert made["exporter"] == "dynamo" and "aten::diff" in made["fallback_reason"]
    assert made["versions"]["torch"] == torch.__version__.split("+")[0]
    model = onnx.load(str(path))
    assert {o.domain or "ai.onnx": o.version for o in model.opset_import}["ai.onnx"] == export.OPSET
    assert not [p for p in path.parent.glob(path.name + "*") if p.suffix not in (".onnx", ".json")]  # one file
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, Diff()(torch.from_numpy(x)).numpy(), rtol=1e-6, atol=1e-6)


def test_sidecar_figures_name_the_exporter(diff_export):
    import json

    _, path = diff_export
    record = json.loads(path.with_name(path.name + ".json").read_text())
    assert record["figures"]["exporter"] == "dynamo"
    assert record["key"]["exporters"]["order"] == list(export.EXPORTERS)


def test_exporter_versions_are_in_the_key(monkeypatch, tmp_path):
    spec = _spec("diff-op", 3)
    before = export.onnx_path_for(spec, {"model": spec.name}, tmp_path)
    monkeypatch.setattr(dynamo_export, "versions", lambda: {"torch": "0.0", "onnxscript": None, "onnx": "0.0"})
    assert export.onnx_path_for(spec, {"model": spec.name}, tmp_path) != before


def test_an_export_by_other_exporter_versions_is_used_where_the_module_cannot_be_built(monkeypatch, diff_export,
                                                                                        cache_dir):
    spec, path = diff_export
    monkeypatch.setattr(dynamo_export, "versions", lambda: {"torch": "9.9", "onnxscript": None, "onnx": "9.9"})
    assert export.cached_onnx(spec, {"model": spec.name, "code": "torch.diff(x) * 2"}, cache_dir) == path
    assert export.cached_onnx(spec, {"model": spec.name, "code": "other"}, cache_dir) is None


def test_export_failure_is_one_paragraph_naming_model_step_and_operator(tmp_path, capfd):
    with pytest.raises(export.ExportError) as info:
        export.export_onnx(Svd(), _spec("svd-op", 2), tmp_path / "svd.onnx")
    message = str(info.value)
    assert message.startswith("svd-op (tests/test_export_fallback.py:svd-op): no ONNX export")
    assert "aten::linalg_svdvals" in message and "Step: ONNX export" in message
    assert "the torchscript exporter" in message and "the dynamo exporter" in message
    assert "\n" not in message and len(message) < 1500 and "graph(" not in message
    printed = capfd.readouterr()
    assert "Torch IR graph" not in printed.out + printed.err and len(printed.out + printed.err) < 2000
