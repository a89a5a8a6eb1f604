"""The main job's measurements for one backend: held-out accuracy, latency per batch, file size."""
from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from model.backends import Backend, ModelArtifacts
from model.data import Split
from model.profile import INPUT_NAME, OUTPUT_NAME
from model.runners.base import BackendUnavailable, Runner


@dataclass
class BackendResult:
    backend: str
    framework: str
    precision: str
    available: bool
    reason: str = ""
    accuracy: float | None = None
    top1_agreement: float | None = None  # with the reference backend's predictions
    latency_ms: dict = field(default_factory=dict)  # batch -> {"mean", "median", "runs"}
    file: str = ""
    file_mb: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def predict(runner: Runner, split: Split, batch: int) -> np.ndarray:
    """Top-1 predictions for the split in chunks of about `batch`, kept within the batch range the
    runner accepts: a last chunk below its minimum is topped up with images from the split's start,
    whose predictions are dropped."""
    meta = runner.input_metadata()[INPUT_NAME]
    batch = min(max(batch, meta.min_batch), meta.max_batch)
    chunks = []
    for i in range(0, len(split), batch):
        x = split.x[i : i + batch]
        count = len(x)
        if count < meta.min_batch:
            x = split.x[np.arange(i, i + meta.min_batch) % len(split)]
        chunks.append(runner.infer({INPUT_NAME: x})[OUTPUT_NAME][:count].argmax(-1))
    return np.concatenate(chunks)


def time_batches(runner: Runner, split: Split, batch_sizes, warmup: int = 3, runs: int = 20,
                 budget_s: float = 3.0) -> dict:
    """Wall time of `infer` (host in, host out; the runner syncs before returning) per batch size."""
    out = {}
    for n in batch_sizes:
        x = np.ascontiguousarray(split.x[np.arange(n) % len(split)])
        feed = {INPUT_NAME: x}
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


def measure(backend: Backend, artifacts: ModelArtifacts, holdout: Split, batch_sizes,
            reference_predictions: np.ndarray | None, eval_batch: int = 500, **timing) -> tuple[BackendResult, np.ndarray | None]:
    result = BackendResult(backend.name, backend.framework, backend.precision, available=False)
    try:
        runner = backend.make(artifacts).activate()
    except BackendUnavailable as exc:
        result.reason = str(exc)
        return result, None
    try:
        predictions = predict(runner, holdout, eval_batch)
        result.available = True
        result.accuracy = float((predictions == holdout.y).mean())
        if reference_predictions is not None:
            result.top1_agreement = float((predictions == reference_predictions).mean())
        result.latency_ms = time_batches(runner, holdout, batch_sizes, **timing)
        paths = backend.artifact(artifacts)
        result.file, result.file_mb = ", ".join(map(str, paths)), sum(p.stat().st_size for p in paths) / 1e6
        return result, predictions
    finally:
        runner.deactivate()
