"""A diagnosis as people read it: a table in graph order, a JSON file, and a plot of error per layer."""
from __future__ import annotations

from pathlib import Path

from model import cache
from model.diagnose.layers import RANGE, Diagnosis, LayerRow


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _status(row: LayerRow) -> str:
    if row.nonfinite:
        return f"{row.nonfinite} NaN/Inf"
    if row.beyond_range:
        return "beyond range" + ("" if row.passed else ", FAIL")
    return "ok" if row.passed else "FAIL"


def _badness(row: LayerRow) -> float:
    if row.nonfinite or row.rel != row.rel:
        return float("inf")
    return row.rel


def table(diagnosis: Diagnosis, limit: int | None = None) -> str:
    """Markdown: one row per layer; with `limit`, the rows around the first diverging layer and the
    worst ones (a 100-layer model still prints the rows that matter)."""
    rows = diagnosis.rows
    if limit is not None and len(rows) > limit:
        first = diagnosis.first
        at = rows.index(first) if first else 0
        near = set(range(max(0, at - 2), at + limit // 2))
        worst = sorted(range(len(rows)), key=lambda i: -_badness(rows[i]))[: limit - len(near & set(range(len(rows))))]
        rows = [r for i, r in enumerate(rows) if i in near or i in worst]
    lines = ["| # | node | op | tensor | max abs | rel | ref max | out max | range | status |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    first = diagnosis.first
    for r in rows:
        mark = " **<- first**" if r is first else ""
        lines.append(f"| {r.index} | {r.node} | {r.op} | {r.tensor} | {_num(r.max_abs)} | {_num(r.rel)} | "
                     f"{_num(r.ref_absmax)} | {_num(r.out_absmax)} | {_num(r.limit)} | {_status(r)}{mark} |")
    if len(rows) < len(diagnosis.rows):
        lines.append(f"\n({len(rows)} of {len(diagnosis.rows)} layers shown: around the first diverging one and the "
                     "worst; every layer is in the JSON)")
    return "\n".join(lines)


def summary(diagnosis: Diagnosis) -> str:
    first = diagnosis.first
    head = (f"{diagnosis.model} on {diagnosis.backend} ({diagnosis.precision}), {diagnosis.feed_rows} rows, "
            f"{len(diagnosis.rows)} layers, {diagnosis.method}, {diagnosis.seconds:.1f} s")
    if first is None:
        verdict = "every layer within the model's tolerance"
    else:
        why = f"{first.nonfinite} NaN/Inf" if first.nonfinite else f"max abs {first.max_abs:.3g} (rel {first.rel:.3g})"
        verdict = f"first diverging layer: {first.node} ({first.op}) -> {first.tensor}: {why}"
        if first.beyond_range:
            held = "float16's largest value" if first.limit == RANGE["fp16"] else "the INT8 range calibration set"
            verdict += f"; the reference reaches {first.ref_absmax:.3g}, beyond {first.limit:.3g}, {held}"
    return "\n".join([head, verdict, f"final outputs: {diagnosis.outputs}", *diagnosis.notes])


def plot(diagnosis: Diagnosis, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = diagnosis.rows
    x = list(range(len(rows)))
    # Rows with NaN/Inf are drawn as crosses; their error over the finite rest would read as small.
    rel = [r.rel if not r.nonfinite and 0 < r.rel < float("inf") else float("nan") for r in rows]
    fig, ax = plt.subplots(figsize=(max(6.0, min(24.0, len(rows) * 0.18)), 4.0))
    ax.plot(x, rel, marker=".", lw=1, label="max abs error / reference max")
    bad = [i for i, r in enumerate(rows) if r.nonfinite]
    if bad:
        ax.scatter(bad, [1.0] * len(bad), color="red", marker="x", label="NaN/Inf", zorder=3)
    first = diagnosis.first
    if first is not None:
        ax.axvline(rows.index(first), color="orange", ls="--", label=f"first diverging: {first.node}")
    ax.set_yscale("log")
    ax.set_xlabel("layer (graph order)")
    ax.set_ylabel("relative error")
    ax.set_title(f"{diagnosis.model}: {diagnosis.backend}\nagainst ONNX Runtime CPU FP32, per layer", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write(diagnosis: Diagnosis, folder: Path, repair: dict | None = None) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / f"{diagnosis.model}-{diagnosis.backend}"
    data = diagnosis.to_dict() | ({"repair": repair} if repair else {})
    json_path = stem.with_suffix(".json")
    json_path.write_text(cache.json_text(data, indent=1, default=str) + "\n")
    md_path = stem.with_suffix(".md")
    md_path.write_text(summary(diagnosis) + "\n\n" + table(diagnosis) + "\n")
    return {"json": json_path, "markdown": md_path, "plot": plot(diagnosis, stem.with_suffix(".png"))}
