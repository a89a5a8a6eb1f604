"""The ONNX file: valid, opset TensorRT 8.6 parses, dynamic batch on input and output, same math."""
import numpy as np
import onnx
import pytest

from model.export import OPSET, check_onnx, export_onnx, onnx_for_checkpoint
from model.profile import INPUT_NAME, OUTPUT_NAME


def test_checker_passes(onnx_path):
    onnx.checker.check_model(str(onnx_path), full_check=True)


def test_opset_is_parseable_by_tensorrt_8_6(onnx_path):
    model = onnx.load(str(onnx_path))
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    assert opsets == {"ai.onnx": OPSET} and OPSET <= 17


@pytest.mark.parametrize("kind", ["input", "output"])
def test_batch_axis_is_dynamic(onnx_path, kind):
    graph = onnx.load(str(onnx_path)).graph
    (value,) = graph.input if kind == "input" else graph.output
    assert value.name == (INPUT_NAME if kind == "input" else OUTPUT_NAME)
    dims = value.type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].HasField("dim_value")
    expected_rest = [3, 32, 32] if kind == "input" else [100]
    assert [d.dim_value for d in dims[1:]] == expected_rest


def test_batchnorm_is_folded_and_no_training_ops_remain(onnx_path):
    ops = {n.op_type for n in onnx.load(str(onnx_path)).graph.node}
    assert "BatchNormalization" not in ops and "Dropout" not in ops
    assert ops <= {"Conv", "Relu", "MaxPool", "Flatten", "Reshape", "Gemm"}


def test_fixed_batch_export_is_rejected(tmp_path, trained):
    path = tmp_path / "fixed.onnx"
    model = onnx.load(str(onnx_for_checkpoint(trained.checkpoint, trained.model, tmp_path)))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 32
    onnx.save(model, str(path))
    with pytest.raises(ValueError, match="fixed batch dim 32"):
        check_onnx(path)


def test_damaged_cached_onnx_is_exported_again(tmp_path, trained):
    path = onnx_for_checkpoint(trained.checkpoint, trained.model, tmp_path)
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    again = onnx_for_checkpoint(trained.checkpoint, trained.model, tmp_path)
    assert again == path and path.read_bytes() == good


def test_export_matches_torch_on_odd_batch(tmp_path, trained):
    import onnxruntime as ort
    import torch

    path = export_onnx(trained.model, tmp_path / "m.onnx")
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run([OUTPUT_NAME], {INPUT_NAME: x})
    with torch.inference_mode():
        ref = trained.model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(out, ref, atol=1e-4, rtol=1e-3)


def test_checker_failure_is_a_value_error_naming_the_file(tmp_path):
    """onnx.checker's ValidationError is no ValueError: unconverted, `compare` printed a traceback."""
    from onnx import TensorProto, helper

    node = helper.make_node("NoSuchOp", [INPUT_NAME], [OUTPUT_NAME])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", 3])],
                              [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", 3])])
    path = tmp_path / "bad.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]), str(path))
    with pytest.raises(ValueError, match=rf"{path} fails onnx.checker: .*NoSuchOp"):
        check_onnx(path)
