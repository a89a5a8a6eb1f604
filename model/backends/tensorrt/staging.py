"""The host side of a large TensorRT call: the batch cut into sub-batches (one engine run each),
each sub-batch into pieces. The calling thread and the staging workers take the pieces in order
(`Claims`), copy each into pinned memory (numpy releases the GIL) and check it when the check is a
host method. As soon as a sub-batch's pieces are all staged (its `Latch`), the calling thread
uploads it and runs the engine on it while the threads go on with the next. With the runner's
default copier (host_copy.py, torch's parallel copy) a piece is a whole sub-batch: the calling
thread copies the first, one feeder thread (started after it: `Staging`'s `defer`) the rest.

Measured on the H200's host (tools/h200-e2e-probe, 16 cores of a Xeon VM): one thread copies
pageable memory into pinned memory at 7-13 GB/s; eight threads, each copying one slice of a 48 MiB
batch, at 30-42 GB/s. But handing work to a pool is slow there: a round trip to one worker took
35 us, to eight 180 us. So each worker gets one task per call (it takes pieces until none is
left) and signals only through a latch per sub-batch, and the calling thread copies pieces itself
instead of idling while the workers wake.

Only batches above `GRAPH_MAX_BYTES` of host input take this path: below it the whole batch is
staged at once and what follows is a CUDA-graph replay (copy in, engine, copy out in one launch;
on the H200 batch 256, 3 MiB, took 0.78 ms that way and 0.97-2.7 ms on every pipelined setting
raced). From `split_bytes` on, that staging is shared with the workers too (`Stager.stage_now`).
"""
from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

GRAPH_MAX_BYTES = 4 << 20  # host input at or below this: one copy on the calling thread + graph replay
CHUNK_BYTES = 512 << 10  # a piece handed to a thread holds at least this much (else fewer threads share it)
SUBBATCH_BYTES = 12 << 20  # one engine run takes about this much input (0: the whole batch in one run)
# Pieces per staging thread in a sub-batch. With one (1.5 MiB at 4096 on 8 threads), the first
# sub-batch was ready only 1.4-1.75 ms into a traced call on the H200 (lease C), its last pieces
# copied while the threads done with theirs already copied the next sub-batches; smaller pieces
# let the threads finish it together. Raced in tools/trt-staging-ab.py; 1 until measured better.
PIECES_PER_THREAD = 1
# Staging threads besides the calling one: copying 48 MiB into pinned memory on the H200's host ran
# at 34 GB/s on 4 threads, 39 on 6, 42 on 8, 41 on 12 and 34 on 16.
MAX_WORKERS = 7
# On the graph path, a feed of at least SPLIT_BYTES is staged in pieces of at least PIECE_BYTES
# shared with the workers (the `split_bytes` option). Measured on the H200 with the host check and
# one pool task per piece, splitting lost at every size raced: batch 32 took 0.135 ms on one
# thread, 0.297 ms on two, 0.362 on four; batch 256 0.78 ms on one thread, 0.90 on two, 1.06 on
# four. So the split starts only past the graph path's own limit: never by default (with claimed
# pieces, raced again in tools/trt-staging-ab.py).
SPLIT_BYTES = GRAPH_MAX_BYTES + 1
PIECE_BYTES = 128 << 10


@dataclass(frozen=True)
class SubBatch:
    """Rows `start:stop` of the batch, uploaded and run by the engine at once, staged as `chunks`
    (row ranges, about one per staging thread), each taken by whichever thread claims it first."""
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
         subbatch_bytes: int = SUBBATCH_BYTES, min_rows: int = 1, row_align: int = 1,
         pieces_per_thread: int = PIECES_PER_THREAD) -> list[SubBatch]:
    """How a batch of `batch` rows of `row_bytes` host bytes each is staged, uploaded and run.

    Sub-batches: about `subbatch_bytes` of input each (one when it is 0), never fewer rows than the
    engine accepts (`min_rows`), each starting a multiple of `row_align` rows in (so every tensor's
    address stays aligned for TensorRT). Each sub-batch's `chunks` are its pieces,
    `pieces_per_thread` per staging thread (the caller and each worker), none under `chunk_bytes`
    (fewer pieces then); one piece per sub-batch when nothing is staged."""
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
            chunks = split(start, stop, min(pieces_per_thread * (workers + 1),
                                            max(1, (stop - start) * row_bytes // max(1, chunk_bytes))))
        out.append(SubBatch(start, stop, tuple(chunks)))
    return out


# How `all_finite` decides, fastest first where it applies (see FINITE_CHECK for the default):
#   "dot":      x . x through BLAS (float32/float64), exact np.isfinite only when that is not finite;
#   "sum":      np.add.reduce(x), likewise;
#   "minmax":   x.min() and x.max() finite (NaN propagates through both; exact, no fallback);
#   "isfinite": np.isfinite(x).all() (a temporary bool array per call).
# On the H200's host, one thread, 48 MiB: dot 2.1 ms, isfinite 3.0, sum 3.3, minmax 4.2; 1 MiB in
# cache: 24, 31, 62, 33 us.
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
    """One host input: its rows are copied from `source` into `pinned` by `copy` (None: the source
    already is the runner's pinned buffer), and checked for NaN/Inf when `check` (by `method`, see
    `all_finite`)."""
    source: np.ndarray
    pinned: np.ndarray | None
    check: bool
    method: str = FINITE_CHECK
    copy: Callable[[np.ndarray, np.ndarray], None] = np.copyto  # (target, rows): see host_copy.py


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
        if item.check and not all_finite(rows, item.method):
            return index
    return -1


@dataclass(frozen=True)
class Piece:
    """Rows `start:stop` of sub-batch `sub`: what one staging thread copies at a time."""
    sub: int
    start: int
    stop: int


class Claims:
    """The pieces of one call in order, sub-batch by sub-batch, each taken once by whichever
    staging thread asks first. A thread the OS wakes late takes fewer pieces instead of holding
    back a sub-batch: on the H200's host one of eight workers started up to 1 ms after the
    others, and with a fixed piece per thread the first sub-batch waited for it."""

    def __init__(self, subbatches: list[SubBatch]) -> None:
        self.pieces = [Piece(k, a, b) for k, sb in enumerate(subbatches) for a, b in sb.chunks]
        self.ends, total = [], 0  # per sub-batch: the index one past its last piece
        for sb in subbatches:
            total += len(sb.chunks)
            self.ends.append(total)
        self._next, self._lock = 0, threading.Lock()

    def claim(self, limit: int | None = None) -> Piece | None:
        """The next piece, if its index is below `limit` (default: all); None when none is left."""
        with self._lock:
            index = self._next
            if index >= (len(self.pieces) if limit is None else limit):
                return None
            self._next = index + 1
        return self.pieces[index]


class Latch:
    """Counts down the pieces of one sub-batch; the calling thread waits for zero. Keeps the first
    NaN/Inf found (the index of its item) and the first error raised."""

    def __init__(self, count: int) -> None:
        self.count, self.bad, self.error = count, -1, None
        self._lock, self._done = threading.Lock(), threading.Event()
        if count <= 0:
            self._done.set()

    def count_down(self, bad: int = -1, error: BaseException | None = None) -> None:
        with self._lock:
            if bad >= 0 and self.bad < 0:
                self.bad = bad
            if error is not None and self.error is None:
                self.error = error
            self.count -= 1
            if self.count <= 0:
                self._done.set()

    def wait(self) -> int:
        """-1, or the index of an item that holds a NaN/Inf; re-raises a staging thread's error."""
        self._done.wait()
        if self.error is not None:
            raise self.error
        return self.bad


def run_piece(items: list[Staged], piece: Piece, latch: Latch) -> None:
    """Stage one piece (copy, and check where asked), counting it down on its sub-batch's latch:
    with the NaN/Inf found, or with the error raised (the calling thread raises it at the latch)."""
    try:
        bad = stage_rows(items, piece.start, piece.stop)
    except BaseException as exc:
        latch.count_down(error=exc)
    else:
        latch.count_down(bad)


def stage_claimed(items: list[Staged], claims: Claims, latches: list[Latch], stop: threading.Event) -> None:
    """A worker's task for a call: pieces as they come, until none is left or `stop` is set (the
    call failed: nothing more is written)."""
    while not stop.is_set():
        piece = claims.claim()
        if piece is None:
            return
        run_piece(items, piece, latches[piece.sub])


class Staging:
    """One call's staging: its pieces put up for claiming (`claims`), one latch per sub-batch, the
    event that stops the workers, their futures. With `defer`, the workers are started only once
    the calling thread has staged its first piece: a copy that already runs on many threads
    (host_copy.TorchCopy) then has the host to itself for the first sub-batch, and the workers'
    wake-up overlaps it instead of delaying it."""

    def __init__(self, items: list[Staged], subbatches: list[SubBatch], workers: int,
                 executor: Callable[[], ThreadPoolExecutor], defer: bool = False) -> None:
        self.items = items
        self.claims = Claims(subbatches)
        self.latches = [Latch(len(sb.chunks)) for sb in subbatches]
        self.stop = threading.Event()
        self.futures: list[Future] = []
        self._tasks = max(0, min(workers, len(self.claims.pieces) - 1))  # one per worker: each takes pieces until none is left
        self._executor = executor
        if not defer:
            self._launch()

    def _launch(self) -> None:
        if self._tasks:
            pool = self._executor()
            self.futures = [pool.submit(stage_claimed, self.items, self.claims, self.latches, self.stop)
                            for _ in range(self._tasks)]
            self._tasks = 0

    def through(self, sub: int) -> int:
        """The calling thread's share up to sub-batch `sub`: pieces of it (or earlier ones) still
        unclaimed, then the wait for the workers' pieces of it. Returns what `Latch.wait` does."""
        limit = self.claims.ends[sub]
        while (piece := self.claims.claim(limit)) is not None:
            latch = self.latches[piece.sub]
            run_piece(self.items, piece, latch)
            if self._tasks and latch.bad < 0 and latch.error is None:  # a failing call needs no workers
                self._launch()
        return self.latches[sub].wait()

    def finish(self) -> None:
        """Every sub-batch, then the workers' tasks (they end once no piece is left)."""
        for sub in range(len(self.latches)):
            self.through(sub)
        for f in self.futures:
            f.result()

    def abandon(self) -> None:
        """Stop the workers, cancel what has not started and wait for what has: no worker may
        still write into the pinned buffers when the next call fills them."""
        self.stop.set()
        self._tasks = 0
        for f in self.futures:
            f.cancel()
        for f in self.futures:
            if not f.cancelled():
                f.exception()  # waits; a worker's own error is not the one being raised


class Stager:
    """A small pool of staging threads owned by one runner (made on first use, closed with it);
    with 0 workers, the calling thread stages everything itself. `defer`: see `Staging`."""

    def __init__(self, workers: int | None = None, defer: bool = False) -> None:
        self.workers = max(0, workers if workers is not None else min(MAX_WORKERS, (os.cpu_count() or 1) - 1))
        self.defer = defer
        self._pool: ThreadPoolExecutor | None = None

    def start(self, items: list[Staged], subbatches: list[SubBatch]) -> Staging:
        """A call's pieces, put up for claiming by the workers (now, or after the calling thread's
        first piece when deferred) and by the calling thread (`Staging.through`)."""
        return Staging(items, subbatches, self.workers, self._executor, self.defer)

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="trt-staging")
        return self._pool

    def pieces(self, rows: int, nbytes: int, split_bytes: int = SPLIT_BYTES) -> int:
        """How many pieces `stage_now` cuts these rows into (1: the caller alone, in one piece)."""
        return min(self.workers + 1, nbytes // PIECE_BYTES, rows) if nbytes >= split_bytes and self.workers else 1

    def stage_now(self, items: list[Staged], rows: int, nbytes: int, split_bytes: int = SPLIT_BYTES) -> int:
        """Stage rows `0:rows` of every item before returning (the graph path), shared with the
        workers from `split_bytes` on; below it, on this thread alone in one piece. Returns what
        `stage_rows` returns."""
        parts = self.pieces(rows, nbytes, split_bytes)
        call = self.start(items, [SubBatch(0, rows, tuple(split(0, rows, parts)))])
        try:
            return call.through(0)
        except BaseException:
            call.abandon()
            raise

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def needs_staging(items: list[Staged]) -> bool:
    return any(item.pinned is not None or item.check for item in items)


def finite_dtype(dtype: np.dtype) -> bool:
    """Whether values of `dtype` can be NaN/Inf at all (integers cannot: no pass needed)."""
    return np.dtype(dtype).kind in "fc"
