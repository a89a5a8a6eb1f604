"""The precision and size checks hold for models unlike the shipped CNNs: a GPT-2-style decoder
(Gemm and MatMul, no Conv) and a small net with two outputs, whose graph outweighs its weights."""
import onnx
import pytest

from model import quantize
from model.artifacts import ModelArtifacts
from model.sources import from_factory
from tests.test_precision import (check_fp16, check_fp16_weight_bytes, check_int8_structure, check_size,
                                  require_weight_ops)

FACTORIES = {"gpt2-tiny": "tests/trust_models.py:gpt2_tiny", "two-outputs": "tests/trust_models.py:two_outputs"}


@pytest.fixture(scope="module", params=list(FACTORIES))
def arts(request, cache_dir):
    if request.param == "gpt2-tiny":
        pytest.importorskip("transformers", reason="transformers is not installed in this Python")
    return ModelArtifacts(from_factory(FACTORIES[request.param]), cache_dir, progress=False)


def test_int8_quantizes_the_weight_ops_the_model_has(arts):
    int8 = onnx.load(str(arts.onnx_variant("int8")))
    ops = {n.op_type for n, _ in quantize.weight_ops(onnx.load(str(arts.onnx)))}
    assert ops == ({"Gemm"} if arts.spec.name == "gpt2-tiny" else {"Conv", "Gemm"})
    assert check_int8_structure(arts.onnx, int8) == (8 if arts.spec.name == "gpt2-tiny" else 3)


def test_an_unquantized_model_is_named_op_by_op(arts):
    fp32 = onnx.load(str(arts.onnx))
    problems = quantize.int8_weight_problems(fp32, fp32)
    assert len(problems) == len(quantize.weight_ops(fp32)) and "is not dequantized from int8" in problems[0]


def test_fp16_halves_every_weight_and_the_size_is_information_where_the_graph_dominates(arts, record_property):
    fp16 = onnx.load(str(arts.onnx_variant("fp16")))
    check_fp16(fp16, arts.spec)
    check_fp16_weight_bytes(arts.onnx, fp16)
    note = check_size(arts.onnx, arts.onnx_variant("fp16"), record_property)
    assert "(information: below 95% the graph's own bytes dominate)" in note  # 89% and 76% weights


def test_a_model_without_weight_ops_skips_the_int8_weight_check_with_its_reason(tmp_path):
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])])
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(pytest.skip.Exception, match="relu has no Conv, ConvTranspose, Gemm or MatMul with constant weights"):
        require_weight_ops("relu", path)
