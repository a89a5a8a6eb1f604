"""How host inputs are copied into pinned memory (the runner's `copier` option).

"torch" (the default): torch's CPU `copy_`, which splits one copy across its intra-op threads
(OpenMP, without the GIL). A sub-batch is one copy at the host's full rate, so the first is ready
early; one feeder thread copies the later ones while the calling thread runs the GPU.
"numpy": `np.copyto` on the calling thread and the staging workers (staging.py), piece by piece;
each piece costs a Python thread a wake-up and a turn at the GIL.

Measured on the H200's host (16 cores; tools/e2e-timeline.py, 2026-11-29 fourth session):
- copying 48 MiB of pageable float32 into pinned memory took 8.4 ms with one np.copyto and 0.59 ms
  with one torch copy (16 threads); 3 MiB took 271 and 59 us;
- end to end from pageable numpy, TensorRT FP16 SimpleCNN (tools/trt-staging-ab.py, medians of
  100 interleaved calls, ms): batch 4096 3.29 / 3.22 (torch, run twice) against 3.59 (numpy);
  1024 1.48 / 1.48 against 1.82; 256 0.535 / 0.502 against 0.577.
- under `MIN_BYTES`, np.copyto. With the cut first at 256 KiB, batch 32 (384 KiB) went through
  torch: its runners in the A/B took 0.146-0.175 ms against 0.148 for numpy copies, and the
  end-to-end benchmark 259 and 170 us in two calls; with the cut at 1 MiB (numpy's copy at batch
  32) 118 us, in the same lease (one runner moved up to 41% between two calls of it).
"""
from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

log = logging.getLogger(__name__)

COPIERS = ("numpy", "torch")
MIN_BYTES = 1 << 20  # below this, np.copyto (see the module doc)

Copy = Callable[[np.ndarray, np.ndarray], None]


class TorchCopy:
    """`copy(dst, src)`: `src` into `dst` (same shape, `dst` C-contiguous and writable) with
    torch's parallel CPU copy; where torch cannot take `src` as it is (read-only, a byte order or
    dtype torch lacks, negative strides), with `np.copyto`. Same values either way: the dtypes
    are already checked, and a narrowing (int64 ids to int32) casts as numpy does."""

    def __init__(self) -> None:
        import torch  # imported here: a runner without this copier never loads torch

        self._from_numpy = torch.from_numpy

    def __call__(self, dst: np.ndarray, src: np.ndarray) -> None:
        # Read-only sources would make torch warn that it cannot protect them; numpy copies them.
        if src.nbytes >= MIN_BYTES and src.flags.writeable:
            try:
                self._from_numpy(dst).copy_(self._from_numpy(src))
                return
            except (TypeError, ValueError):  # a dtype, byte order or stride torch does not take
                pass
        np.copyto(dst, src)


def load(copier: str) -> Copy | None:
    """The bulk copy for `copier`: None for "numpy" (np.copyto everywhere), a `TorchCopy` for
    "torch"; None, with a warning, where torch cannot be imported."""
    if copier not in COPIERS:
        raise ValueError(f"copier must be one of {list(COPIERS)}, received {copier!r}")
    if copier == "numpy":
        return None
    try:
        return TorchCopy()
    except ImportError as exc:
        log.warning("copier 'torch' needs torch (%s); copying with numpy threads", exc)
        return None
