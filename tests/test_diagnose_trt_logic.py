"""TensorRT's half of the diagnosis without TensorRT: the bisection when marking every tensor hides
the fault, and the layer precisions a repair sets, against stand-ins for the builder's objects
(the real thing runs in tests/test_diagnose.py's needs_trt tests)."""
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from model.artifacts import ModelArtifacts
from model.backends.registry import BACKENDS
from model.backends.tensorrt import compat
from model.diagnose import trt_layers
from model.diagnose.layers import diagnosis_feed, reference_tensors
from model.sources import from_factory

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def arts(cache_dir):
    return ModelArtifacts(from_factory(str(ROOT / "tests/models/planted.py:fp16_overflow")), cache_dir, progress=False)


@pytest.mark.parametrize("broken_at", [0, 3, 6])
def test_bisection_finds_a_fault_that_marking_everything_hides(arts, monkeypatch, broken_at):
    """An engine whose fusion breaks tensor `broken_at` and everything after it, unless every
    tensor is marked (marking stops the fusion): the bisection must name exactly that tensor."""
    feed = diagnosis_feed(arts, 8)
    tensors, ref = reference_tensors(arts, feed)
    order = [t.name for t in tensors]
    builds = []

    def build_marked(_arts, _backend, names, _feed):
        builds.append(list(names))
        return tuple(names), list(names)

    def run_plan(plan, _arts, _feed):
        fused = len(plan) <= 1
        out = {}
        for name in (*plan, *arts.spec.output_names):
            value = ref[name].copy()
            if fused and order.index(name) >= broken_at:
                value += 1.0 + np.abs(value)
            out[name] = value
        return out

    monkeypatch.setattr(trt_layers, "build_marked", build_marked)
    monkeypatch.setattr(trt_layers, "run_plan", run_plan)
    result = trt_layers.diagnose_trt(arts, BACKENDS["tensorrt-fp16"], feed, tensors, ref)
    assert result.method.startswith("bisected"), result.method
    assert result.first is not None and result.first.tensor == order[broken_at]
    assert not result.outputs_passed
    probes = len(builds) - 2  # the plain engine and the one with everything marked
    assert 1 <= probes <= int(np.ceil(np.log2(len(order)))) + 1 and all(len(b) == 1 for b in builds[2:])


def test_marking_everything_is_kept_when_it_shows_the_fault(arts, monkeypatch):
    feed = diagnosis_feed(arts, 8)
    tensors, ref = reference_tensors(arts, feed)
    monkeypatch.setattr(trt_layers, "build_marked", lambda _a, _b, names, _f: (tuple(names), list(names)))
    monkeypatch.setattr(trt_layers, "run_plan", lambda plan, _a, _f: {
        n: ref[n] * (np.float32(np.inf) if n == tensors[2].name else 1) for n in (*plan, *arts.spec.output_names)})
    result = trt_layers.diagnose_trt(arts, BACKENDS["tensorrt-fp16"], feed, tensors, ref)
    assert result.method.startswith("marked all") and result.first.tensor == tensors[2].name


class _Tensor:
    def __init__(self, name, dtype):
        self.name, self.dtype = name, dtype


class _Layer:
    def __init__(self, name, outputs):
        self.name, self._outputs, self.precision, self.output_types = name, outputs, None, {}
        self.num_outputs = len(outputs)

    def get_output(self, j):
        return self._outputs[j]

    def set_output_type(self, j, dtype):
        self.output_types[j] = dtype


def test_kept_layers_get_float32_precision_and_outputs(arts):
    """By node name or by output tensor; integer (shape) outputs untouched; the builder told to obey."""
    trt = SimpleNamespace(float32="f32", float16="f16", int32="i32", NetworkDefinitionCreationFlag=SimpleNamespace(),
                          BuilderFlag=SimpleNamespace(OBEY_PRECISION_CONSTRAINTS="obey"))
    layers = [_Layer("/big/Gemm", [_Tensor("/big/Gemm_output_0", "f16")]),
              _Layer("(Unnamed Layer* 7) [Shuffle]", [_Tensor("/Reshape_output_0", "f16")]),
              _Layer("/Reshape_shape", [_Tensor("shape", "i32")]),
              _Layer("/stem/Gemm", [_Tensor("/stem/Gemm_output_0", "f16")])]
    network = SimpleNamespace(num_layers=len(layers), get_layer=lambda i: layers[i])
    flags = []
    config = SimpleNamespace(set_flag=flags.append)
    kept = trt_layers.keep_fp32(trt, network, config, arts.onnx, ["/big/Gemm", "/Reshape"])
    assert kept == ["/big/Gemm", "(Unnamed Layer* 7) [Shuffle]"] and flags == ["obey"]
    assert [l.precision for l in layers] == ["f32", "f32", None, None]
    assert layers[0].output_types == {0: "f32"} and layers[2].output_types == {}
    with pytest.raises(ValueError, match=r"\['/nope'\] are not nodes"):
        trt_layers.keep_fp32(trt, network, config, arts.onnx, ["/nope"])
    assert compat.keep_layers_fp32(trt, network, SimpleNamespace(set_flag=flags.append), lambda layer: False) == []
