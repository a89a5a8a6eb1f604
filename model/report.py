"""The side-by-side table of the main job, as text, Markdown and JSON."""
from __future__ import annotations

from pathlib import Path

from model import cache


def _fmt_latency(entry: dict | None) -> str:
    return "-" if not entry else f"{entry['mean']:.3f}"


def _percent(value) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _error(row: dict) -> str:
    """The largest error beside its output's scale (the reference's spread), which gives it meaning."""
    if row.get("max_abs_error") is None:
        return "-"
    measured = [o for o in row.get("outputs", {}).values() if o.get("max_abs") is not None]
    if not measured:
        return f"{row['max_abs_error']:.2g}"
    worst = max(measured, key=lambda o: o["max_abs"])
    return f"{worst['max_abs']:.2g} (scale {worst['scale']:.2g})"


def markdown_table(results: list[dict], batch_sizes: list[int]) -> str:
    head = ["Backend", "Precision", "Accuracy", "Top-1 agreement", "Max abs error", *[f"ms/batch @{n}" for n in batch_sizes],
            "File (MB)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    notes = []
    for r in results:
        if not r["available"]:
            cell = "failed" if r.get("error") else "n/a"
            lines.append("| " + " | ".join([r["backend"], r["precision"], *[cell] * 3, *[cell] * len(batch_sizes), cell]) + " |")
            notes.append(f"- {r['backend']}: " + (f"failed: {r['error']}" if r.get("error") else f"not available: {r['reason']}"))
            continue
        agreement = "-" if r["top1_agreement"] is None else f"{100 * r['top1_agreement']:.2f}%"
        error = _error(r)
        notes += [f"- {r['backend']}: reference output {n!r} is degenerate over the feed ({o['degenerate']}): "
                  "its errors say nothing; load trained weights or warm BatchNorm's statistics"
                  for n, o in r.get("outputs", {}).items() if o.get("degenerate") and o.get("max_abs") is None]
        if r.get("note"):
            notes.append(f"- {r['backend']}: {r['note']}")
        lat = r["latency_ms"]
        cells = [r["backend"], r["precision"], _percent(r["accuracy"]), agreement, error,
                 *[_fmt_latency(lat.get(n, lat.get(str(n)))) for n in batch_sizes], f"{r['file_mb']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def seed_style(results: list[dict]) -> str:
    """The user's original format, one block per backend."""
    blocks = []
    for r in results:
        if not r["available"]:
            blocks.append(f"{r['backend']}\n >>> not available: {r['reason']}")
            continue
        per_batch = ", ".join(f"bs{n}: {v['mean'] / 1e3:.6f} s" for n, v in r["latency_ms"].items())
        blocks.append(f"{r['backend']} ({r['precision']})\n >>> Accuracy: {_percent(r['accuracy'])}\n"
                      f" >>> Average inference time per batch: {per_batch}\n >>> Model file size: {r['file_mb']:.2f} MB")
    return "\n\n".join(blocks) + "\n"


def write(out_dir: str | Path, summary: dict) -> dict[str, Path]:
    out_dir = Path(out_dir)
    paths = {"json": out_dir / "comparison.json", "markdown": out_dir / "comparison.md"}
    cache.atomic_write_json(paths["json"], summary)
    held_out = f"held-out split, {summary['holdout_size']} rows" if summary.get("holdout_size") else "no labels"
    made = summary.get("onnx_export") or {}
    exported = (f"ONNX: written by the {made['exporter']} exporter ("
                + ", ".join(f"{k} {v}" for k, v in sorted(made["versions"].items()) if v) + ")"
                + (f", after the TorchScript one failed: {made['fallback_reason']}" if made.get("fallback_reason") else "")
                + ".\n") if made else ""
    stopped = (f"**Incomplete:** the run stopped while measuring {summary['stopped_at']}; the rows below were "
               "measured before it.\n\n") if summary.get("stopped_at") else ""
    md = (f"# {summary.get('model', 'simplecnn')}: PyTorch vs ONNX Runtime vs TensorRT\n\n{stopped}"
          f"Reference: {summary.get('reference', 'pytorch-cpu')}. Data: {summary['data']} ({held_out}). "
          f"Machine: {summary['machine']}.\n{exported}Latency: mean wall time of one `infer` call, host arrays in and out.\n\n"
          + markdown_table(summary["results"], summary["batch_sizes"]))
    cache.atomic_write_bytes(paths["markdown"], md.encode())
    return paths
