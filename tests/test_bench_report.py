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


def _e2e_files(tmp_path, trt_4096_e2e_s=2.5e-3):
    rows = [("tensorrt-fp16", "fp16", "device-resident", 32, 59e-6, 50e-6), ("tensorrt-fp16", "fp16", "device-resident", 4096, 1.17e-3, 1.1e-3)]
    for mode, s32, s4096 in [("end-to-end", 100e-6, trt_4096_e2e_s), ("end-to-end-pinned", 90e-6, 1.5e-3),
                             ("end-to-end-gpu", 70e-6, 1.25e-3), ("gpu-in-out", 62e-6, 1.2e-3)]:
        rows += [("tensorrt-fp16", "fp16", mode, 32, s32), ("tensorrt-fp16", "fp16", mode, 4096, s4096)]
    trt = _bench_file(tmp_path / "trt.json", "NVIDIA H200", rows)
    doc = json.loads(trt.read_text())
    doc["machine_info"]["h2d_bandwidth"] = {"h2d_pinned_gbs": 50.0, "h2d_pageable_gbs": 9.0, "bytes": 64 << 20}
    for b in doc["benchmarks"]:
        batch = b["extra_info"]["batch"]
        b["extra_info"].update(input_bytes=batch * 12288 if b["extra_info"]["mode"] in ("end-to-end", "end-to-end-pinned") else 0,
                               output_bytes=batch * 400 if b["extra_info"]["mode"] != "gpu-in-out" else 0)
    trt.write_text(json.dumps(doc))
    torch = _bench_file(tmp_path / "torch.json", "NVIDIA H200", [
        ("pytorch-cuda-fp16", "fp16", "end-to-end", 32, 600e-6), ("pytorch-cuda-fp16", "fp16", "end-to-end", 4096, 17e-3)])
    comparison = tmp_path / "comparison.json"
    comparison.write_text(json.dumps({"results": [
        {"backend": "tensorrt-fp16", "available": True, "latency_ms": {"32": {"median": 0.1}, "4096": {"median": 2.6}}},
        {"backend": "pytorch-cuda", "available": True, "latency_ms": {"32": {"median": 0.7}, "4096": {"median": 2.0}}}]}))
    return trt, torch, comparison


def test_floor_is_the_pcie_copy_at_the_measured_bandwidth_plus_gpu_compute(tmp_path):
    trt, torch, _ = _e2e_files(tmp_path)
    rows = bench_report.load_benchmarks([trt, torch])
    bench_report.add_speedups(rows)
    bench_report.add_floors(rows)
    by = {(r["backend"], r["mode"], r["batch"]): r for r in rows}
    e2e = by[("tensorrt-fp16", "end-to-end", 4096)]
    copy_ms = 4096 * (12288 + 400) / 50e9 * 1e3
    assert e2e["floor_ms"] == pytest.approx(1.1 + copy_ms) and e2e["over_floor"] == pytest.approx(2.5 / (1.1 + copy_ms))
    assert by[("tensorrt-fp16", "gpu-in-out", 4096)]["floor_ms"] == pytest.approx(1.1)  # nothing crosses the PCIe
    assert by[("pytorch-cuda-fp16", "end-to-end", 4096)]["floor_ms"] is None  # no GPU compute time recorded
    md = bench_report.markdown(rows, {})
    assert "## simplecnn: latency, end-to-end-pinned" in md and "| Floor (PCIe + GPU) | Over floor |" in md


def test_side_by_side_says_where_the_done_when_holds(tmp_path):
    trt, torch, comparison = _e2e_files(tmp_path)
    text = bench_report.side_by_side(bench_report.load_benchmarks([trt, torch]), [comparison])
    lines = text.splitlines()
    row4096 = next(line for line in lines if line.startswith("4096 |"))
    assert "2.50 ms | 1.17 ms | 2.14x" in row4096 and "+3%" in row4096  # GPU in -> GPU out vs device
    assert "yes (next pytorch-cuda-fp16 17.00 ms)" in row4096 and "NO (next pytorch-cuda 2.00 ms)" in row4096
    assert "e2e <= 2x device from batch 32: FAIL (bs32 1.69x; bs4096 2.14x)" in lines  # each bar with its figures
    assert "e2e at 4096 <= 3 ms: PASS (2.50 ms (1.64 M images/s))" in lines
    assert "ahead of every other backend (main table): FAIL (bs32 100 us yes (next pytorch-cuda 700 us); bs4096 2.60 ms NO " \
           "(next pytorch-cuda 2.00 ms))" in lines
    assert lines[-1] == ("done-when: e2e <= 2x device from batch 32: FAIL; GPU in -> GPU out within 10% of device: PASS; "
                         "ahead of every other backend (benchmarks): PASS; ahead of every other backend (main table): FAIL; "
                         "e2e at 4096 <= 3 ms: PASS")
