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


def test_the_export_states_the_specs_fixed_dims(tmp_path):
    module, spec = tiny_models.segmenter()
    path = export_onnx(module, spec, tmp_path / "segmenter.onnx")
    dims = onnx.load(str(path)).graph.output[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 5, "h", "w"]


def test_a_fixed_dim_other_than_the_specs_is_refused(exported, tmp_path):
    from dataclasses import replace

    from model.spec import BATCH, TensorSpec

    wider = replace(tiny_models.SPEC, outputs=[TensorSpec("logits", "float32", (BATCH, 101))])
    with pytest.raises(SpecError, match=r"output 'logits' has dims \[\(1, 100\)\] \(index, size\), the spec declares \[\(1, 101\)\]"):
        check_onnx(exported, wider)


def test_a_file_whose_own_shapes_disagree_is_refused_by_the_checker(exported, tmp_path):
    """A declared output size its own Gemm contradicts: onnx.checker's shape inference raises an
    InferenceError, which reaches the user as the usual one-line error, not a traceback."""
    model = onnx.load(str(exported))
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 99
    path = tmp_path / "wider.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ValueError, match=r"wider.onnx fails onnx.checker: .*Inferred shape and existing shape differ"):
        check_onnx(path, tiny_models.SPEC)
