"""ONNX Runtime sessions created past a native crash (model/backends/ort_session.py): a float16
graph's session is created first in a child process, down the settings until one survives; the
setting is cached with the artifacts and said in the report."""
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from model.backends import ort_session
from model.backends.ort_session import SETTINGS, SessionCrash, Setting

CPU = ["CPUExecutionProvider"]


def transpose_matmul(dtype=np.float16, seed: int = 0) -> bytes:
    """A GRU tagger's head, reduced: Transpose(1, 0, 2) -> MatMul -> float32 output. In float16 it
    crashed onnxruntime 1.31.1's NchwcTransformer (SIGSEGV at session creation)."""
    elem = TensorProto.FLOAT16 if dtype == np.float16 else TensorProto.FLOAT
    weight = numpy_helper.from_array(np.random.default_rng(seed).random((8, 3)).astype(dtype), "w")
    nodes = [helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2]), helper.make_node("MatMul", ["xt", "w"], ["y16"]),
             helper.make_node("Cast", ["y16"], ["y"], to=TensorProto.FLOAT)]
    graph = helper.make_graph(nodes, "head", [helper.make_tensor_value_info("x", elem, ["n", "s", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()


def test_a_float16_graph_that_crashes_onnxruntime_runs_with_the_next_setting(caplog):
    graph = transpose_matmul()
    if ort_session.probe(graph, SETTINGS[0], CPU) >= 0:
        pytest.skip(f"onnxruntime {ort.__version__} no longer crashes on this graph: the fallback is tested below with a stand-in probe")
    session, setting = ort_session.create(graph, CPU)
    assert f"the graph: {setting.note}" in caplog.text
    assert setting == Setting("ORT_ENABLE_ALL", ("NchwcTransformer",), setting.note)
    assert setting.note == (f"onnxruntime {ort.__version__} crashed creating the session (SIGSEGV with all graph "
                            "optimizations); it runs with all graph optimizations but NchwcTransformer")
    x = np.random.default_rng(1).standard_normal((2, 5, 8)).astype(np.float16)
    w = numpy_helper.to_array(onnx.load_from_string(graph).graph.initializer[0])
    expected = np.matmul(x.transpose(1, 0, 2).astype(np.float32), w.astype(np.float32))
    np.testing.assert_allclose(session.run(None, {"x": x})[0], expected, rtol=2e-3, atol=2e-3)


@pytest.fixture
def probes(monkeypatch):
    """A stand-in for the child process: the exit status each setting gets, and the calls made."""
    calls, codes = [], {}

    def probe(graph, setting, providers):
        calls.append(setting)
        return codes.get(setting, 0)

    monkeypatch.setattr(ort_session, "probe", probe)
    return calls, codes


def test_the_first_surviving_setting_is_taken_and_every_crash_is_named(probes):
    calls, codes = probes
    codes.update({SETTINGS[0]: -11, SETTINGS[1]: -6, SETTINGS[2]: -11})
    setting = ort_session.safe_setting(transpose_matmul(), CPU)
    assert (setting.level, setting.disabled) == ("ORT_ENABLE_BASIC", ())
    assert ("(SIGSEGV with all graph optimizations; SIGABRT with all graph optimizations but NchwcTransformer; "
            "SIGSEGV with extended graph optimizations); it runs with basic graph optimizations") in setting.note
    assert calls == list(SETTINGS[:4])


def test_a_graph_that_crashes_at_every_setting_is_an_error_naming_it(probes, tmp_path):
    calls, codes = probes
    codes.update({s: -11 for s in SETTINGS})
    path = tmp_path / "head.onnx"
    path.write_bytes(transpose_matmul())
    with pytest.raises(SessionCrash, match=rf"{path}: onnxruntime {ort.__version__} crashed creating a session on "
                                           r"\['CPUExecutionProvider'\] at every optimization setting \(SIGSEGV with all"):
        ort_session.create(path, CPU)
    assert calls == list(SETTINGS)


def test_a_child_that_fails_without_crashing_ends_the_search_at_the_first_setting(probes, tmp_path):
    """An invalid graph exits 1 in the child: the session made here raises its real error."""
    calls, codes = probes
    codes[SETTINGS[0]] = 1
    assert ort_session.safe_setting(transpose_matmul(), CPU) == SETTINGS[0] and calls == [SETTINGS[0]]


def test_a_float32_graph_is_not_probed(probes):
    calls, _ = probes
    session, setting = ort_session.create(transpose_matmul(np.float32), CPU)
    assert setting == SETTINGS[0] and calls == [] and session.get_outputs()[0].name == "y"


def test_the_setting_is_cached_by_graph_runtime_and_providers(probes, tmp_path, monkeypatch):
    calls, codes = probes
    codes[SETTINGS[0]] = -11
    graph = transpose_matmul()
    first = ort_session.safe_setting(graph, CPU, tmp_path)
    assert ort_session.safe_setting(graph, CPU, tmp_path) == first and len(calls) == 2  # the second from the cache
    assert first.disabled == ("NchwcTransformer",) and "crashed" in first.note
    ort_session.safe_setting(transpose_matmul(seed=1), CPU, tmp_path)  # other weights: another graph
    assert len(calls) == 4
    monkeypatch.setattr(ort, "__version__", "0.0.0")  # an upgraded runtime may crash elsewhere or not at all
    ort_session.safe_setting(graph, CPU, tmp_path)
    assert len(calls) == 6



def test_the_report_says_what_the_session_runs_without(tmp_path, capsys):
    """The GRU tagger of the zoo, whose float16 graph crashed pytest itself before (SIGSEGV)."""
    from model.cli import main

    assert main(["compare", "--model", "tests/models/recurrent_tagger.py:factory", "--backends", "onnxruntime-cpu-fp16",
                 "--batch-sizes", "1", "--runs", "2", "--out", str(tmp_path), "--cache-dir", str(tmp_path / "cache")]) == 0
    row = json.loads((tmp_path / "gru-tagger" / "comparison.json").read_text())["results"][1]
    graph = Path(row["file"])
    crashes = ort_session.probe(graph, SETTINGS[0], CPU) < 0
    assert row["available"] and row["note"] == ort_session.safe_setting(graph, CPU, tmp_path / "cache").note
    assert ("NchwcTransformer" in row["note"]) == crashes
    assert (f"- onnxruntime-cpu-fp16: {row['note']}" in (tmp_path / "gru-tagger" / "comparison.md").read_text()) == crashes
