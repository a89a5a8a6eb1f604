"""The report command merges benchmark files from several environments into one readable comparison."""
import json

import pytest

from model import bench_report
from model.cli import main


def _bench_file(path, machine_gpu, rows):
    benchmarks = []
    for backend, precision, mode, batch, seconds, *gpu in rows:
        data = [seconds * f for f in (0.95, 1.0, 1.0, 1.05, 1.3)]
        extra = {"backend": backend, "precision": precision, "mode": mode, "batch": batch}
        if gpu:
            extra["gpu_compute_median_s"] = gpu[0]
        benchmarks.append({
            "name": f"test[{backend}-{batch}]", "group": f"bs{batch}", "extra_info": extra,
            "stats": {"median": seconds, "mean": seconds, "rounds": len(data), "data": data},
        })
    path.write_text(json.dumps({"machine_info": {"gpu": {"gpu": machine_gpu}, "python_version": "3.11.7"},
                                "benchmarks": benchmarks}))
    return path


@pytest.fixture
def files(tmp_path):
    trt = _bench_file(tmp_path / "trt.json", "NVIDIA H200", [
        ("tensorrt-graph", "fp16", "device-resident", 1, 40e-6, 36e-6),
        ("tensorrt-graph", "fp16", "device-resident", 4096, 1.6e-3),
        ("tensorrt-fp16", "fp16", "end-to-end", 1, 80e-6),
        ("tensorrt-fp16", "fp16", "device-resident", 1, 32e-6),
    ])
    torch = _bench_file(tmp_path / "torch.json", "NVIDIA H200", [
        ("pytorch-eager", "fp32", "device-resident", 1, 340e-6),
        ("pytorch-eager", "fp32", "device-resident", 4096, 7e-3),
    ])
    comparison = tmp_path / "comparison.json"
    comparison.write_text(json.dumps({"results": [
        {"backend": "tensorrt-fp16", "available": True, "accuracy": 0.6, "file_mb": 5.3, "precision": "fp16"},
        {"backend": "tensorrt-int8", "available": False, "reason": "no GPU", "precision": "int8"}]}))
    return trt, torch, comparison


def test_merge_computes_speedups_and_percentiles(files):
    rows = bench_report.load_benchmarks(files[:2])
    bench_report.add_speedups(rows)
    by = {(r["backend"], r["batch"]): r for r in rows}
    assert by[("tensorrt-graph", 1)]["speedup_vs_pytorch_fp32_eager"] == pytest.approx(340 / 40)
    assert by[("tensorrt-graph", 4096)]["images_per_s"] == pytest.approx(4096 / 1.6e-3)
    assert by[("tensorrt-graph", 1)]["p99_ms"] > by[("tensorrt-graph", 1)]["median_ms"]
    e2e = next(r for r in rows if r["backend"] == "tensorrt-fp16" and r["mode"] == "end-to-end")
    assert e2e["speedup_vs_pytorch_fp32_eager"] is None  # no e2e baseline measured
    assert e2e["end_to_end_vs_device"] == pytest.approx(80 / 32)
    assert all(r["end_to_end_vs_device"] is None for r in rows if r["mode"] == "device-resident")


def test_report_command_writes_markdown_json_and_plot(files, tmp_path, capsys):
    trt, torch, comparison = files
    out = tmp_path / "report"
    assert main(["report", str(trt), str(torch), "--comparison", str(comparison), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "| 4096 | tensorrt-graph | fp16 | 1.60 ms | - |" in md and "4.4x" in md
    assert "| 1 | tensorrt-graph | fp16 | 40 us | 36 us |" in md  # GPU compute time, where measured
    # End-to-end rows show the host's share instead: over the same backend's device-resident time.
    assert "| 1 | tensorrt-fp16 | fp16 | 80 us | 2.50x | 96 us |" in md
    assert "| 1 | pytorch-eager | fp32 | 340 us | - |" in md  # no GPU time measured for it
    assert "| tensorrt-fp16 | fp16 | 60.00% | 5.30 |" in md
    assert (out / "latency.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "report.json").read_text())["latency"]
    assert "wrote" in capsys.readouterr().out


def test_not_a_benchmark_file_is_a_clear_error(tmp_path, capsys):
    bogus = tmp_path / "x.json"
    bogus.write_text("{}")
    assert main(["report", str(bogus), "--out", str(tmp_path / "r")]) == 2
    assert "not a pytest-benchmark JSON file" in capsys.readouterr().err


def test_not_a_comparison_file_is_a_clear_error(files, tmp_path, capsys):
    trt, _, _ = files
    bogus = tmp_path / "comparison.json"
    bogus.write_text('{"data": "synthetic"}')
    assert main(["report", str(trt), "--comparison", str(bogus), "--out", str(tmp_path / "r")]) == 2
    assert "is not a comparison.json from `python -m model compare`" in capsys.readouterr().err
