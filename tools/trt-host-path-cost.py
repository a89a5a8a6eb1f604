"""What the TensorRT engine set's `infer` costs in Python alone, on any machine (no GPU needed):
the runner's real code from the feed check to the copied-out result, with the CUDA work (graph
launch, stream sync) replaced by no-ops and the pinned buffers by numpy arrays. On the GPU the
end-to-end call adds this to the graph replay and the copies; this isolates the host's share, so a
change to it can be measured where no GPU is at hand.

    .venv/bin/python tools/trt-host-path-cost.py [BATCH ...]   # default 1 and 32
"""
from __future__ import annotations

import math
import sys
import timeit
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from model.profile import INPUT_NAME, OUTPUT_NAME, BatchProfile  # noqa: E402
from model.runners.base import TensorMeta, check_feed  # noqa: E402
from model.runners.trt_engine_set import TrtEngineSet  # noqa: E402
from model.runners.trt_runner import TrtRunner  # noqa: E402

MAX_BATCH, CLASSES, IMAGE = 4096, 100, (3, 32, 32)


class HostArray:
    """A pinned buffer's interface over plain memory."""

    def __init__(self, count: int) -> None:
        self.array = np.zeros(count, np.float32)

    def view(self, shape: tuple) -> np.ndarray:
        return self.array[: math.prod(shape)].reshape(shape)


class NoGpu:
    """Stands in for the stream and the captured graph: the GPU's share is not measured here."""

    def launch(self) -> None:
        pass

    def synchronize(self) -> None:
        pass

    def free(self) -> None:
        pass


def replaying_runner(batch: int) -> TrtRunner:
    """A runner in the state the second call at `batch` leaves it: shape bound, graph captured."""
    runner = TrtRunner(b"", label="fp16")
    runner.inputs, runner.outputs = [INPUT_NAME], [OUTPUT_NAME]
    runner.host = {INPUT_NAME: HostArray(MAX_BATCH * math.prod(IMAGE)), OUTPUT_NAME: HostArray(MAX_BATCH * CLASSES)}
    runner.stream = runner._io_graph = NoGpu()
    runner._bound_shape = ((INPUT_NAME, (batch, *IMAGE)),)
    runner._out_shapes = {OUTPUT_NAME: (batch, CLASSES)}
    runner._metadata = {INPUT_NAME: TensorMeta(np.dtype(np.float32), (None, *IMAGE), 1, MAX_BATCH)}
    runner.is_active = True
    return runner


def per_call_us(fn, seconds: float = 1.0) -> float:
    timer = timeit.Timer(fn)
    count, _ = timer.autorange()
    runs = max(1, int(count * seconds / 0.2))
    return min(timer.repeat(repeat=5, number=runs)) / runs * 1e6


def main(batches: list[int]) -> None:
    print("batch | engine set infer | runner infer | feed check (us per call, best of 5)")
    for batch in batches:
        runner = replaying_runner(batch)
        engines = TrtEngineSet({BatchProfile(batch, (batch,), batch): b""}, label="fp16")
        engines.runners, engines._metadata, engines.is_active = {BatchProfile(batch, (batch,), batch): runner}, runner._metadata, True
        feed = {INPUT_NAME: np.random.default_rng(0).standard_normal((batch, *IMAGE)).astype(np.float32)}
        shape = engines.infer(feed)[OUTPUT_NAME].shape
        if shape != (batch, CLASSES):
            raise SystemExit(f"the path did not run as on the GPU: output shape {shape}, expected {(batch, CLASSES)}")
        print(f"{batch} | {per_call_us(lambda: engines.infer(feed)):.1f} | {per_call_us(lambda: runner.infer(feed)):.1f} | "
              f"{per_call_us(lambda: check_feed(feed, runner._metadata)):.1f}")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [1, 32])
