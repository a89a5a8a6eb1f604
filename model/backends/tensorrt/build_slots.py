"""At most a few TensorRT builds at once on one GPU, across every process of the host.

A build times candidate kernels on the GPU. On an H100 (TensorRT 8.6, level 5), twelve at once
made each build 2.7-4.3 times slower than two at once (ResNet-18 FP32 87 against 32 s, FP16 248
against 58 s): six times the builds for 1.4-2.2 times the throughput, every kernel timed under the
others' load, and all of them starting from the same empty timing cache. Four at once sits
between the two; each build loads the timing cache inside its slot, so it starts from what the
builds before it left.

The slots are lock files under the temporary directory, one set per GPU (its PCI address), so two
checkouts with their own artifact caches on one GPU (the gate's base and head) take turns too.
"""
from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

log = logging.getLogger(__name__)
ENV = "MODEL_TRT_BUILDS_PER_GPU"
DEFAULT_SLOTS = 4


def slots(environ=os.environ) -> int:
    """Builds allowed at once per GPU: $MODEL_TRT_BUILDS_PER_GPU, else DEFAULT_SLOTS."""
    raw = environ.get(ENV, "").strip()
    if not raw:
        return DEFAULT_SLOTS
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{ENV}={raw!r}: expected a whole number of TensorRT builds at once per GPU, 1 or more")
    return int(raw)


def default_folder() -> Path:
    # Per user: a lock file another user created may not be writable by this one.
    return Path(tempfile.gettempdir()) / f"model-trt-build-slots-{os.getuid()}"


@contextmanager
def build_slot(gpu: str, count: int, folder: Path | None = None, poll_s: float = 0.2):
    """Holds one of `count` slots of GPU `gpu` while the block runs; yields the seconds waited."""
    folder = folder or default_folder()
    folder.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^0-9A-Za-z.-]", "_", gpu)
    locks = [FileLock(folder / f"{stem}-{k}.lock") for k in range(count)]
    started, told = time.monotonic(), False
    while True:
        for lock in locks:
            try:
                lock.acquire(timeout=0)
            except Timeout:
                continue
            try:
                yield time.monotonic() - started
            finally:
                lock.release()
            return
        if not told:
            log.info("waiting for one of %d TensorRT build slots of GPU %s", count, gpu)
            told = True
        time.sleep(poll_s)
