"""The reduced-precision ONNX variants are what they claim to be."""
import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from model import cache, quantize


@pytest.fixture(scope="module")
def int8_model(model_artifacts):
    return onnx.load(str(model_artifacts.onnx_variant("int8")))


@pytest.fixture(scope="module")
def fp16_model(model_artifacts):
    return onnx.load(str(model_artifacts.onnx_variant("fp16")))


def test_int8_is_qdq_with_symmetric_per_channel_weights(int8_model):
    ops = [n.op_type for n in int8_model.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    init = {i.name: numpy_helper.to_array(i) for i in int8_model.graph.initializer}
    weight_dq = [n for n in int8_model.graph.node if n.op_type == "DequantizeLinear" and init.get(n.input[0]) is not None
                 and init[n.input[0]].dtype == np.int8 and init[n.input[0]].ndim == 4]
    assert len(weight_dq) == 3  # conv1..conv3
    for node in weight_dq:
        scale = init[node.input[1]]
        assert scale.shape == (init[node.input[0]].shape[0],)  # one scale per output channel
    zero_points = [init[n.input[2]] for n in int8_model.graph.node
                   if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2]
    assert zero_points and all(np.all(z == 0) for z in zero_points)  # symmetric: TensorRT needs it
    assert not [n for n, a in init.items() if a.dtype == np.int32]  # float biases: TensorRT cannot parse INT32 DQ


def test_fp16_graph_keeps_float32_io_and_halves_the_weights(fp16_model, model_artifacts):
    for value in (*fp16_model.graph.input, *fp16_model.graph.output):
        assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    weights = [i for i in fp16_model.graph.initializer if len(i.dims) > 1]
    assert weights and all(w.data_type == onnx.TensorProto.FLOAT16 for w in weights)
    ratio = model_artifacts.onnx_variant("fp16").stat().st_size / model_artifacts.onnx.stat().st_size
    assert 0.45 < ratio < 0.55


def test_int8_file_is_about_a_quarter(model_artifacts):
    ratio = model_artifacts.onnx_variant("int8").stat().st_size / model_artifacts.onnx.stat().st_size
    assert 0.2 < ratio < 0.35


def test_calibration_data_is_part_of_the_cache_key(model_artifacts, dataset):
    first = model_artifacts.onnx_variant("int8")
    other = quantize.variant(model_artifacts.onnx, "int8", dataset.calib.x[: len(dataset.calib) // 2])
    try:
        assert other != first
    finally:
        other.unlink()
        cache.sidecar_path(other).unlink()


def test_int8_without_calibration_images_is_a_clear_error(model_artifacts):
    with pytest.raises(ValueError, match="calibration images"):
        quantize.variant(model_artifacts.onnx, "int8", None)


def test_calibration_never_sees_the_evaluation_split(model_artifacts, dataset):
    holdout = {row.tobytes() for row in dataset.holdout.x}
    assert not any(row.tobytes() in holdout for row in dataset.calib.x)
    # The INT8 file the backends run is keyed by the images it was calibrated on: the calib split's.
    assert model_artifacts.onnx_variant("int8") == quantize.variant(model_artifacts.onnx, "int8", dataset.calib.x)
