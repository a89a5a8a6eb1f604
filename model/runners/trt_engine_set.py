"""Several TensorRT engines over one batch range, each tuned for another batch.

One engine with two optimization profiles (tuned for 32 and for 4096) ran batch 1 in 50.4 us on
the H200, the same build with only the 32 profile in 43.5 us: TensorRT picked other kernels for
the small profile when it also built the large one. Separate one-profile engines keep each
regime's kernels; each batch goes to the engine tuned nearest it (on a log scale).
"""
from __future__ import annotations

from model.profile import nearest_opt
from model.runners.base import Runner, TensorMeta
from model.runners.trt_runner import TrtRunner


class TrtEngineSet(Runner):
    def __init__(self, plans: dict[int, bytes], label: str = "fp32", graphs: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        if not plans:
            raise ValueError("an engine set needs at least one plan")
        self.name = f"tensorrt-{label}"
        self._plans = dict(sorted(plans.items()))
        self._label, self._graphs = label, graphs
        self.runners: dict[int, TrtRunner] = {}

    def _make(self, plan: bytes) -> TrtRunner:
        return TrtRunner(plan, label=self._label, graphs=self._graphs, allow_nonfinite=self.allow_nonfinite)

    def _activate(self) -> None:
        try:
            for opt, plan in self._plans.items():
                self.runners[opt] = self._make(plan).activate()
        except BaseException:
            self._deactivate()
            raise

    def _deactivate(self) -> None:
        for runner in self.runners.values():
            runner.deactivate()
        self.runners = {}

    def _input_metadata(self) -> dict[str, TensorMeta]:
        metas = [r.input_metadata() for r in self.runners.values()]
        return {n: TensorMeta(m.dtype, m.shape, min(x[n].min_batch for x in metas), max(x[n].max_batch for x in metas))
                for n, m in metas[0].items()}

    def runner_for(self, batch: int) -> TrtRunner:
        """The engine tuned nearest `batch`, of those whose range holds it."""
        fits = [opt for opt, r in self.runners.items()
                if all(m.min_batch <= batch <= m.max_batch for m in r.input_metadata().values())]
        opts = fits or list(self.runners)
        return self.runners[opts[nearest_opt(batch, opts)]]

    def _infer(self, feed):
        batch = next(iter(feed.values())).shape[0]
        return self.runner_for(batch)._infer(feed)  # the feed was checked by infer()
