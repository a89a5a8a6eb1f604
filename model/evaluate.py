"""The main job's measurements for one backend on one model: the metric (top-1 on the held-out
split, where the model has data), agreement with the reference, latency per batch, file size."""
from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from model.artifacts import ModelArtifacts
from model.backends.base import BackendUnavailable, Runner
from model.backends.registry import Backend
from model.compare import degenerate

EVAL_SAMPLES = 256  # rows of sample inputs a model without data is compared on


@dataclass
class BackendResult:
    backend: str
    framework: str
    precision: str
    available: bool
    reason: str = ""
    accuracy: float | None = None  # the model's metric on its held-out split; None without data
    top1_agreement: float | None = None  # with the reference's decisions, for classifier outputs
    max_abs_error: float | None = None  # largest |output - reference| over every output
    # Per output: "scale" (the reference's spread over the feed), "max_abs" (None on the reference's
    # own row) and "degenerate" (why the reference cannot judge it, else None): an error means
    # something only beside the size of what it is an error of.
    outputs: dict = field(default_factory=dict)
    latency_ms: dict = field(default_factory=dict)  # batch -> {"mean", "median", "runs"}
    file: str = ""
    file_mb: float | None = None
    error: str = ""  # why the backend failed mid-run (an export, a build, a run); "" when it did not
    note: str = ""  # how the runner had to run differently from its default (the runner's `note`)

    @property
    def failed(self) -> bool:
        return bool(self.error)

    def to_dict(self) -> dict:
        return asdict(self)


def evaluation_feed(arts: ModelArtifacts) -> tuple[dict, np.ndarray | None]:
    """What every backend is scored on: the held-out split with labels, else seeded sample inputs."""
    if arts.dataset is not None:
        return arts.dataset.holdout, arts.dataset.labels
    return arts.spec.sample(EVAL_SAMPLES, seed=7), None


def run_chunked(runner: Runner, feed: dict, batch: int) -> dict[str, np.ndarray]:
    """All outputs for a feed of many rows, in chunks of about `batch` kept within the runner's
    batch range: a last chunk below its minimum is topped up with rows from the start, whose
    outputs are dropped."""
    meta = next(iter(runner.input_metadata().values()))
    batch = min(max(batch, meta.min_batch), meta.max_batch)
    total = len(next(iter(feed.values())))
    chunks: dict[str, list] = {}
    for i in range(0, total, batch):
        count = min(batch, total - i)
        rows = np.arange(i, i + max(count, meta.min_batch)) % total
        out = runner.infer({k: np.ascontiguousarray(v[rows]) for k, v in feed.items()})
        for name, value in out.items():
            chunks.setdefault(name, []).append(value[:count])
    return {name: np.concatenate(parts) for name, parts in chunks.items()}


def time_batches(runner: Runner, arts: ModelArtifacts, batch_sizes, warmup: int = 3, runs: int = 20,
                 budget_s: float = 3.0) -> dict:
    """Wall time of `infer` (host in, host out; the runner syncs before returning) per batch size."""
    out = {}
    source, _ = evaluation_feed(arts)
    total = len(next(iter(source.values())))
    for n in batch_sizes:
        feed = {k: np.ascontiguousarray(v[np.arange(n) % total]) for k, v in source.items()}
        for _ in range(warmup):
            runner.infer(feed)
        times = []
        deadline = time.perf_counter() + budget_s
        while len(times) < runs and (len(times) < 3 or time.perf_counter() < deadline):
            start = time.perf_counter()
            runner.infer(feed)
            times.append((time.perf_counter() - start) * 1e3)
        out[n] = {"mean": statistics.fmean(times), "median": statistics.median(times), "runs": len(times)}
    return out


def _scales(reference: dict, outputs: dict | None) -> dict:
    """Per output: the reference's spread, the error of `outputs` (None on the reference's own row)
    and why the reference cannot judge it, if it cannot."""
    return {n: {"scale": float(np.asarray(ref, np.float64).std()) if np.size(ref) else 0.0,
                "max_abs": None if outputs is None else float(np.abs(outputs[n].astype(np.float64) - ref).max()),
                "degenerate": degenerate(ref)}
            for n, ref in reference.items()}


def measure(backend: Backend, arts: ModelArtifacts, batch_sizes, reference: dict | None,
            eval_batch: int = 500, is_reference: bool = False, **timing) -> tuple[BackendResult, dict | None]:
    """One backend's row, and its outputs on the evaluation feed (the reference's become `reference`;
    without them, as when the reference failed, the row has no agreement figures).
    A backend that fails (its artifact cannot be made, a run raises) is a row saying why, so the other
    rows, the table and the files are kept; the caller turns failed rows into the exit status."""
    result = BackendResult(backend.name, backend.framework, backend.precision, available=False)
    runner = None
    try:
        runner = backend.runner(arts).activate()
        result.note = runner.note
        feed, labels = evaluation_feed(arts)
        outputs = run_chunked(runner, feed, eval_batch)
        result.available = True
        logits = arts.spec.logits[0] if arts.spec.logits else None
        decide = arts.spec.decisions  # the argmax over the spec's class axis
        if labels is not None and logits:
            result.accuracy = float((decide(outputs[logits]) == labels).mean())
        if is_reference:  # agrees with itself exactly: figures, not gaps, for whoever reads the row
            result.top1_agreement = 1.0 if logits else None
            result.max_abs_error = 0.0
        elif reference is not None:
            if logits:
                result.top1_agreement = float((decide(outputs[logits]) == decide(reference[logits])).mean())
            result.max_abs_error = max(float(np.abs(outputs[n].astype(np.float64) - reference[n]).max())
                                       for n in reference)
        result.outputs = _scales(reference, outputs) if reference is not None else _scales(outputs, None)
        result.latency_ms = time_batches(runner, arts, batch_sizes, **timing)
        paths = backend.artifact(arts)
        result.file, result.file_mb = ", ".join(map(str, paths)), sum(p.stat().st_size for p in paths) / 1e6
        return result, outputs
    except BackendUnavailable as exc:
        result.available, result.reason = False, str(exc)
        return result, None
    except Exception as exc:  # recorded in the row and the exit status, never lost with the other rows
        result.available, result.error = False, f"{type(exc).__name__}: {exc}"
        result.reason = f"failed: {result.error}"
        return result, None
    finally:
        if runner is not None:
            runner.deactivate()
