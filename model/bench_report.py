"""`python -m model report`: pytest-benchmark JSON files (+ the main job's comparison.json) merged
into one comparison: accuracy, latency per batch (median, p90, p99), throughput, file size and
speed-up vs PyTorch FP32 eager, as Markdown, JSON and a latency-vs-batch plot.

Benchmark files from different environments (the GPU machine's TensorRT Python and its CUDA
PyTorch Python, say) merge by (backend, precision, mode, batch); the machine each came from is kept.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from model import cache, validate

# Speed-ups are against PyTorch FP32 eager in the same mode (on the GPU when it was measured there).
BASELINES = {"device-resident": [("pytorch-eager", "fp32")],
             "end-to-end": [("pytorch-cuda", "fp32"), ("pytorch-cpu", "fp32")]}
# End-to-end calls by where their input comes from (benchmarks/test_latency.py), in report order.
END_TO_END_MODES = ("end-to-end", "end-to-end-pinned", "end-to-end-gpu", "gpu-in-out")
BENCHMARK_FILE = "a pytest-benchmark JSON file (`pytest benchmarks --benchmark-json=FILE` writes one)"
COMPARISON_FILE = "a comparison.json from `python -m model compare`"


def load_benchmarks(paths) -> list[dict]:
    rows = []
    for path in paths:
        doc = validate.json_document(path, BENCHMARK_FILE)
        if "benchmarks" not in doc:
            raise ValueError(f"{path} is not a pytest-benchmark JSON file (no 'benchmarks' key); "
                             "write one with `pytest benchmarks --benchmark-json=FILE`")
        machine = doc.get("machine_info", {})
        where = (machine.get("gpu") or {}).get("gpu") or machine.get("cpu", {}).get("brand_raw") or machine.get("node", "?")
        bandwidth = (machine.get("h2d_bandwidth") or {}).get("h2d_pinned_gbs")
        for bench in doc["benchmarks"]:
            info, stats = bench.get("extra_info", {}), bench["stats"]
            if not {"backend", "precision", "mode", "batch"} <= set(info):
                continue  # a benchmark of something else
            data = np.asarray(stats.get("data") or [], float)
            rows.append({
                "model": info.get("model", "simplecnn"),  # files from before models were pluggable
                "backend": info["backend"], "precision": info["precision"], "mode": info["mode"],
                "batch": int(info["batch"]), "median_ms": stats["median"] * 1e3,
                "p90_ms": float(np.percentile(data, 90)) * 1e3 if data.size else None,
                "p99_ms": float(np.percentile(data, 99)) * 1e3 if data.size else None,
                "images_per_s": int(info["batch"]) / stats["median"],
                "gpu_compute_ms": info["gpu_compute_median_s"] * 1e3 if info.get("gpu_compute_median_s") else None,
                "rounds": stats["rounds"], "source": Path(path).name, "gpu_name": where,
                "input_bytes": info.get("input_bytes"), "output_bytes": info.get("output_bytes"),
                "h2d_pinned_gbs": bandwidth,
                "machine": f"{where}, py{'.'.join(str(machine.get('python_version', '?')).split('.')[:2])}",
                "python": machine.get("python_version"),
            })
    return rows


def add_speedups(rows: list[dict]) -> None:
    medians = {(r["model"], r["backend"], r["precision"], r["mode"], r["batch"]): r["median_ms"] for r in rows}
    for r in rows:
        refs = [medians.get((r["model"], *base, r["mode"], r["batch"]))
                for base in BASELINES.get(r["mode"], BASELINES["end-to-end"])]
        ref = next((m for m in refs if m), None)
        r["speedup_vs_pytorch_fp32_eager"] = ref / r["median_ms"] if ref else None
        # What the host adds around the device: the same backend's end-to-end call over its
        # device-resident run (TensorRT records both under one name).
        device = medians.get((r["model"], r["backend"], r["precision"], "device-resident", r["batch"]))
        r["end_to_end_vs_device"] = r["median_ms"] / device if r["mode"] != "device-resident" and device else None


def add_floors(rows: list[dict]) -> None:
    """Each end-to-end row's floor: its bytes over the PCIe (input in, output back) at the
    host-to-device bandwidth measured from pinned memory in the benchmark session (any file from
    the same GPU), plus the GPU compute time of the same backend's device-resident run. Serial,
    and counting the feed's own bytes: a pipelined call can overlap the copy with the engine and go
    below it, and so can one that uploads float32 as float16 (TrtRunner's `upload_half`). None
    where a part is unknown (only TensorRT records GPU compute time)."""
    bandwidth = {r["gpu_name"]: r["h2d_pinned_gbs"] for r in rows if r.get("h2d_pinned_gbs")}
    compute = {(r["model"], r["backend"], r["precision"], r["batch"]): r["gpu_compute_ms"]
               for r in rows if r["mode"] == "device-resident" and r.get("gpu_compute_ms")}
    for r in rows:
        r["floor_ms"] = r["over_floor"] = None
        gbs, gpu_ms = bandwidth.get(r["gpu_name"]), compute.get((r["model"], r["backend"], r["precision"], r["batch"]))
        moved = (r.get("input_bytes") or 0) + (r.get("output_bytes") or 0)
        if r["mode"] == "device-resident" or gpu_ms is None or r.get("input_bytes") is None or (moved and not gbs):
            continue
        r["floor_ms"] = gpu_ms + (moved / (gbs * 1e9) * 1e3 if moved else 0.0)
        r["over_floor"] = r["median_ms"] / r["floor_ms"]


def accuracy_by_backend(comparison_paths) -> dict:
    """Accuracy and file size per (framework, precision) from comparison.json files."""
    found = {}
    for path in comparison_paths:
        doc = validate.json_document(path, COMPARISON_FILE)
        if not isinstance(doc.get("results"), list):
            raise ValueError(f"{path} is not a comparison.json from `python -m model compare` (no 'results' list); "
                             "write one with `python -m model compare --out DIR`")
        for r in doc["results"]:
            if r["available"]:
                found[r["backend"]] = {"accuracy": r["accuracy"], "file_mb": r["file_mb"], "precision": r["precision"]}
    return found


def _ratio(value, fmt):
    return "-" if value is None else format(value, fmt) + "x"


def markdown(rows: list[dict], accuracy: dict) -> str:
    out = []
    if accuracy:
        out += ["## Accuracy and file size (held-out split)", "",
                "| Backend | Precision | Top-1 | File (MB) |", "|---|---|---|---|"]
        out += [f"| {name} | {a['precision']} | {'-' if a['accuracy'] is None else format(100 * a['accuracy'], '.2f') + '%'} | "
                f"{a['file_mb']:.2f} |" for name, a in accuracy.items()]
        out.append("")
    models = sorted({r["model"] for r in rows})
    for model, mode in ((m, mode) for m in models for mode in ("device-resident", *END_TO_END_MODES)):
        chosen = sorted((r for r in rows if r["mode"] == mode and r["model"] == model),
                        key=lambda r: (r["batch"], r["median_ms"]))
        if not chosen:
            continue
        gpu = mode == "device-resident"  # GPU-side time between CUDA events, where the target has it
        extra = " GPU compute |" if gpu else " Over device-resident |"
        floor = "" if gpu else " Floor (PCIe + GPU) | Over floor |"
        out += [f"## {model}: latency, {mode}", "",
                f"| Batch | Backend | Precision | Median |{extra} p90 | p99 | Images/s | vs PyTorch FP32 eager |{floor} Machine |",
                "|---|---|---|---|---|---|---|---|---|" + ("" if gpu else "---|---|") + "---|"]
        for r in chosen:
            cell = _fmt_time(r.get("gpu_compute_ms")) if gpu else _ratio(r.get("end_to_end_vs_device"), ".2f")
            floor_cells = "" if gpu else f" {_fmt_time(r.get('floor_ms'))} | {_ratio(r.get('over_floor'), '.2f')} |"
            out.append(f"| {r['batch']} | {r['backend']} | {r['precision']} | {_fmt_time(r['median_ms'])} | {cell} | "
                       f"{_fmt_time(r['p90_ms'])} | {_fmt_time(r['p99_ms'])} | {r['images_per_s']:,.0f} | "
                       f"{_ratio(r['speedup_vs_pytorch_fp32_eager'], '.1f')} |{floor_cells} {r['machine']} |")
        out.append("")
    return "\n".join(out)


def _fmt_time(ms):
    if ms is None:
        return "-"
    return f"{ms * 1e3:.0f} us" if ms < 1 else f"{ms:.2f} ms"


def plot(rows: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    for ax, mode in zip(axes, ("device-resident", "end-to-end")):
        series = {}
        for r in rows:
            if r["mode"] == mode:
                series.setdefault(f"{r['backend']} {r['precision']}", []).append((r["batch"], r["median_ms"]))
        colours = plt.cm.tab20.colors
        for i, (label, points) in enumerate(sorted(series.items())):
            points.sort()
            style = {"fp32": "-", "fp16": "--", "int8": ":"}.get(label.rsplit(" ", 1)[-1], "-")
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", linestyle=style,
                    color=colours[i % len(colours)], label=label)
        ax.set(xscale="log", yscale="log", xlabel="batch size", title=mode)
        ax.grid(True, which="both", alpha=0.3)
        if series:
            ax.legend(fontsize=8)
    axes[0].set_ylabel("median latency per batch (ms)")
    fig.suptitle("SimpleCNN latency vs batch size (lower is better)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def build(bench_paths, comparison_paths, out_dir) -> dict[str, Path]:
    rows = load_benchmarks(bench_paths)
    if not rows:
        raise ValueError(f"no SimpleCNN benchmarks found in {[str(p) for p in bench_paths]}")
    add_speedups(rows)
    add_floors(rows)
    accuracy = accuracy_by_backend(comparison_paths)
    out_dir = Path(out_dir)
    paths = {"json": out_dir / "report.json", "markdown": out_dir / "report.md", "plot": out_dir / "latency.png"}
    cache.atomic_write_json(paths["json"], {"latency": rows, "accuracy": accuracy})
    cache.atomic_write_bytes(paths["markdown"], ("# SimpleCNN backend comparison\n\n" + markdown(rows, accuracy)
                                                    + "\n![latency vs batch](latency.png)\n").encode())
    plot(rows, paths["plot"])
    return paths


def side_by_side(rows: list[dict], comparison_paths=(), backend: str = "tensorrt-fp16") -> str:
    """Issue 12's verdict, per batch: `backend`'s end-to-end time from pageable numpy over its
    device-resident time, from pinned buffers and from GPU arrays, its floor, and whether it is
    ahead of every non-TensorRT backend end-to-end, in the benchmarks and in the main job's table."""
    add_speedups(rows)
    add_floors(rows)
    at = {(r["backend"], r["mode"], r["batch"]): r for r in rows}
    table = {}  # (backend, batch) -> median ms of the main job's end-to-end timing
    for path in comparison_paths:
        for r in validate.json_document(path, COMPARISON_FILE).get("results", []):
            for batch, t in (r.get("latency_ms") or {}).items():
                table[(r["backend"], int(batch))] = t["median"]
    batches = sorted({r["batch"] for r in rows if r["backend"] == backend})
    lines = [f"{backend} end to end, per batch (e2e: pageable numpy in, numpy out; device: graph replay, inputs on the GPU)",
             "batch | e2e | device | e2e/device | pinned | floor (e2e/floor) | GPU in->host | GPU in->GPU | images/s e2e "
             "| ahead in benchmarks | ahead in main table"]
    verdict = []

    def ms(r):
        return _fmt_time(r["median_ms"]) if r else "-"

    def pct(r, device):
        return f"{(r['median_ms'] / device['median_ms'] - 1) * 100:+.0f}%" if r and device else "-"

    def ahead(mine, others):
        if mine is None or not others:
            return "-", None
        name, best = min(others.items(), key=lambda kv: kv[1])
        return f"{'yes' if mine < best else 'NO'} (next {name} {_fmt_time(best)})", mine < best

    for b in batches:
        e2e, device = at.get((backend, "end-to-end", b)), at.get((backend, "device-resident", b))
        pinned, gpu_host, gpu_dev = (at.get((backend, m, b)) for m in ("end-to-end-pinned", "end-to-end-gpu", "gpu-in-out"))
        bench_others = {r["backend"]: r["median_ms"] for r in rows
                        if r["mode"] == "end-to-end" and r["batch"] == b and not r["backend"].startswith("tensorrt")}
        table_others = {name: t for (name, batch), t in table.items() if batch == b and not name.startswith("tensorrt")}
        bench_text, bench_ok = ahead(e2e and e2e["median_ms"], bench_others)
        table_text, table_ok = ahead(table.get((backend, b)), table_others)
        ratio = e2e and e2e.get("end_to_end_vs_device")
        floor = f"{_fmt_time(e2e['floor_ms'])} ({e2e['over_floor']:.2f}x)" if e2e and e2e.get("floor_ms") else "-"
        lines.append(f"{b} | {ms(e2e)} | {ms(device)} | {_ratio(ratio, '.2f')} | {ms(pinned)} | {floor} | "
                     f"{pct(gpu_host, device)} | {pct(gpu_dev, device)} | {e2e['images_per_s']:,.0f} | "
                     f"{bench_text} | {table_text}" if e2e else f"{b} | - | {ms(device)} | - | {ms(pinned)} | - | "
                     f"{pct(gpu_host, device)} | {pct(gpu_dev, device)} | - | {bench_text} | {table_text}")
        gpu_pct = pct(gpu_dev, device)
        if b >= 32:
            verdict.append(("e2e <= 2x device from batch 32", ratio is not None and ratio <= 2, f"bs{b} {_ratio(ratio, '.2f')}"))
        if b == 4096:
            verdict.append(("e2e at 4096 <= 3 ms", e2e is not None and e2e["median_ms"] <= 3,
                            f"{ms(e2e)}" + (f" ({e2e['images_per_s'] / 1e6:.2f} M images/s)" if e2e else "")))
        verdict.append(("GPU in -> GPU out within 10% of device", bool(gpu_dev and device and gpu_dev["median_ms"] <= 1.1 * device["median_ms"]),
                        f"bs{b} {gpu_pct}"))
        verdict.append(("ahead of every other backend (benchmarks)", bool(bench_ok), f"bs{b} {ms(e2e)} {bench_text}"))
        verdict.append(("ahead of every other backend (main table)", bool(table_ok),
                        f"bs{b} {_fmt_time(table[(backend, b)]) if (backend, b) in table else '-'} {table_text}"))
    summary, figures = {}, {}
    for name, ok, figure in verdict:
        summary[name] = summary.get(name, True) and ok
        figures.setdefault(name, []).append(figure)
    # One line per bar with the figures behind it, then the one-line verdict.
    lines += [f"{name}: {'PASS' if ok else 'FAIL'} ({'; '.join(figures[name])})" for name, ok in summary.items()]
    lines.append("done-when: " + "; ".join(f"{name}: {'PASS' if ok else 'FAIL'}" for name, ok in summary.items()))
    return "\n".join(lines)
