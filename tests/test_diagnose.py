"""Layer-by-layer diagnosis and precision repair (model/diagnose), proven on models with a planted
fault: float16 overflow at `big`, an INT8 outlier channel at `wide` (tests/models/planted.py)."""
import contextlib
import io
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest

from model.artifacts import ModelArtifacts
from model.backends.registry import BACKENDS
from model.compare import compare_outputs
from model.diagnose import repair
from model.diagnose.layers import diagnosis_feed, float_tensors
from model.diagnose.run import diagnose
from model.sources import from_factory
from model.spec import SpecError
from tests import background
from tests.models import planted

ROOT = Path(__file__).resolve().parent.parent
PLANTED = {"fp16": ("tests/models/planted.py:fp16_overflow", planted.FP16_LAYER),
           "int8": ("tests/models/planted.py:int8_outlier", planted.INT8_LAYER)}
ORT = {"fp16": "onnxruntime-cpu-fp16", "int8": "onnxruntime-cpu-int8"}
# TensorRT FP16 from the FP32 graph with the builder flag, from the typed FP16 graph, and INT8 (Q/DQ).
TRT = {"tensorrt-fp16": "fp16", "tensorrt-fp16-typed": "fp16", "tensorrt-int8": "int8"}


@pytest.fixture(scope="module")
def planted_arts(cache_dir):
    made = {}

    def get(precision: str) -> ModelArtifacts:
        if precision not in made:
            spec = from_factory(str(ROOT / PLANTED[precision][0]))
            made[precision] = ModelArtifacts(spec, cache_dir, progress=False)
        return made[precision]
    return get


def planted_node(arts, precision: str) -> str:
    """The ONNX node of the planted layer: the one that reads `<layer>.weight`."""
    weight = f"{PLANTED[precision][1]}.weight"
    (node,) = [n.name for n in onnx.load(str(arts.onnx)).graph.node if weight in n.input]
    return node


def _check_names_planted_layer(arts, precision, backend_name):
    result = diagnose(arts, backend_name)
    first = result.first
    assert first is not None, f"{backend_name}: no layer diverges; outputs: {result.outputs}"
    assert first.node == planted_node(arts, precision), f"{backend_name} names {first.node}:\n{result.rows}"
    # Layers before it were compared and held: the diagnosis did not simply name the first layer.
    assert result.rows.index(first) >= 2 and all(r.passed for r in result.rows[: result.rows.index(first)])
    if precision == "fp16":
        assert first.nonfinite > 0 and first.beyond_range and first.ref_absmax > 65504
    else:  # the outlier channel's range, which the per-tensor scale had to cover
        assert first.nonfinite == 0 and first.ref_absmax > 1000
    return result


def _check_repair_passes(arts, precision, backend_name, tmp_path):
    fixer = repair.Repair(arts, backend_name)
    result = fixer.search(diagnose(arts, backend_name, fixer.feed, fixer.reference))
    assert not result["before"]["passed"] and result["passed"], json.dumps(result, indent=1, default=str)
    assert planted_node(arts, precision) in result["keep_fp32"]
    assert len(result["keep_fp32"]) <= 3, result["keep_fp32"]  # a small set, not the whole graph
    assert result["after"]["latency_ms"] > 0 and result["after"]["size_bytes"] > 0
    # The proposal goes through its file and the spec, as a user applies it, and parity then passes.
    path = repair.write_keep_file(tmp_path / "keep.json", precision, result["keep_fp32"])
    fixed = ModelArtifacts(replace(arts.spec, keep_fp32=repair.load_keep_file(path)), arts.cache_dir, progress=False)
    feed = diagnosis_feed(arts, 32)
    with BACKENDS[arts.reference].runner(arts) as ref, BACKENDS[backend_name].runner(fixed) as fixed_run, \
            BACKENDS[backend_name].runner(arts) as broken:
        expected = ref.infer(feed)
        assert compare_outputs(expected, fixed_run.infer(feed), precision, arts.spec)
        assert not compare_outputs(expected, broken.infer(feed), precision, arts.spec)


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_diagnosis_names_the_planted_layer_first(planted_arts, precision):
    _check_names_planted_layer(planted_arts(precision), precision, ORT[precision])


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_repair_makes_parity_pass(planted_arts, precision, tmp_path):
    _check_repair_passes(planted_arts(precision), precision, ORT[precision], tmp_path)


@pytest.mark.needs_trt
@pytest.mark.parametrize("backend_name", list(TRT))
def test_tensorrt_diagnosis_names_the_planted_layer_first(planted_arts, backend_name):
    precision = TRT[backend_name]
    result = _check_names_planted_layer(planted_arts(precision), precision, backend_name)
    assert result.method.startswith(("marked all", "bisected")), result.method


@pytest.mark.needs_trt
@pytest.mark.parametrize("backend_name", list(TRT))
def test_tensorrt_repair_makes_parity_pass(planted_arts, backend_name, tmp_path):
    precision = TRT[backend_name]
    _check_repair_passes(planted_arts(precision), precision, backend_name, tmp_path)


def test_every_float_tensor_in_graph_order(planted_arts):
    """Rows are the FP32 graph's computed float tensors in node order, weights and shapes left out."""
    arts = planted_arts("fp16")
    model = onnx.load(str(arts.onnx))
    result = diagnose(arts, ORT["fp16"])
    assert [r.tensor for r in result.rows] == [t.name for t in float_tensors(model)]
    assert [r.index for r in result.rows] == sorted(r.index for r in result.rows)
    assert {r.op for r in result.rows} >= {"Gemm", "Relu", "Reshape", "LayerNormalization"}
    assert "Constant" not in {r.op for r in result.rows}


def test_fp16_repair_keeps_blocked_outputs_in_float32(planted_arts):
    """The converter's own node_block_list sends a blocked node's output through float16 on its way
    to the next blocked node; the variant built with keep_fp32 must not."""
    arts = planted_arts("fp16")
    node = planted_node(arts, "fp16")
    (reshape,) = [n.name for n in onnx.load(str(arts.onnx)).graph.node if n.op_type == "Reshape"][:1]
    path = repair.with_keep(arts, "fp16", [node, reshape]).onnx_variant("fp16")
    assert path != arts.onnx_variant("fp16")  # the kept set is in the cache key
    graph = onnx.shape_inference.infer_shapes(onnx.load(str(path))).graph
    types = {v.name: v.type.tensor_type.elem_type for v in graph.value_info}
    producer = {n.name: n for n in graph.node}
    out = producer[node].output[0]
    assert types[out] == onnx.TensorProto.FLOAT
    assert out in producer[reshape].input  # read directly, with no float16 cast between


def test_keep_fp32_names_are_checked_before_building(planted_arts, tmp_path):
    arts = planted_arts("int8")
    with pytest.raises(ValueError, match=r"\['/no/such/node'\] are not nodes of"):
        repair.with_keep(arts, "int8", ["/no/such/node"]).onnx_variant("int8")
    bad = tmp_path / "keep.json"
    bad.write_text(json.dumps({"fp64": ["x"]}))
    with pytest.raises(ValueError, match="expected .*fp16.*int8"):
        repair.load_keep_file(bad)
    with pytest.raises(SpecError, match="keep_fp32"):
        replace(arts.spec, keep_fp32={"int8": "/wide/Gemm"})  # a string, not a list of names


def test_cli_prints_the_table_and_writes_json_and_plot(cache_dir, tmp_path):
    from model.cli import main

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["diagnose", "--model", str(ROOT / PLANTED["int8"][0]), "--backend", ORT["int8"], "--repair",
                     "--rows", "8", "--out", str(tmp_path), "--cache-dir", str(cache_dir)])
    text = printed.getvalue()
    assert code == 0, text
    assert "| /wide/Gemm | Gemm |" in text and "<- first" in text and "keep in float32:" in text
    data = json.loads((tmp_path / f"planted-int8-{ORT['int8']}.json").read_text())
    assert data["first_diverging"]["node"] == "/wide/Gemm" and len(data["layers"]) == 4
    assert data["repair"]["passed"] and Path(data["repair"]["file"]).exists()
    png = tmp_path / f"planted-int8-{ORT['int8']}.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    proposal = json.loads(Path(data["repair"]["file"]).read_text())
    assert proposal == {"int8": data["repair"]["keep_fp32"]}


def test_cli_refuses_a_pytorch_backend(cache_dir, tmp_path, capsys):
    from model.cli import main

    code = main(["diagnose", "--model", str(ROOT / PLANTED["int8"][0]), "--backend", "pytorch-cpu",
                 "--out", str(tmp_path), "--cache-dir", str(cache_dir)])
    assert code == 2 and "has no ONNX tensor names" in capsys.readouterr().err


def _parity_on_the_planted_fp16_model(config, scratch: Path) -> background.Command:
    return background.Command(
        [sys.executable, "-m", "pytest", "tests/test_parity.py", "-q", "-p", "no:cacheprovider",
         "--model", PLANTED["fp16"][0], "--batch-sizes", "8", f"--cache-dir={Path(config.getoption('--cache-dir')).resolve()}",
         "-k", f"test_outputs_match_the_reference and {ORT['fp16']}-bs8"], str(ROOT), timeout=300)


@background.register(_parity_on_the_planted_fp16_model)
def test_a_failing_parity_test_names_the_first_diverging_layer(request):
    """The parity test itself, run on the planted FP16 model: its message ends with the layer."""
    proc, _ = background.result(request)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "first diverging layer: /big/Gemm (Gemm)" in proc.stdout, proc.stdout[-3000:]
    assert f"python -m model diagnose --model {PLANTED['fp16'][0]} --backend {ORT['fp16']}" in proc.stdout


def test_a_foreign_model_gets_a_row_per_layer(cache_dir):
    """torchvision's MobileNetV3 (nobody here wrote it): every float tensor compared, the final
    outputs' verdict the same as the parity comparison's."""
    torchvision = pytest.importorskip("torchvision")
    import torch

    from model.profile import BatchProfile
    from model.spec import BATCH, ModelSpec, TensorSpec

    torch.manual_seed(0)
    net = torchvision.models.mobilenet_v3_small(weights=None, num_classes=10).eval()
    spec = ModelSpec(name="mobilenet-v3-small-diag", inputs=[TensorSpec("input", "float32", (BATCH, 3, 32, 32))],
                     outputs=[TensorSpec("logits", "float32", (BATCH, 10))], profile=BatchProfile(min=1, opts=(2,), max=4),
                     module=lambda ctx: net, logits=("logits",), identity={"torchvision": "mobilenet_v3_small", "seed": 0})
    arts = ModelArtifacts(spec, cache_dir, progress=False)
    feed = diagnosis_feed(arts, 2)
    result = diagnose(arts, ORT["fp16"], feed)
    assert len(result.rows) == len(float_tensors(onnx.load(str(arts.onnx)))) > 100
    assert all(np.isfinite(r.max_abs) for r in result.rows)
    with BACKENDS[arts.reference].runner(arts) as ref, BACKENDS[ORT["fp16"]].runner(arts) as fp16:
        verdict = compare_outputs(ref.infer(feed), fp16.infer(feed), "fp16", spec)
    assert result.outputs_passed == bool(verdict), (result.outputs, verdict.message)


def _refuse(token: str):
    raise ValueError(f"bare {token} in JSON")


def test_the_json_of_a_diverging_layer_is_json_any_reader_parses(tmp_path):
    """NaN and Inf appear exactly when a conversion diverges; Python writes them as bare tokens that
    JSON forbids (jq and JavaScript refuse the file). They are written as strings instead."""
    from model.diagnose import report
    from model.diagnose.layers import Diagnosis, LayerRow

    row = LayerRow(index=0, node="/wide/Gemm", op="Gemm", tensor="h", max_abs=float("inf"), rel=float("nan"),
                   nonfinite=3, ref_absmax=7.0e4, out_absmax=float("-inf"), limit=65504.0, passed=False)
    paths = report.write(Diagnosis("m", "onnxruntime-cpu-fp16", "fp16", [row], "marked", 4), tmp_path)
    data = json.loads(paths["json"].read_text(), parse_constant=_refuse)
    layer = data["layers"][0]
    assert (layer["max_abs"], layer["rel"], layer["out_absmax"]) == ("Infinity", "NaN", "-Infinity")
    assert data["first_diverging"]["node"] == "/wide/Gemm"


def test_tensors_the_candidate_graph_lacks_are_reported_not_marked():
    """A reduced-precision graph without one of the FP32 graph's tensors (the quantizer folded a
    DistilBERT's attention-mask Where): marking it made ONNX Runtime refuse the whole graph."""
    from onnx import TensorProto, helper

    from model.diagnose.layers import mark_outputs, run_marked

    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Neg", ["a"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    assert [o.name for o in mark_outputs(model, ["a", "folded_away"]).graph.output] == ["y", "a"]
    out = run_marked(model, {"x": np.array([-1.0, 2.0], np.float32)}, ["a", "folded_away"], ["CPUExecutionProvider"])
    assert set(out) == {"a", "y"} and out["a"].tolist() == [0.0, 2.0]
