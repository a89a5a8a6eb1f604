"""How host inputs are copied into pinned memory (the runner's `copier` option).

"numpy": `np.copyto` on the calling thread and the staging workers (staging.py), one piece per
thread. Every piece costs a Python thread a wake-up and a turn at the GIL: on the H200's host
submitting seven pieces took about 0.15 ms, and a batch-256 input (3 MiB) was copied on the calling
thread alone (240-330 us), because sharing it was slower still.

"torch": torch's CPU `copy_`, which splits one copy across its intra-op threads (OpenMP, already
running in any process that imported torch) without the GIL. A sub-batch is one copy at the
host's full copy rate, so the first is ready early; one feeder thread copies the later ones while
the calling thread runs the GPU. Inputs under `MIN_BYTES` keep `np.copyto`: the torch call costs
about 3 us more, more than such a copy saves.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

log = logging.getLogger(__name__)

COPIERS = ("numpy", "torch")
MIN_BYTES = 256 << 10  # below this, np.copyto: a copy this small is not worth torch's call

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
