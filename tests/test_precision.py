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


def check_int8_structure(fp32_path, int8_model) -> int:
    """INT8 as TensorRT's explicit quantization takes it: Q/DQ, every weight op's weights int8 per
    output channel, symmetric, float biases. Returns how many weight ops were checked."""
    ops = [n.op_type for n in int8_model.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    fp32 = onnx.load(str(fp32_path))
    assert not quantize.int8_weight_problems(fp32, int8_model)
    init = {i.name: numpy_helper.to_array(i) for i in int8_model.graph.initializer}
    zero_points = [init[n.input[2]] for n in int8_model.graph.node
                   if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2]
    assert zero_points and all(np.all(z == 0) for z in zero_points)  # symmetric: TensorRT needs it
    assert not [n for n, a in init.items() if a.dtype == np.int32]  # float biases: TensorRT cannot parse INT32 DQ
    return len(quantize.weight_ops(fp32))


def require_weight_ops(name: str, fp32_path) -> None:
    if not quantize.weight_ops(onnx.load(str(fp32_path))):
        pytest.skip(f"{name} has no Conv, ConvTranspose, Gemm or MatMul with constant weights: INT8 has no weights to "
                    "quantize per channel here")


# The variant's size is a bar where the weights are at least this share of the FP32 file; below it
# the graph's own bytes (casts, Q/DQ nodes) dominate and the size is recorded as information.
SIZE_BAR_SHARE = 0.95
# ... within this fraction of the FP32 file: the graph's growth (Q/DQ nodes, casts) and framing.
SIZE_MARGIN = 0.05


def check_size(fp32_path, variant_path, record) -> str:
    """The variant's file against the FP32 graph's own bytes plus the weights as the variant stores
    them; a bar for weight-dominated models, information otherwise (the note says which)."""
    size32, size = fp32_path.stat().st_size, variant_path.stat().st_size
    weights32 = sum(quantize.initializer_bytes(onnx.load(str(fp32_path))).values())
    weights = sum(quantize.initializer_bytes(onnx.load(str(variant_path))).values())
    expected = size32 - weights32 + weights
    share = weights32 / size32
    note = (f"{variant_path.name}: {size} bytes, expected {expected} (graph {size32 - weights32} + weights {weights}); "
            f"weights are {share:.1%} of the FP32 file's {size32}")
    if share >= SIZE_BAR_SHARE:
        assert abs(size - expected) <= SIZE_MARGIN * size32, note
        return note
    record("file_size_information", note)
    return note + f" (information: below {SIZE_BAR_SHARE:.0%} the graph's own bytes dominate)"


def check_fp16(fp16_model, spec) -> None:
    """Float32 in and out as declared, every float weight halved (no float32 matrix left)."""
    declared = {t.name: onnx.helper.np_dtype_to_tensor_dtype(np.dtype(t.dtype)) for t in (*spec.inputs, *spec.outputs)}
    for value in (*fp16_model.graph.input, *fp16_model.graph.output):
        assert value.type.tensor_type.elem_type == declared[value.name], value.name
    weights = [i for i in fp16_model.graph.initializer if len(i.dims) > 1]
    assert weights and all(w.data_type == onnx.TensorProto.FLOAT16 for w in weights)


def check_fp16_weight_bytes(fp32_path, fp16_model) -> None:
    before, after = quantize.initializer_bytes(onnx.load(str(fp32_path))), quantize.initializer_bytes(fp16_model)
    assert after.get("float16", 0) > 0
    assert 2 * after.get("float16", 0) + after.get("float32", 0) == before.get("float32", 0), (before, after)


def test_int8_is_qdq_with_symmetric_per_channel_weights(int8_model, onnx_path, model_spec):
    require_weight_ops(model_spec.name, onnx_path)
    assert check_int8_structure(onnx_path, int8_model) > 0


def test_fp16_graph_keeps_its_io_types_and_halves_the_weights(fp16_model, model_artifacts, model_spec, record_property):
    check_fp16(fp16_model, model_spec)
    check_fp16_weight_bytes(model_artifacts.onnx, fp16_model)
    check_size(model_artifacts.onnx, model_artifacts.onnx_variant("fp16"), record_property)


def test_int8_file_holds_int8_weights_and_its_size_follows(model_artifacts, int8_model, model_spec, record_property):
    require_weight_ops(model_spec.name, model_artifacts.onnx)
    int8_bytes = quantize.initializer_bytes(int8_model).get("int8", 0)
    op_bytes = sum(w.nbytes for _, w in quantize.weight_ops(onnx.load(str(model_artifacts.onnx))))
    assert int8_bytes >= op_bytes // 4  # every weight op's weights stored at a quarter
    check_size(model_artifacts.onnx, model_artifacts.onnx_variant("int8"), record_property)


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
