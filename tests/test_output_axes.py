"""Output dims that follow input dims (a stride-2 conv's H is `h // 2`): declared in the spec,
checked at construction, evaluated by the shape checks and named so in the export."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from model import dims
from model.artifacts import ModelArtifacts, check_module_outputs
from model.profile import BatchProfile
from model.sources import from_onnx
from model.spec import BATCH, Axis, ModelSpec, SpecError, TensorSpec

AXES = [Axis("h", 2, 8, 16), Axis("w", 2, 8, 16)]
IMAGE = TensorSpec("image", "float32", (BATCH, 3, "h", "w"))


def _spec(out_shape, net=None, axes=AXES) -> ModelSpec:
    return ModelSpec("stride2", [IMAGE], [TensorSpec("features", "float32", out_shape)],
                     BatchProfile(min=1, opts=(4,), max=8), axes=axes,
                     module=(lambda ctx: net) if net is not None else None)


@pytest.fixture(scope="module")
def conv():
    torch.manual_seed(0)
    return torch.nn.Conv2d(3, 4, kernel_size=2, stride=2).eval()


def test_an_undeclared_output_axis_is_a_spec_error_naming_tensor_name_and_axes():
    with pytest.raises(SpecError, match=r"output 'features' dim 2 is 'h2', whose \['h2'\] names no input axis "
                                        r"\(input axes: \['batch', 'h', 'w'\]\)"):
        _spec((BATCH, 4, "h2", "w"), axes=[*AXES, Axis("h2", 1, 4, 8)])  # a range alone does not tie it to an input


@pytest.mark.parametrize("text", ["h ** 2", "__import__('os').getcwd()", "h / 2", "-h", "h(2)", "h.real", "2.5 * h", "h +"])
def test_anything_beyond_names_ints_and_arithmetic_is_refused(text):
    with pytest.raises(SpecError, match="tensor 'features': dim"):
        _spec((BATCH, 4, text, "w"))


def test_inputs_take_names_only():
    with pytest.raises(SpecError, match=r"input 'image' has dims \['h // 2'\]"):
        ModelSpec("m", [TensorSpec("image", "float32", (BATCH, 3, "h//2", "w"))], [TensorSpec("y", "float32", (BATCH,))],
                  BatchProfile(min=1, opts=(4,), max=8), axes=AXES)


def test_expressions_evaluate_on_each_feeds_sizes():
    spec = _spec((BATCH, 4, "h//2", "(w - 1) // 2 + 1"))
    assert spec.outputs[0].shape[2:] == ("h // 2", "(w - 1) // 2 + 1")  # one spelling, the export's dim name
    feed = spec.sample(3, h=13, w=9)
    assert spec.output_shapes(spec.axis_sizes(feed)) == {"features": (3, 4, 6, 5)}
    with pytest.raises(dims.DimError, match="divides by zero"):
        dims.evaluate("h // (w - w)", {"h": 4, "w": 3})


def test_module_outputs_are_checked_against_the_expression(conv):
    check_module_outputs(_spec((BATCH, 4, "h // 2", "w // 2"), conv), conv)
    with pytest.raises(SpecError, match=r"output 'features' is float32 \(2, 4, 1, 1\) for a batch of 2, "
                                        r"the spec declares float32 \(2, 4, 2, 2\)"):
        check_module_outputs(_spec((BATCH, 4, "h", "w"), conv), conv)


def test_the_export_names_the_dims_by_their_expression_and_reads_back(conv, tmp_path):
    spec = _spec((BATCH, 4, "h // 2", "w // 2"), conv)
    path = ModelArtifacts(spec, tmp_path, progress=False).onnx
    dims_out = onnx.load(str(path)).graph.output[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims_out] == [BATCH, 4, "h // 2", "w // 2"]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for h, w in ((2, 16), (13, 7)):
        feed = spec.sample(3, h=h, w=w)
        (out,) = session.run(None, feed)
        assert out.shape == spec.output_shapes(spec.axis_sizes(feed))["features"] == (3, 4, h // 2, w // 2)
        with torch.inference_mode():
            np.testing.assert_allclose(out, conv(torch.from_numpy(feed["image"])).numpy(), atol=1e-5)
    again = from_onnx(str(path), AXES)
    assert again.outputs == spec.outputs
