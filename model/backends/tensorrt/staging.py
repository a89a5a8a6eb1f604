"""The host side of a large TensorRT call: the batch cut into chunks that worker threads copy into
pinned memory and check for NaN/Inf in the same pass (numpy releases the GIL for both), while the
GPU uploads finished chunks and runs finished sub-batches.

Measured on the H200's host for one 4096 x 3 x 32 x 32 float32 batch (50 MB), one thread:
`np.isfinite(x).all()` 6.4 ms and `np.copyto` into pinned memory 7.8 ms, against 0.92 ms for the
upload itself. Chunks of about 1 MiB are checked while they are still in the core's cache (the
data is read from memory once) and spread over the workers; sub-batches of about 12 MiB let the
engine start on the first rows while later ones are still being copied.

Only batches above `GRAPH_MAX_BYTES` of host input take this path: below it one staging pass and a
CUDA-graph replay (copy in, engine, copy out in one launch) cost less than handing work to threads
(batch 32 of SimpleCNN is 384 KiB; 64 is 768 KiB; 256 is 3 MiB).
"""
from __future__ import annotations

import math
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

GRAPH_MAX_BYTES = 1 << 20  # host input at or below this: one pass on the calling thread + graph replay
CHUNK_BYTES = 1 << 20  # one upload (and one worker task) moves about this much
SUBBATCH_BYTES = 12 << 20  # one engine run takes about this much input (0: the whole batch in one run)
# On the H200 (tools/trt-staging-ab.py, 100 interleaved calls, TensorRT FP16 end to end) 4 staging
# threads beat the earlier default of 8: 1.03 against 1.52 ms at batch 256, 6.98 against 8.09 ms at 4096.
MAX_WORKERS = 4
# The calling thread stages this many chunks itself before it waits for the workers' (it would
# only idle while they wake up).
CALLER_CHUNKS = 1
# Whether each worker uploads the chunks it staged itself, on a stream of its own (else the
# calling thread uploads each chunk once its task is done).
WORKER_UPLOADS = False
# On the graph path, a feed of at least SPLIT_BYTES is staged in pieces of at least PIECE_BYTES,
# the calling thread taking the first while workers take the rest (the `split_bytes` option).
# Measured there, splitting the graph path's staging lost: batch 32 (384 KiB) took 0.404 ms split and
# 0.176 ms on one thread. So the split starts only at the graph path's own limit, i.e. never by default.
SPLIT_BYTES = GRAPH_MAX_BYTES + 1
PIECE_BYTES = 128 << 10


@dataclass(frozen=True)
class SubBatch:
    """Rows `start:stop` of the batch, run by the engine at once, uploaded as `chunks` (row ranges)."""
    start: int
    stop: int
    chunks: tuple[tuple[int, int], ...]

    @property
    def rows(self) -> int:
        return self.stop - self.start


ADDRESS_ALIGN = 256  # TensorRT takes tensor addresses aligned to 256 bytes (IExecutionContext::setTensorAddress)


def row_alignment(row_bytes: list[int], align: int = ADDRESS_ALIGN) -> int:
    """The fewest rows after which every tensor's offset is `align`-aligned again (SimpleCNN: its
    400-byte output rows need 16; its 12 KiB input rows need 1)."""
    rows = 1
    for size in row_bytes:
        rows = math.lcm(rows, align // math.gcd(size, align))
    return rows


def split(start: int, stop: int, parts: int, align: int = 1) -> list[tuple[int, int]]:
    """`start:stop` in `parts` contiguous ranges, each starting `align` rows apart from `start` and
    of near-equal length (in units of `align` rows, longer first; the last takes the remainder),
    so a batch runs at no more than three engine shapes (two when `align` divides it)."""
    units = math.ceil((stop - start) / align)
    parts = max(1, min(parts, units))
    q, r = divmod(units, parts)
    out, at = [], start
    for i in range(parts):
        end = min(stop, at + (q + (i < r)) * align)
        out.append((at, end))
        at = end
    return out


def plan(batch: int, row_bytes: int, workers: int, *, chunk_bytes: int = CHUNK_BYTES,
         subbatch_bytes: int = SUBBATCH_BYTES, min_rows: int = 1, row_align: int = 1) -> list[SubBatch]:
    """How a batch of `batch` rows of `row_bytes` host bytes each is uploaded and run.

    Sub-batches: about `subbatch_bytes` of input each (one when it is 0), never fewer rows than the
    engine accepts (`min_rows`), each starting a multiple of `row_align` rows in (so every tensor's
    address stays aligned for TensorRT). Chunks: about `chunk_bytes` each, and at least `workers`
    over the whole batch so every worker has a share; one chunk per sub-batch when nothing is staged."""
    if batch < 1:
        raise ValueError(f"a batch to plan needs at least one row, received {batch}")
    total = batch * row_bytes
    parts = 1
    if subbatch_bytes > 0:
        parts = max(1, min(total // subbatch_bytes, batch // max(1, min_rows, row_align)))
    subs = split(0, batch, parts, row_align)
    if len(subs) > 1 and subs[-1][1] - subs[-1][0] < min_rows:  # a remainder the engine cannot take
        subs = subs[:-2] + [(subs[-2][0], batch)]
    out = []
    for start, stop in subs:
        if row_bytes == 0:
            chunks = [(start, stop)]
        else:
            wanted = max(math.ceil((stop - start) * row_bytes / chunk_bytes), math.ceil(workers / len(subs)))
            chunks = split(start, stop, wanted)
        out.append(SubBatch(start, stop, tuple(chunks)))
    return out


# How `all_finite` decides, fastest first where it applies (see FINITE_CHECK for the default):
#   "dot":      x . x through BLAS (float32/float64), exact np.isfinite only when that is not finite;
#   "sum":      np.add.reduce(x), likewise;
#   "minmax":   x.min() and x.max() finite (NaN propagates through both; exact, no fallback);
#   "isfinite": np.isfinite(x).all() (a temporary bool array per call).
FINITE_CHECKS = ("dot", "sum", "minmax", "isfinite")
FINITE_CHECK = "dot"
_BLAS_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def all_finite(x: np.ndarray, method: str = FINITE_CHECK) -> bool:
    """Whether `x` (C-contiguous, floating) holds no NaN/Inf: the same answer as
    `np.isfinite(x).all()` by every method.

    "dot" and "sum" are one pass without a temporary. A NaN or Inf anywhere makes them non-finite
    (x . x adds squares, never negative, so +Inf cannot cancel; a sum with +Inf and -Inf is NaN),
    so a finite result proves every value finite. A non-finite result may also come from finite
    values overflowing (|x| beyond about 1e19 in float32 for "dot"): then the exact check decides."""
    if method == "isfinite" or x.dtype.kind != "f":
        return bool(np.isfinite(x).all())
    if x.size == 0:
        return True
    flat = x.reshape(-1)
    if method == "minmax":
        return math.isfinite(flat.min()) and math.isfinite(flat.max())
    if method == "dot" and x.dtype in _BLAS_DTYPES:
        total = np.dot(flat, flat)
    elif method in ("dot", "sum"):
        total = np.add.reduce(flat)
    else:
        raise ValueError(f"finite_check must be one of {list(FINITE_CHECKS)}, received {method!r}")
    # math.isfinite on the scalar: np.isfinite cost about 1 us of a batch-1 call's few.
    return math.isfinite(total) or bool(np.isfinite(flat).all())


@dataclass(frozen=True)
class Staged:
    """One host input: its rows are copied from `source` into `pinned` (None: the source already
    is the runner's pinned buffer), and checked for NaN/Inf when `check` (by `method`, see `all_finite`)."""
    source: np.ndarray
    pinned: np.ndarray | None
    check: bool
    method: str = FINITE_CHECK


def stage_rows(items: list[Staged], start: int, stop: int) -> int:
    """Copy rows `start:stop` of every item and check them where asked: -1, or the index of the
    first item holding a NaN/Inf there. The check reads the rows just written, still in cache
    (C-contiguous, whatever the source's layout)."""
    for index, item in enumerate(items):
        rows = item.source[start:stop]
        if item.pinned is not None:
            target = item.pinned[start:stop]
            np.copyto(target, rows)
            rows = target
        if item.check and not all_finite(rows, item.method):
            return index
    return -1


class Stager:
    """A small pool of staging threads owned by one runner (made on first use, closed with it);
    with 0 workers, the calling thread stages everything itself."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = max(0, workers if workers is not None else min(MAX_WORKERS, os.cpu_count() or 1))
        self._pool: ThreadPoolExecutor | None = None

    def submit(self, items: list[Staged], subbatches: list[SubBatch], skip: int = 0, task=None) -> list[Future]:
        """One task per chunk after the first `skip` (the caller's own), in upload order, all at
        once: the workers never wait for the GPU. `task(items, start, stop)`: `stage_rows`, or
        one that also uploads what it staged."""
        chunks = [c for sb in subbatches for c in sb.chunks][skip:]
        if not chunks:
            return []
        pool = self._executor()
        return [pool.submit(task or stage_rows, items, a, b) for a, b in chunks]

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="trt-staging")
        return self._pool

    def pieces(self, rows: int, nbytes: int, split_bytes: int = SPLIT_BYTES) -> int:
        """How many threads `stage_now` would share these rows among (1: the caller alone)."""
        return min(self.workers, nbytes // PIECE_BYTES, rows) if nbytes >= split_bytes else 1

    def stage_now(self, items: list[Staged], rows: int, nbytes: int, split_bytes: int = SPLIT_BYTES) -> int:
        """Stage rows `0:rows` of every item before returning (the graph path): on this thread alone
        below `split_bytes`, else shared with the workers. Returns what `stage_rows` returns."""
        parts = self.pieces(rows, nbytes, split_bytes)
        if parts <= 1:
            return stage_rows(items, 0, rows)
        pieces = split(0, rows, parts)
        pool = self._executor()
        futures = [pool.submit(stage_rows, items, a, b) for a, b in pieces[1:]]
        try:
            found = [stage_rows(items, *pieces[0])] + [f.result() for f in futures]
        except BaseException:
            self.abandon(futures)
            raise
        return next((index for index in found if index >= 0), -1)

    @staticmethod
    def abandon(futures: list[Future]) -> None:
        """Cancel what has not started and wait for what has: no worker may still write into the
        pinned buffers when the next call fills them."""
        for f in futures:
            f.cancel()
        for f in futures:
            if not f.cancelled():
                f.exception()  # waits; a worker's own error is not the one being raised

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def needs_staging(items: list[Staged]) -> bool:
    return any(item.pinned is not None or item.check for item in items)


def finite_dtype(dtype: np.dtype) -> bool:
    """Whether values of `dtype` can be NaN/Inf at all (integers cannot: no pass needed)."""
    return np.dtype(dtype).kind in "fc"
