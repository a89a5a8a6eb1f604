"""The regression gate run for real on CPU benchmarks, the way CI runs it: same-job comparison of two
checkouts in interleaved fresh processes (forked from the gate's fork server, pinned to this
machine's cores). The head is a patched copy (model.gate.proof) whose ONNX Runtime INT8 runner
busy-waits after each infer(); its other benchmarks run unchanged code, so one comparison is both an
A/A check (they must not fail) and a detection check (INT8 must). The injected delay is large
because this 2-core machine is noisy: under the load of other jobs a 0.3 ms ONNX Runtime call
takes 1.5-6 ms and its processes differ by 5-110% (process-to-process sd), which puts the smallest
detectable regression with 3 processes per side anywhere from 30% to 47x (a 20 ms delay was missed
once in four runs: +975% against an SDR of 1638%); `python -m model.gate proof` repeats both
checks many times over (docs/gate.md, "Calibrating")."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# The gate is a CI tool with scipy in requirements.txt; the GPU kit's Python runs the models, not it.
pytest.importorskip("scipy", reason="the regression gate needs scipy (requirements.txt)")

from model.gate import baseline, sampling
from model.gate.proof import injected_copy
from model.gate.stats import REGRESSED

ROOT = Path(__file__).resolve().parent.parent
GATE = ROOT / ".ci" / "bench-gate"
SELECTION = "end_to_end and onnxruntime-cpu and bs1"
INJECTED = "benchmarks/test_latency.py::test_end_to_end[simplecnn-onnxruntime-cpu-int8-bs1]"
HOST_DELAY_US = 100_000  # ~0.4-6 ms calls here under load: x17-250, beyond an SDR of up to ~x15 (sd 70%)


def test_gate_passes_unchanged_benchmarks_and_fails_the_injected_slowdown(trained, cache_dir, tmp_path):
    # `trained` first: the gate's processes must find the weights cached, not train them again.
    copy = injected_copy(ROOT, HOST_DELAY_US, "onnxruntime-cpu-int8", 0.0)
    try:
        done = subprocess.run([sys.executable, "-m", "model.gate", "compare", "--base", str(ROOT), "--head", str(copy),
                               "-k", SELECTION, "--processes", "3", "--fork-server", "--warmup-processes", "0", "--out",
                               str(tmp_path), "--",
                               f"--cache-dir={cache_dir}", "--model=simplecnn", "--bench-rounds=10",
                               "--bench-warmup=1"],
                              cwd=ROOT, capture_output=True, text=True, timeout=600)
    finally:
        shutil.rmtree(copy.parent, ignore_errors=True)
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    verdicts = {v["name"]: v for v in json.loads((tmp_path / "gate.json").read_text())["verdicts"]}
    assert len(verdicts) == 3 and INJECTED in verdicts, out
    assert verdicts[INJECTED]["verdict"] == REGRESSED, out
    assert [n for n, v in verdicts.items() if v["verdict"] == REGRESSED] == [INJECTED], out  # A/A: no false failure
    for v in verdicts.values():
        assert v["clock"] == "wall" and v["noise_floor"] is not None and v["sdr"] >= 0.05 and v["processes"] == [3, 3]
    assert f"REGRESSED: {INJECTED}" in done.stdout and (tmp_path / "gate.md").is_file()
    raw = sorted(p.name for p in (tmp_path / "raw").glob("*.json"))  # A B B A A B, each process's samples kept
    assert raw == ["base-1.json", "base-2.json", "base-3.json", "head-1.json", "head-2.json", "head-3.json"], raw


def test_stored_baseline_keeps_every_process_and_its_aa_sd(tmp_path):
    side = sampling.Side("head", tmp_path)
    info = {"gpu": {}, "libraries": {"numpy": "2"}, "cpu": {"brand_raw": "x"}}
    for scale in (1.0, 1.1):
        side.add({"machine_info": info, "benchmarks": [
            {"fullname": "b", "extra_info": {}, "stats": {"data": [scale * 1e-3] * 5}},
            {"fullname": "g", "extra_info": {"gpu_compute_samples_s": [scale * 2e-4] * 3}, "stats": {"data": [1.0]}}]})
    saved = baseline.save(side, tmp_path / "b.json")
    # two processes 10% apart: sd of log medians = log(1.1) / sqrt(2)
    assert abs(saved["benchmarks"]["b"]["aa_sd"] - (1.1 ** (1 / 2 ** 0.5) - 1)) < 1e-9
    loaded = baseline.load(tmp_path / "b.json")
    assert loaded.clocks == {"b": "wall", "g": "gpu"} and len(loaded.groups["g"]) == 2


def test_gate_that_must_compare_fails_without_a_baseline(tmp_path):
    inherited = {k: v for k, v in os.environ.items() if k not in ("BENCH_BASE", "GATE_ARGS")}  # CI sets them
    env = {**inherited, "PY": sys.executable, "BENCH_STORAGE": str(tmp_path / "empty"), "BENCH_REQUIRE_BASELINE": "1",
           "GATE_OUT": str(tmp_path / "gate")}
    done = subprocess.run(["bash", str(GATE), "-k", SELECTION], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "no baseline stored for machine id" in done.stderr and "BENCH_REQUIRE_BASELINE=1" in done.stderr
    assert not (tmp_path / "empty").exists() and not (tmp_path / "gate").exists()  # nothing ran


def test_fork_server_runs_each_checkouts_own_code_and_refuses_a_server_that_imported_it(tmp_path, monkeypatch):
    from model.gate.forkserver import ForkServer

    (tmp_path / "test_one.py").write_text("import sys\n\ndef test_one():\n    assert sys.path[0] == %r\n" % str(tmp_path))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    preload = ["pytest", "pytest_benchmark.plugin", "hypothesis"]
    with ForkServer(sys.executable, preload=preload) as server:
        assert server.preloaded == preload
        assert server.run(tmp_path, ["-q", "-p", "no:cacheprovider", "test_one.py"], env, tmp_path / "a.log") == 0
        assert server.run(tmp_path, ["-q", "-p", "no:cacheprovider", "test_one.py"], env, tmp_path / "b.log") == 0
    # A server that imported the project would hand every process that copy of `model`: refused.
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    with ForkServer(sys.executable, preload=["model"]) as server:
        assert server.run(tmp_path, ["-q", "test_one.py"], env, tmp_path / "c.log") == 70
    assert "project modules ['model'] already imported" in (tmp_path / "c.log").read_text()


def test_relative_out_paths_reach_a_forked_process_from_any_directory(tmp_path, monkeypatch):
    """The default --out (out/gate) is relative; each benchmark process runs in its checkout's
    directory, so the paths it is handed must be absolute by then (a fresh clone's `make bench-gate`
    died in the fork server's child: FileNotFoundError 'out/gate/raw/warmup-1.log')."""
    from model.gate.cli import parser

    checkout, caller = tmp_path / "checkout", tmp_path / "caller"
    (checkout / "benchmarks").mkdir(parents=True)
    caller.mkdir()
    (checkout / "benchmarks" / "test_tiny.py").write_text("def test_tiny(benchmark):\n    benchmark(sum, [1, 2])\n")
    monkeypatch.chdir(caller)
    args = parser().parse_args(["check", "--baseline", "b.json", "--checkout", str(checkout)])
    assert args.out == caller / "out" / "gate" and args.baseline == caller / "b.json"
    side = sampling.Side("head", checkout, ["--benchmark-min-rounds=3"])
    monkeypatch.setitem(sampling.FORK, "enabled", True)
    monkeypatch.setitem(sampling.FORK, "preload", ["pytest", "pytest_benchmark.plugin"])
    try:
        result = sampling.run_process(side, sys.executable, Path("out/raw/p.json"), Path("out/raw/p.log"))
    finally:
        sampling.close_servers()
    assert [b["name"] for b in result["benchmarks"]] == ["test_tiny"]
    assert (caller / "out" / "raw" / "p.log").is_file() and not (checkout / "out").exists()
