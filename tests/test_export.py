"""The ONNX file of every model: valid, an opset TensorRT 8.6 parses, every dynamic axis dynamic
on the declared inputs and outputs, the same math as PyTorch."""
import onnx
import pytest

from model import zoo
from model.compare import compare_outputs
from model.export import OPSET, check_onnx, export_onnx
from model.spec import SpecError


def test_checker_passes(onnx_path):
    onnx.checker.check_model(str(onnx_path), full_check=True)


def test_opset_is_parseable_by_tensorrt_8_6(onnx_path, model_spec):
    if model_spec.module is None:
        pytest.skip(f"{model_spec.name} is the user's own ONNX file; its opset is theirs")
    opsets = {o.domain or "ai.onnx": o.version for o in onnx.load(str(onnx_path)).opset_import}
    assert opsets == {"ai.onnx": OPSET} and OPSET <= 17


def test_declared_tensors_and_dynamic_axes(onnx_path, model_spec):
    graph = onnx.load(str(onnx_path)).graph
    initializers = {i.name for i in graph.initializer}
    for values, declared in (([v for v in graph.input if v.name not in initializers], model_spec.inputs),
                             (graph.output, model_spec.outputs)):
        assert [v.name for v in values] == [t.name for t in declared]
        for value, t in zip(values, declared):
            dims = value.type.tensor_type.shape.dim
            for d, want in zip(dims, t.shape):
                if isinstance(want, str):
                    assert d.dim_param and not d.HasField("dim_value"), (t.name, want)
                else:
                    assert d.dim_value == want, (t.name, want)


def test_no_training_ops_remain(onnx_path):
    ops = {n.op_type for n in onnx.load(str(onnx_path)).graph.node}
    assert "Dropout" not in ops and "BatchNormalization" not in ops


def test_fixed_batch_export_is_rejected(tmp_path, onnx_path, model_spec):
    path = tmp_path / "fixed.onnx"
    model = onnx.load(str(onnx_path))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 32
    onnx.save(model, str(path))
    with pytest.raises(SpecError, match=f"input '{model_spec.inputs[0].name}' has a fixed batch dim 32"):
        check_onnx(path, model_spec)


def test_export_matches_torch_on_odd_sizes(tmp_path, model_artifacts, model_spec):
    import onnxruntime as ort

    from model.backends.pytorch import as_outputs

    if not model_artifacts.has_module:
        pytest.skip(f"no PyTorch module for {model_spec.name} here: {model_artifacts._built}")
    import torch

    path = export_onnx(model_artifacts.module, model_spec, tmp_path / "m.onnx")
    feed = model_spec.sample(3, seed=5, **{a.name: max(a.min, min(a.max, 5)) for a in model_spec.axes})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = dict(zip(model_spec.output_names, session.run(model_spec.output_names, feed)))
    with torch.inference_mode():
        ref = as_outputs(model_artifacts.module(*[torch.from_numpy(feed[n]) for n in model_spec.input_names]),
                         model_spec.output_names)
    result = compare_outputs({n: t.numpy() for n, t in ref.items()}, out, "fp32", model_spec)
    assert result, result.message


def test_damaged_cached_onnx_is_exported_again(tmp_path, model_artifacts, model_spec):
    from model.artifacts import ModelArtifacts

    if not model_artifacts.has_module:
        pytest.skip(f"no PyTorch module for {model_spec.name} here to export again")
    fresh = ModelArtifacts(model_spec, tmp_path)
    fresh._built = model_artifacts._built  # the same module, a fresh cache
    path = fresh.onnx
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    again = ModelArtifacts(model_spec, tmp_path)
    again._built = model_artifacts._built
    assert again.onnx == path and path.read_bytes() == good


def test_checker_failure_is_a_value_error_naming_the_file(tmp_path):
    """onnx.checker's ValidationError is no ValueError: unconverted, `compare` printed a traceback."""
    from onnx import TensorProto, helper

    node = helper.make_node("NoSuchOp", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])])
    path = tmp_path / "bad.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]), str(path))
    with pytest.raises(ValueError, match=rf"{path} fails onnx.checker: .*NoSuchOp"):
        check_onnx(path, zoo.get("simplecnn"))
