"""TensorRT builds take turns on a GPU (model/backends/tensorrt/build_slots.py): at most N hold a
slot of one GPU at once, across processes; other GPUs' slots are their own."""
from __future__ import annotations

import multiprocessing
import threading
import time

import pytest

from model.backends.tensorrt import build_slots


def test_slot_count_comes_from_the_environment_and_bad_values_name_the_variable():
    assert build_slots.slots({}) == build_slots.DEFAULT_SLOTS
    assert build_slots.slots({build_slots.ENV: " 3 "}) == 3
    for bad in ("0", "-1", "two", "1.5"):
        with pytest.raises(ValueError, match=rf"{build_slots.ENV}='{bad}'.*1 or more"):
            build_slots.slots({build_slots.ENV: bad})


def _hold(folder, gpu, count, seconds, log):
    with build_slots.build_slot(gpu, count, folder, poll_s=0.01):
        start = time.monotonic()
        time.sleep(seconds)
        log.put((start, time.monotonic()))


def _most_at_once(spans) -> int:
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    held = most = 0
    for _, step in edges:
        held += step
        most = max(most, held)
    return most


@pytest.mark.parametrize("count", [1, 2])
def test_processes_on_one_gpu_never_hold_more_than_the_slots(tmp_path, count):
    ctx = multiprocessing.get_context("fork")  # no CUDA here; spawn re-imports the package per process
    log = ctx.Queue()
    procs = [ctx.Process(target=_hold, args=(tmp_path, "0000:1b:00", count, 0.3, log)) for _ in range(4)]
    for p in procs:
        p.start()
    spans = [log.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert _most_at_once(spans) <= count


def test_a_waiting_build_starts_when_a_slot_frees_and_is_told_how_long_it_waited(tmp_path):
    release, entered, waited = threading.Event(), threading.Event(), []

    def first():
        with build_slots.build_slot("gpu-a", 1, tmp_path):
            entered.set()
            release.wait(10)

    holder = threading.Thread(target=first)
    holder.start()
    assert entered.wait(10)

    def second():
        with build_slots.build_slot("gpu-a", 1, tmp_path, poll_s=0.01) as w:
            waited.append(w)

    waiter = threading.Thread(target=second)
    waiter.start()
    time.sleep(0.3)
    assert not waited, "a second build entered a GPU's only slot while the first held it"
    # Another GPU's slot is free meanwhile.
    with build_slots.build_slot("gpu-b", 1, tmp_path) as other:
        assert other < 0.2
    release.set()
    holder.join(10)
    waiter.join(10)
    assert waited and waited[0] >= 0.3

