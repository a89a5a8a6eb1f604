"""check_onnx, the contract every export and every cached or given ONNX file is held to, on files
that break one clause each: inputs or outputs named otherwise."""
import onnx
import pytest

from model.export import check_onnx, export_onnx
from model.spec import SpecError
from tests import tiny_models


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return export_onnx(tiny_models.network(0), tiny_models.SPEC, tmp_path_factory.mktemp("onnx") / "tiny.onnx")


@pytest.mark.parametrize("kind, old, new", [("input", "input", "images"), ("output", "logits", "probs")])
def test_a_tensor_named_otherwise_is_refused(exported, tmp_path, kind, old, new):
    model = onnx.load(str(exported))
    for node in model.graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]
    next(v for v in getattr(model.graph, kind) if v.name == old).name = new
    path = tmp_path / "renamed.onnx"
    onnx.save(model, str(path))
    with pytest.raises(SpecError, match=rf"graph {kind}s are \['{new}'\], expected \['{old}'\]"):
        check_onnx(path, tiny_models.SPEC)
    check_onnx(exported, tiny_models.SPEC)  # the file it was made from passes
