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
        for bench in doc["benchmarks"]:
            info, stats = bench.get("extra_info", {}), bench["stats"]
            if not {"backend", "precision", "mode", "batch"} <= set(info):
                continue  # a benchmark of something else
            data = np.asarray(stats.get("data") or [], float)
            rows.append({
                "backend": info["backend"], "precision": info["precision"], "mode": info["mode"],
                "batch": int(info["batch"]), "median_ms": stats["median"] * 1e3,
                "p90_ms": float(np.percentile(data, 90)) * 1e3 if data.size else None,
                "p99_ms": float(np.percentile(data, 99)) * 1e3 if data.size else None,
                "images_per_s": int(info["batch"]) / stats["median"],
                "gpu_compute_ms": info["gpu_compute_median_s"] * 1e3 if info.get("gpu_compute_median_s") else None,
                "rounds": stats["rounds"], "source": Path(path).name,
                "machine": f"{where}, py{'.'.join(str(machine.get('python_version', '?')).split('.')[:2])}",
                "python": machine.get("python_version"),
            })
    return rows


def add_speedups(rows: list[dict]) -> None:
    medians = {(r["backend"], r["precision"], r["mode"], r["batch"]): r["median_ms"] for r in rows}
    for r in rows:
        refs = [medians.get((*base, r["mode"], r["batch"])) for base in BASELINES[r["mode"]]]
        ref = next((m for m in refs if m), None)
        r["speedup_vs_pytorch_fp32_eager"] = ref / r["median_ms"] if ref else None
        # What the host adds around the device: the same backend's end-to-end call over its
        # device-resident run (TensorRT records both under one name).
        device = medians.get((r["backend"], r["precision"], "device-resident", r["batch"]))
        r["end_to_end_vs_device"] = r["median_ms"] / device if r["mode"] == "end-to-end" and device else None


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
        out += [f"| {name} | {a['precision']} | {100 * a['accuracy']:.2f}% | {a['file_mb']:.2f} |" for name, a in accuracy.items()]
        out.append("")
    for mode in ("device-resident", "end-to-end"):
        chosen = sorted((r for r in rows if r["mode"] == mode), key=lambda r: (r["batch"], r["median_ms"]))
        if not chosen:
            continue
        gpu = mode == "device-resident"  # GPU-side time between CUDA events, where the target has it
        extra = " GPU compute |" if gpu else " Over device-resident |"
        out += [f"## Latency, {mode}", "",
                f"| Batch | Backend | Precision | Median |{extra} p90 | p99 | Images/s | vs PyTorch FP32 eager | Machine |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        for r in chosen:
            cell = _fmt_time(r.get("gpu_compute_ms")) if gpu else _ratio(r.get("end_to_end_vs_device"), ".2f")
            out.append(f"| {r['batch']} | {r['backend']} | {r['precision']} | {_fmt_time(r['median_ms'])} | {cell} | "
                       f"{_fmt_time(r['p90_ms'])} | {_fmt_time(r['p99_ms'])} | {r['images_per_s']:,.0f} | "
                       f"{_ratio(r['speedup_vs_pytorch_fp32_eager'], '.1f')} | {r['machine']} |")
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
    accuracy = accuracy_by_backend(comparison_paths)
    out_dir = Path(out_dir)
    paths = {"json": out_dir / "report.json", "markdown": out_dir / "report.md", "plot": out_dir / "latency.png"}
    cache.atomic_write_json(paths["json"], {"latency": rows, "accuracy": accuracy})
    cache.atomic_write_bytes(paths["markdown"], ("# SimpleCNN backend comparison\n\n" + markdown(rows, accuracy)
                                                    + "\n![latency vs batch](latency.png)\n").encode())
    plot(rows, paths["plot"])
    return paths
