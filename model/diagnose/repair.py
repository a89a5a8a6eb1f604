"""Precision repair: a small set of ONNX nodes to keep in float32 so that parity (and accuracy, where
the model has data) passes, proposed as a file the user applies, never applied silently.

The set is searched from the diagnosis: the first diverging layer is kept, the candidate rebuilt
(ONNX Runtime: the converters' own node_block_list / nodes_to_exclude; TensorRT: layer precisions
under OBEY_PRECISION_CONSTRAINTS) and diagnosed again, until parity passes. Should that not converge,
bisection over the flagged layers (then every layer) finds a passing set, and every set is pruned
of nodes it passes without.
"""
from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from model.compare import MAX_ACCURACY_DROP, compare_outputs
from model.diagnose.layers import Diagnosis, diagnosis_feed, reference_tensors
from model.diagnose.run import diagnose

REPAIRABLE = ("fp16", "int8")
MAX_STEPS = 8  # layers added one by one from the diagnosis before bisection takes over


@dataclass
class Trial:
    keep: tuple[str, ...]
    passed: bool
    message: str
    max_abs: float
    latency_ms: float | None = None
    size_bytes: int | None = None


def load_keep_file(path: str | Path) -> dict[str, tuple[str, ...]]:
    """A repair file: {"fp16": [node, ...], "int8": [...]} (what `diagnose --repair` writes)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"--keep-fp32 {path}: not a readable JSON file ({exc})") from None
    if not isinstance(data, dict) or not set(data) <= set(REPAIRABLE) or not all(
            isinstance(v, list) and all(isinstance(n, str) for n in v) for v in data.values()):
        raise ValueError(f"--keep-fp32 {path}: expected {{\"fp16\"|\"int8\": [ONNX node names]}}, received "
                         f"{str(data)[:200]}")
    return {p: tuple(v) for p, v in data.items()}


def write_keep_file(path: Path, precision: str, keep) -> Path:
    """Written beside any other precision's set the file already holds."""
    data = load_keep_file(path) if path.exists() else {}
    data[precision] = tuple(keep)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({p: list(v) for p, v in sorted(data.items())}, indent=1) + "\n")
    return path


def with_keep(arts, precision: str, keep):
    """The same model with `keep` held in float32 at `precision`: its own variants and engines (the
    set is in their cache keys), the module, weights and FP32 export shared."""
    from model.artifacts import ModelArtifacts

    spec = replace(arts.spec, keep_fp32={**arts.spec.keep_fp32, precision: tuple(keep)})
    new = ModelArtifacts(spec, arts.cache_dir, data=arts.context.data, workspace=arts.workspace,
                         epochs=arts.context.epochs, progress=False)
    arts.onnx  # noqa: B018 -- made (or checked) once, here, and shared below
    for made in ("_built", "checkpoint", "onnx", "dataset"):  # cached_property values of the same model
        if made in arts.__dict__:
            new.__dict__[made] = arts.__dict__[made]
    return new


class Repair:
    """Checks candidates with a keep set against the reference, memoised by set."""

    def __init__(self, arts, backend_name: str, feed: dict | None = None) -> None:
        from model.backends.registry import BACKENDS
        from model.evaluate import evaluation_feed, run_chunked

        self.backend = BACKENDS[backend_name]
        if self.backend.precision not in REPAIRABLE:
            raise ValueError(f"--repair keeps layers of a reduced precision in float32; {backend_name} runs "
                             f"{self.backend.precision}, expected a backend of {'/'.join(REPAIRABLE)}")
        self.arts, self.precision = arts, self.backend.precision
        self.feed = feed if feed is not None else diagnosis_feed(arts)
        self.reference = reference_tensors(arts, self.feed)
        self.nodes = {t.node for t in self.reference[0]}
        profile, spec = arts.profile, arts.spec
        source, self.labels = evaluation_feed(arts)
        total = len(next(iter(source.values())))
        # The batches the parity tests use: the profile's ends and the probe sizes inside it.
        sizes = sorted({profile.min, profile.max, *(n for n in (7, 32) if n in profile)})
        self.feeds = {n: {k: np.ascontiguousarray(v[np.arange(n) % total]) for k, v in source.items()} for n in sizes}
        self.eval_feed = source if spec.logits else None
        with BACKENDS[arts.reference].runner(arts).activate() as ref:
            self.expected = {n: ref.infer(f) for n, f in self.feeds.items()}
            self.eval_expected = run_chunked(ref, source, 500) if spec.logits else None
        self.trials: dict[frozenset, Trial] = {}

    def check(self, keep, cost: bool = False) -> Trial:
        key = frozenset(keep)
        if key in self.trials and (not cost or self.trials[key].latency_ms is not None):
            return self.trials[key]
        from model.evaluate import run_chunked

        arts = with_keep(self.arts, self.precision, sorted(keep))
        with self.backend.runner(arts).activate() as runner:
            trial = self._judge(tuple(sorted(keep)), runner, run_chunked)
            if cost:
                feed = self.feeds[max(n for n in self.feeds if n <= 32)]
                for _ in range(3):
                    runner.infer(feed)
                times = []
                for _ in range(20):
                    start = time.perf_counter()
                    runner.infer(feed)
                    times.append(time.perf_counter() - start)
                trial.latency_ms = statistics.median(times) * 1e3
                trial.size_bytes = sum(Path(p).stat().st_size for p in self.backend.artifact(arts))
        self.trials[key] = trial
        return trial

    def _judge(self, keep, runner, run_chunked) -> Trial:
        spec, worst = self.arts.spec, 0.0
        for n, feed in self.feeds.items():
            result = compare_outputs(self.expected[n], runner.infer(feed), self.precision, spec)
            worst = max(worst, result.max_abs) if result.max_abs == result.max_abs else float("inf")
            if not result:
                return Trial(keep, False, f"batch {n}: {result.message}", worst)
        message = f"parity passes at batches {sorted(self.feeds)}"
        if self.eval_feed is not None:
            name = spec.logits[0]
            out = run_chunked(runner, self.eval_feed, 500)[name]
            ref = self.eval_expected[name]
            agreement = float((spec.decisions(out) == spec.decisions(ref)).mean())
            tol = spec.tolerance(self.precision, name)
            message += f"; top-1 agreement {agreement:.4f} (min {tol.min_top1_agreement})"
            if agreement < tol.min_top1_agreement:
                return Trial(keep, False, message, worst)
            if self.labels is not None:
                drop = float((spec.decisions(ref) == self.labels).mean() - (spec.decisions(out) == self.labels).mean())
                message += f"; accuracy drop {drop:.4f} (max {MAX_ACCURACY_DROP[self.precision]})"
                if drop > MAX_ACCURACY_DROP[self.precision] + 1e-9:
                    return Trial(keep, False, message, worst)
        return Trial(keep, True, message, worst)

    def diagnose(self, keep) -> Diagnosis:
        return diagnose(with_keep(self.arts, self.precision, sorted(keep)), self.backend.name, self.feed, self.reference)

    def search(self, diagnosis: Diagnosis, max_steps: int = MAX_STEPS) -> dict:
        start = time.perf_counter()
        before = self.check((), cost=True)
        steps, keep, found = [], [], before.passed
        current = diagnosis
        while not found and len(keep) < max_steps:
            first = next((r for r in current.rows if not r.passed and r.node in self.nodes and r.node not in keep), None)
            if first is None:
                break
            keep.append(first.node)
            trial = self.check(keep)
            steps.append({"added": first.node, "op": first.op, "passed": trial.passed, "message": trial.message})
            found = trial.passed
            if not found:
                current = self.diagnose(keep)
        method = "already passes: nothing to keep" if before.passed else "from the diagnosis, first diverging layer first"
        if not found:
            flagged = list(dict.fromkeys(r.node for r in diagnosis.rows if not r.passed and r.node in self.nodes))
            every = list(dict.fromkeys(t.node for t in self.reference[0]))
            pool = next((p for p in (flagged, every) if p and self.check(p).passed), None)
            if pool is None:
                return self._result(before, None, steps, "no set found: the candidate fails even with every "
                                    f"layer the diagnosis flags ({len(flagged)}) and every layer ({len(every)}) "
                                    "kept in float32", start)
            keep, method = self._bisect(pool), f"bisection over {len(pool)} layers"
        # A layer whose reference values float16 cannot hold stays, even where one runtime passes
        # without it (ONNX Runtime CPU computes float16 Gemms in float32 and elides the round trip).
        protected = {r.node for r in diagnosis.rows if r.beyond_range} if self.precision == "fp16" else set()
        keep = self._prune(keep, protected)
        return self._result(before, self.check(keep, cost=True), steps, method, start)

    def _bisect(self, items: list[str]) -> list[str]:
        """Delta debugging: drop chunks of a passing set while it still passes."""
        chunks = 2
        while len(items) >= 2:
            size = -(-len(items) // chunks)
            parts = [items[i:i + size] for i in range(0, len(items), size)]
            for part in parts:
                rest = [n for n in items if n not in part]
                if rest and self.check(rest).passed:
                    items, chunks = rest, max(chunks - 1, 2)
                    break
            else:
                if chunks >= len(items):
                    break
                chunks = min(len(items), chunks * 2)
        return items

    def _prune(self, keep: list[str], protected: set[str]) -> list[str]:
        for node in [n for n in keep if n not in protected]:
            rest = [n for n in keep if n != node]
            if self.check(rest).passed:
                keep = rest
        return keep

    def _result(self, before: Trial, after: Trial | None, steps, method: str, start: float) -> dict:
        return {"model": self.arts.spec.name, "backend": self.backend.name, "precision": self.precision,
                "keep_fp32": list(after.keep) if after else None, "passed": bool(after and after.passed),
                "method": method, "steps": steps, "builds": len(self.trials), "seconds": round(time.perf_counter() - start, 1),
                "before": asdict(before), "after": asdict(after) if after else None}
