"""The host side of a large TensorRT call: the batch cut into sub-batches (one engine run each),
each copied into pinned memory in one copy (host_copy.TorchCopy, which spreads it over torch's
own threads). The calling thread copies the first sub-batch with the host to itself; one feeder
thread, started once that copy is done, copies the later ones while the calling thread uploads
and runs the earlier ones. Sub-batches are claimed in order (`Staging`), so a feeder the OS wakes
late takes fewer of them instead of holding one back; each has a `Latch` the calling thread waits
on before uploading it.

Only batches above `GRAPH_MAX_BYTES` of host input take this path: below it the whole batch is
staged at once and what follows is a CUDA-graph replay (copy in, engine, copy out in one launch;
on the H200 batch 256, 3 MiB, took 0.78 ms that way and 0.97-2.7 ms on every pipelined setting
raced).
"""
from __future__ import annotations

import math
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

GRAPH_MAX_BYTES = 4 << 20  # host input at or below this: one copy on the calling thread + graph replay
SUBBATCH_BYTES = 12 << 20  # one engine run takes about this much input (0: the whole batch in one run)
ADDRESS_ALIGN = 256  # TensorRT takes tensor addresses aligned to 256 bytes (IExecutionContext::setTensorAddress)


@dataclass(frozen=True)
class SubBatch:
    """Rows `start:stop` of the batch, staged in one copy, uploaded and run by the engine at once."""
    start: int
    stop: int

    @property
    def rows(self) -> int:
        return self.stop - self.start


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


def plan(batch: int, row_bytes: int, *, subbatch_bytes: int = SUBBATCH_BYTES, min_rows: int = 1,
         row_align: int = 1) -> list[SubBatch]:
    """How a batch of `batch` rows of `row_bytes` host bytes each is cut into sub-batches: about
    `subbatch_bytes` of input each (one when it is 0), never fewer rows than the engine accepts
    (`min_rows`), each starting a multiple of `row_align` rows in (so every tensor's address stays
    aligned for TensorRT)."""
    if batch < 1:
        raise ValueError(f"a batch to plan needs at least one row, received {batch}")
    parts = 1
    if subbatch_bytes > 0:
        parts = max(1, min(batch * row_bytes // subbatch_bytes, batch // max(1, min_rows, row_align)))
    subs = split(0, batch, parts, row_align)
    if len(subs) > 1 and subs[-1][1] - subs[-1][0] < min_rows:  # a remainder the engine cannot take
        subs = subs[:-2] + [(subs[-2][0], batch)]
    return [SubBatch(start, stop) for start, stop in subs]


_BLAS_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def all_finite(x: np.ndarray) -> bool:
    """Whether `x` (C-contiguous) holds no NaN/Inf: always `np.isfinite(x).all()`'s answer. The
    host check, used only where the GPU's kernels (finite_gpu.py) cannot load.

    For floats, one pass without a temporary: x . x through BLAS (float32/float64), else the sum.
    A NaN or Inf anywhere makes either non-finite (x . x adds squares, never negative, so +Inf
    cannot cancel; a sum with +Inf and -Inf is NaN), so a finite result proves every value finite.
    A non-finite result may also come from finite values overflowing (|x| beyond about 1e19 in
    float32): then the exact check decides. On the H200's host (48 MiB, one thread) x . x took
    2.1 ms against 3.0 for np.isfinite, 3.3 for the sum and 4.2 for min and max."""
    if x.dtype.kind != "f":
        return bool(np.isfinite(x).all())
    if x.size == 0:
        return True
    flat = x.reshape(-1)
    total = np.dot(flat, flat) if x.dtype in _BLAS_DTYPES else np.add.reduce(flat)
    # math.isfinite on the scalar: np.isfinite cost about 1 us of a batch-1 call's few.
    return math.isfinite(total) or bool(np.isfinite(flat).all())


def finite_dtype(dtype: np.dtype) -> bool:
    """Whether values of `dtype` can be NaN/Inf at all (integers cannot: no pass needed)."""
    return np.dtype(dtype).kind in "fc"


@dataclass(frozen=True)
class Staged:
    """One host input: its rows are copied from `source` into `pinned` by `copy` (None: the source
    already is the runner's pinned buffer), and checked for NaN/Inf on the host when `check`."""
    source: np.ndarray
    pinned: np.ndarray | None
    check: bool
    copy: Callable[[np.ndarray, np.ndarray], None]  # (target, rows): host_copy.TorchCopy


def stage_rows(items: list[Staged], start: int, stop: int) -> int:
    """Copy rows `start:stop` of every item and check them where asked: -1, or the index of the
    first item holding a NaN/Inf there. The check reads the rows just written, still in cache
    (C-contiguous, whatever the source's layout)."""
    for index, item in enumerate(items):
        rows = item.source[start:stop]
        if item.pinned is not None:
            target = item.pinned[start:stop]
            item.copy(target, rows)
            rows = target
        if item.check and not all_finite(rows):
            return index
    return -1


def needs_staging(items: list[Staged]) -> bool:
    return any(item.pinned is not None or item.check for item in items)


class Latch:
    """One sub-batch's staging, done: the calling thread waits for it. Holds the NaN/Inf found
    (the index of its item) or the error raised."""

    def __init__(self) -> None:
        self.bad, self.error, self._done = -1, None, threading.Event()

    def release(self, bad: int = -1, error: BaseException | None = None) -> None:
        self.bad, self.error = bad, error
        self._done.set()

    def wait(self) -> int:
        """-1, or the index of an item that holds a NaN/Inf; re-raises the staging thread's error."""
        self._done.wait()
        if self.error is not None:
            raise self.error
        return self.bad


def stage_one(items: list[Staged], sb: SubBatch, latch: Latch) -> None:
    """Stage one sub-batch (copy, and check where asked), releasing its latch with the NaN/Inf
    found or with the error raised (the calling thread raises it at the latch)."""
    try:
        bad = stage_rows(items, sb.start, sb.stop)
    except BaseException as exc:
        latch.release(error=exc)
    else:
        latch.release(bad)


class Staging:
    """One call's staging: its sub-batches put up for claiming in order, one latch each, the
    event that stops the feeder, its future. The feeder is started only once the calling thread
    has staged the first sub-batch: torch's copy already runs on many threads and then has the
    host to itself, and the feeder's wake-up overlaps it instead of delaying it."""

    def __init__(self, items: list[Staged], subbatches: list[SubBatch],
                 executor: Callable[[], ThreadPoolExecutor]) -> None:
        self.items, self.subbatches = items, subbatches
        self.latches = [Latch() for _ in subbatches]
        self.stop = threading.Event()
        self.future: Future | None = None
        self._next, self._lock = 0, threading.Lock()
        self._feeder_due = len(subbatches) > 1
        self._executor = executor

    def claim(self, limit: int | None = None) -> int | None:
        """The next sub-batch's index, if below `limit` (default: all); None when none is left."""
        with self._lock:
            index = self._next
            if index >= (len(self.subbatches) if limit is None else limit):
                return None
            self._next = index + 1
        return index

    def _feed(self) -> None:
        """The feeder's task for a call: sub-batches as they come, until none is left or `stop`
        is set (the call failed: nothing more is written)."""
        while not self.stop.is_set():
            index = self.claim()
            if index is None:
                return
            stage_one(self.items, self.subbatches[index], self.latches[index])

    def _launch(self) -> None:
        self._feeder_due = False
        self.future = self._executor().submit(self._feed)

    def through(self, sub: int) -> int:
        """The calling thread's share up to sub-batch `sub`: those still unclaimed, then the wait
        for the feeder's. Returns what `Latch.wait` does."""
        while (index := self.claim(sub + 1)) is not None:
            latch = self.latches[index]
            stage_one(self.items, self.subbatches[index], latch)
            if self._feeder_due and latch.bad < 0 and latch.error is None:  # a failing call needs no feeder
                self._launch()
        return self.latches[sub].wait()

    def abandon(self) -> None:
        """Stop the feeder, cancel it if it has not started and wait for it if it has: nothing may
        still write into the pinned buffers when the next call fills them."""
        self.stop.set()
        self._feeder_due = False
        if self.future is not None and not self.future.cancel():
            self.future.exception()  # waits; the feeder's own error is not the one being raised


class Stager:
    """The runner's feeder thread (made on first use, closed with the runner)."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None

    def start(self, items: list[Staged], subbatches: list[SubBatch]) -> Staging:
        return Staging(items, subbatches, self._executor)

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="trt-staging")
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
