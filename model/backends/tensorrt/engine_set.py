"""Several TensorRT engines over one batch range, each tuned for another batch.

One engine with two optimization profiles (tuned for 32 and for 4096) ran batch 1 in 50.4 us on
the H200, the same build with only the 32 profile in 43.5 us: TensorRT picked other kernels for
the small profile when it also built the large one. Separate one-profile engines keep each
regime's kernels; each batch goes to the engine that serves it (model.profile.serving_profile):
a static engine built for exactly that batch, else the one tuned nearest it.
"""
from __future__ import annotations

from dataclasses import replace

from model.backends.base import Runner, TensorMeta
from model.backends.tensorrt.runner import TrtRunner
from model.profile import BatchProfile, serving_profile


class TrtEngineSet(Runner):
    stages_inputs = True
    remembers_gpu_feeds = True

    def __init__(self, plans: dict[BatchProfile, bytes], label: str = "fp32", graphs: bool = True,
                 declared: dict[str, TensorMeta] | None = None, runner_options: dict | None = None, **kwargs) -> None:
        """`declared`: the model's input metadata (see TrtRunner); `runner_options`: passed to each
        `TrtRunner` (graphs, upload_half, graph_max_bytes, subbatch_bytes)."""
        super().__init__(**kwargs)
        self._runner_options = runner_options or {}
        if not plans:
            raise ValueError("an engine set needs at least one plan")
        self.name = f"tensorrt-{label}"
        self._plans = plans
        self._label, self._graphs, self._declared = label, graphs, declared
        self.runners: dict[BatchProfile, TrtRunner] = {}
        self._serving: dict[int, TrtRunner] = {}  # batch -> runner, decided once per batch

    def _make(self, plan: bytes) -> TrtRunner:
        return TrtRunner(plan, label=self._label, graphs=self._graphs, declared=self._declared,
                         allow_nonfinite=self.allow_nonfinite, **self._runner_options)

    def _activate(self) -> None:
        try:
            for profile, plan in self._plans.items():
                self.runners[profile] = self._make(plan).activate()
        except BaseException:
            self._deactivate()
            raise
        # The feed is checked before the serving engine is known: no one runner's stream can be
        # handed to a DLPack producer, so it orders its work before the legacy default stream
        # (stream None) and the serving runner waits for that one.
        self._gpu = replace(next(iter(self.runners.values())).gpu_target(), stream=None)

    def _deactivate(self) -> None:
        for runner in self.runners.values():
            runner.deactivate()
        self.runners, self._serving = {}, {}
        self._gpu = None

    def _input_metadata(self) -> dict[str, TensorMeta]:
        metas = [r.input_metadata() for r in self.runners.values()]
        # Shapes from a dynamic engine (batch None), not from one built for a single batch.
        widest = max(metas, key=lambda m: max(t.max_batch - t.min_batch for t in m.values()))

        def span(n: str, i: int):
            ranges = [x[n].ranges[i] for x in metas if x[n].ranges[i] is not None] if widest[n].ranges[i] else []
            return (min(r[0] for r in ranges), max(r[1] for r in ranges)) if ranges else None
        return {n: replace(m, ranges=tuple(span(n, i) for i in range(len(m.shape)))) for n, m in widest.items()}

    def runner_for(self, batch: int) -> TrtRunner:
        """The engine that serves `batch`: built for exactly it, else tuned nearest it."""
        runner = self._serving.get(batch)
        if runner is None:
            profiles = list(self.runners)
            runner = self._serving[batch] = self.runners[profiles[serving_profile(batch, profiles)]]
        return runner

    def pinned_inputs(self, batch: int):
        """The pinned buffers of the engine that serves `batch` (a feed of them skips staging)."""
        self._require_active()
        return self.runner_for(batch).pinned_inputs(batch)

    def _infer(self, feed, outputs="host"):
        batch = next(iter(feed.values())).shape[0]
        return self.runner_for(batch)._infer(feed, outputs)  # the feed was checked by infer()
