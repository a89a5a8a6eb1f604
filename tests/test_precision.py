"""The reduced-precision ONNX variants of every model are what they claim to be."""
import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from model import quantize


def _offered(spec, precision: str) -> None:
    if precision not in spec.precisions:
        pytest.skip(f"{spec.name} is not offered in {precision}: {spec.precision_notes}")


@pytest.fixture(scope="module")
def int8_model(model_artifacts, model_spec):
    _offered(model_spec, "int8")
    return onnx.load(str(model_artifacts.onnx_variant("int8")))


@pytest.fixture(scope="module")
def fp16_model(model_artifacts, model_spec):
    _offered(model_spec, "fp16")
    return onnx.load(str(model_artifacts.onnx_variant("fp16")))


def test_int8_is_qdq_with_symmetric_per_channel_weights(int8_model, onnx_path):
    ops = [n.op_type for n in int8_model.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    init = {i.name: numpy_helper.to_array(i) for i in int8_model.graph.initializer}
    weight_dq = [n for n in int8_model.graph.node if n.op_type == "DequantizeLinear" and init.get(n.input[0]) is not None
                 and init[n.input[0]].dtype == np.int8 and init[n.input[0]].ndim == 4]
    convs = [n for n in onnx.load(str(onnx_path)).graph.node if n.op_type == "Conv"]
    assert len(weight_dq) == len(convs) > 0  # every conv's weights, quantized
    for node in weight_dq:
        scale = init[node.input[1]]
        assert scale.shape == (init[node.input[0]].shape[0],)  # one scale per output channel
    zero_points = [init[n.input[2]] for n in int8_model.graph.node
                   if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2]
    assert zero_points and all(np.all(z == 0) for z in zero_points)  # symmetric: TensorRT needs it
    assert not [n for n, a in init.items() if a.dtype == np.int32]  # float biases: TensorRT cannot parse INT32 DQ


def test_fp16_graph_keeps_its_io_types_and_halves_the_weights(fp16_model, model_artifacts, model_spec):
    declared = {t.name: onnx.helper.np_dtype_to_tensor_dtype(np.dtype(t.dtype)) for t in (*model_spec.inputs, *model_spec.outputs)}
    for value in (*fp16_model.graph.input, *fp16_model.graph.output):
        assert value.type.tensor_type.elem_type == declared[value.name], value.name
    weights = [i for i in fp16_model.graph.initializer if len(i.dims) > 1]
    assert weights and all(w.data_type == onnx.TensorProto.FLOAT16 for w in weights)
    ratio = model_artifacts.onnx_variant("fp16").stat().st_size / model_artifacts.onnx.stat().st_size
    assert 0.45 < ratio < 0.55


def test_int8_file_is_about_a_quarter(model_artifacts, int8_model):
    ratio = model_artifacts.onnx_variant("int8").stat().st_size / model_artifacts.onnx.stat().st_size
    assert 0.2 < ratio < 0.35


def _calibration(arts):
    return arts.spec.calibration_feeds(arts.dataset)


def test_calibration_data_is_part_of_the_cache_key(model_artifacts, int8_model, tmp_path):
    first = model_artifacts.onnx_variant("int8")
    feeds = _calibration(model_artifacts)
    other = quantize.variant(model_artifacts.onnx, "int8", model_artifacts.spec, feeds[: len(feeds) // 2], folder=tmp_path)
    assert other.name != first.name


def test_int8_without_calibration_inputs_is_a_clear_error(model_artifacts, int8_model):
    with pytest.raises(ValueError, match="calibration inputs"):
        quantize.variant(model_artifacts.onnx, "int8", model_artifacts.spec, None)


def test_calibration_never_sees_the_evaluation_inputs(model_artifacts, int8_model):
    from model.evaluate import evaluation_feed

    feed, _ = evaluation_feed(model_artifacts)
    name = model_artifacts.spec.input_names[0]
    evaluated = {row.tobytes() for row in feed[name]}
    assert not any(row.tobytes() in evaluated for f in _calibration(model_artifacts) for row in f[name])
    # The INT8 file the backends run is keyed by the inputs it was calibrated on.
    assert model_artifacts.onnx_variant("int8") == quantize.variant(
        model_artifacts.onnx, "int8", model_artifacts.spec, _calibration(model_artifacts),
        folder=model_artifacts.cache_dir / "onnx")
