"""The regression gate script (.ci/bench-gate, step 2 of .ci/gpu-gate), run for real on one CPU
benchmark: the first run records a baseline, a run slower than the baseline fails, a faster one
passes. The baseline's timings are scaled by hand so the verdict does not hang on this machine's
noise; what is tested is the script and pytest-benchmark's comparison, not the speed."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GATE = ROOT / ".ci" / "bench-gate"
ONE_BENCHMARK = ["-k", "test_end_to_end and onnxruntime-cpu-bs1", "--bench-batch-sizes", "1"]
TIMINGS = ("min", "max", "mean", "median", "q1", "q3", "stddev", "iqr", "ld15iqr", "hd15iqr", "total")


def gate_env(tmp_path: Path, storage: Path, **extra: str) -> dict:
    return {**os.environ, "PY": sys.executable, "BENCH_STORAGE": str(storage),
            "BENCH_JSON": str(tmp_path / "benchmarks.json"), **extra}


def scale_baseline(path: Path, factor: float) -> None:
    data = json.loads(path.read_text())
    for bench in data["benchmarks"]:
        for key in TIMINGS:
            bench["stats"][key] *= factor
    path.write_text(json.dumps(data))


@pytest.mark.slow
def test_gate_records_a_baseline_then_fails_a_regression_and_passes_otherwise(trained, cache_dir, tmp_path):
    # `trained` first: the gate's pytest must find the weights cached, not train them again.
    storage = tmp_path / "baselines"
    env = gate_env(tmp_path, storage)

    def gate() -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(GATE), *ONE_BENCHMARK, "--cache-dir", str(cache_dir),
                               "-p", "no:cacheprovider"], env=env, capture_output=True, text=True, timeout=300)

    first = gate()
    assert first.returncode == 0, first.stdout + first.stderr
    assert "no baseline stored for this machine yet: recording one" in first.stdout
    saved = list(storage.glob("*/*.json"))
    assert len(saved) == 1, saved
    assert [b["name"] for b in json.loads(saved[0].read_text())["benchmarks"]] == ["test_end_to_end[onnxruntime-cpu-bs1]"]

    scale_baseline(saved[0], 0.25)  # the baseline ran four times faster: now is a >10% regression
    regressed = gate()
    out = regressed.stdout + regressed.stderr
    assert regressed.returncode == 1, out
    assert "Comparing against benchmarks from" in out
    assert "Performance has regressed" in out and "Field 'median' has failed PercentageRegressionCheck" in out

    scale_baseline(saved[0], 4 * 10)  # the baseline ran ten times slower: no regression
    passed = gate()
    out = passed.stdout + passed.stderr
    assert passed.returncode == 0, out
    assert "Comparing against benchmarks from" in out and "Performance has regressed" not in out
    assert list(storage.glob("*/*.json")) == saved  # comparing never adds a baseline
    assert (tmp_path / "benchmarks.json").is_file()


def test_gate_that_must_compare_fails_without_a_baseline(tmp_path):
    env = gate_env(tmp_path, tmp_path / "empty", BENCH_REQUIRE_BASELINE="1")
    done = subprocess.run(["bash", str(GATE), *ONE_BENCHMARK], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "no baseline stored for machine id" in done.stderr and "BENCH_REQUIRE_BASELINE=1" in done.stderr
    assert not (tmp_path / "empty").exists() and not (tmp_path / "benchmarks.json").exists()  # nothing ran
