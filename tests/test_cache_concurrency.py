"""The cache under concurrent runs and killed writers: processes racing into one fresh cache build
each artifact once and all get a sound file; `kill -9` at any point of a write leaves nothing a
later run uses."""
import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest
import torch

from model import cache, data, export, training, zoo
from model.network import SimpleCNN
from tests.test_cache import TINY_DATA, TINY_TRAIN, simplecnn_onnx, simplecnn_variant

# Fork keeps the children cheap (torch and the fixtures are already loaded). A forked child that
# runs torch on its inherited thread pool hangs in its first convolution; one thread avoids the
# pool, as PyTorch's own DataLoader workers do. Python >= 3.12 warns about forking a threaded
# process, which these children survive for that reason.
pytestmark = pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
FORK = multiprocessing.get_context("fork")
ROUNDS = 12


def _in_child() -> None:
    torch.set_num_threads(1)


def _count_build(counter: Path) -> None:
    with open(counter, "a") as f:  # O_APPEND: one line per build, whichever process
        f.write(f"{os.getpid()}\n")


def _generic_build(counter: Path):
    def build(tmp: Path) -> dict:
        _count_build(counter)
        with open(tmp, "wb") as f:  # slow enough that both racers are inside get_or_build together
            for i in range(20):
                f.write(bytes([i]) * 4096)
                time.sleep(0.005)
        return {"rows": 20}
    return build


def _race_generic(folder: Path, counter: Path, barrier, results) -> None:
    try:
        barrier.wait(timeout=30)
        art = cache.get_or_build(folder, "thing.plan", {"k": 1}, _generic_build(counter))
        ok = art.path.read_bytes() == b"".join(bytes([i]) * 4096 for i in range(20)) and art.figures == {"rows": 20}
        results.put("ok" if ok else "wrong content")
    except BaseException as exc:  # a failure is a figure of the test, not a crash of the child
        results.put(f"{type(exc).__name__}: {exc}")


def _race(target, args_of_round, rounds: int) -> tuple[list[str], list[int]]:
    failures, builds = [], []
    for r in range(rounds):
        barrier, results = FORK.Barrier(2), FORK.Queue()
        args, counter = args_of_round(r)
        procs = [FORK.Process(target=target, args=(*args, barrier, results)) for _ in range(2)]
        for p in procs:
            p.start()
        outcomes = [results.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(timeout=60)
        failures += [f"round {r}: {o}" for o in outcomes if o != "ok"]
        failures += [f"round {r}: exit {p.exitcode}" for p in procs if p.exitcode != 0]
        builds.append(len(counter.read_text().split()) if counter.exists() else 0)
    return failures, builds


def test_two_processes_racing_build_once_per_round(tmp_path):
    def round_args(r):
        counter = tmp_path / f"builds-{r}"
        return (tmp_path / f"cache-{r}", counter), counter

    failures, builds = _race(_race_generic, round_args, ROUNDS)
    print(f"\ngeneric race: {ROUNDS} rounds, {len(failures)} failures, builds per round {builds}")
    assert failures == [] and builds == [1] * ROUNDS


def _race_onnx(folder: Path, counter: Path, trained, calib, barrier, results) -> None:
    real = export.export_onnx

    def counted(*args, **kw):
        _count_build(counter)
        return real(*args, **kw)

    export.export_onnx = counted  # this child only
    try:
        _in_child()
        barrier.wait(timeout=30)
        fp32 = simplecnn_onnx(trained, folder)
        simplecnn_variant(fp32, "int8", calib)  # the quantizer's scratch files once had fixed names
        results.put("ok")
    except BaseException as exc:
        results.put(f"{type(exc).__name__}: {exc}")


def test_two_processes_racing_export_and_quantize(tmp_path, trained, dataset):
    """The issue's race for real: FP32 export then INT8 quantization into one fresh cache."""
    def round_args(r):
        counter = tmp_path / f"exports-{r}"
        return (tmp_path / f"cache-{r}", counter, trained, dataset.calib.x), counter

    rounds = 2  # each costs seconds (INT8 calibration); the generic race above runs the many rounds
    failures, builds = _race(_race_onnx, round_args, rounds)
    print(f"\nONNX race: {rounds} rounds, {len(failures)} failures, exports per round {builds}")
    assert failures == [] and builds == [1] * rounds
    for r in range(rounds):
        names = sorted(p.name for p in (tmp_path / f"cache-{r}" / "onnx").iterdir() if not p.name.startswith("."))
        assert len(names) == 4, names  # FP32 and INT8, each with its sidecar; no scratch left


# -- kill -9 during a write ---------------------------------------------------------------------

def _pause_for_the_kill(ready: Path) -> None:
    ready.touch()
    time.sleep(120)  # the parent sends SIGKILL long before this ends


def _half(path: Path) -> None:
    """Leave `path` as a write cut off halfway leaves it."""
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def _kill_during(stage: str, ready: Path, write_artifact) -> None:
    """Child: run `write_artifact()` (a real cache write) and freeze at `stage` for the kill."""
    _in_child()
    real_replace = os.replace

    def replace(src, dst):
        src = Path(src)
        if stage == "before_rename":
            _pause_for_the_kill(ready)
        if stage == "sidecar_write" and src.name.endswith(".tmp.json") and ".json." in src.name:
            _half(src)
            _pause_for_the_kill(ready)
        real_replace(src, dst)

    cache.os.replace = replace
    write_artifact()


def _kill_child_at(stage: str, tmp_path: Path, write_artifact) -> None:
    ready = tmp_path / "ready"
    child = FORK.Process(target=_kill_during, args=(stage, ready, write_artifact))
    child.start()
    deadline = time.monotonic() + 60
    while not ready.exists() and child.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ready.exists(), f"the child never reached {stage} (exit {child.exitcode})"
    os.kill(child.pid, signal.SIGKILL)
    child.join(timeout=30)
    assert child.exitcode == -signal.SIGKILL
    ready.unlink()


def _no_temporaries_left(folder: Path) -> None:
    assert [p.name for p in folder.iterdir() if ".tmp" in p.name] == []


STAGES = ["artifact_write", "before_rename", "sidecar_write"]


@pytest.mark.parametrize("stage", STAGES)
def test_kill_during_a_generic_write_leaves_nothing_used(tmp_path, stage):
    """A stand-in for an engine plan (TensorRT cannot run here) and for any new model's file."""
    folder, counter = tmp_path / "cache", tmp_path / "builds"
    build = _generic_build(counter)

    def write():
        def cut(tmp):
            build(tmp)
            if stage == "artifact_write":
                _half(tmp)
                _pause_for_the_kill(tmp_path / "ready")
            return {"rows": 20}
        cache.get_or_build(folder, "thing.plan", {"k": 1}, cut)

    _kill_child_at(stage, tmp_path, write)
    assert cache.load(folder, "thing.plan", {"k": 1}) is None  # nothing the killed write made is usable
    art = cache.get_or_build(folder, "thing.plan", {"k": 1}, build)
    assert art.built and len(counter.read_text().split()) == 2
    _no_temporaries_left(folder)


def test_kill_between_renames_over_an_older_version_is_caught(tmp_path):
    """The new file in place beside the old version's sidecar: the hash tells them apart."""
    folder = tmp_path / "cache"
    cache.get_or_build(folder, "thing.plan", {"k": 1}, lambda tmp: tmp.write_bytes(b"version 1") and None)
    new = lambda tmp: tmp.write_bytes(b"version 2!") and None  # noqa: E731
    _kill_child_at("sidecar_write", tmp_path, lambda: cache.get_or_build(folder, "thing.plan", {"k": 1}, new, rebuild=True))
    assert (folder / "thing.plan").read_bytes() == b"version 2!"  # renamed before the kill...
    assert cache.load(folder, "thing.plan", {"k": 1}) is None  # ...but never vouched for
    assert cache.get_or_build(folder, "thing.plan", {"k": 1}, new).built


@pytest.fixture(scope="module")
def tiny():
    return data.synthetic(TINY_DATA)


@pytest.fixture(scope="module")
def tiny_model():
    """What `train` hands back here: the kill tests are about the file, not what it learned."""
    torch.manual_seed(0)
    return SimpleCNN().eval()


@pytest.mark.parametrize("stage", ["artifact_write", "sidecar_write"])  # the generic test covers the rest
def test_kill_during_a_weights_write_leaves_nothing_used(tmp_path, tiny, tiny_model, stage, monkeypatch):
    folder = tmp_path / "cache"

    def write():
        training.train = lambda *a, **k: tiny_model
        if stage == "artifact_write":
            real_save = training.torch.save

            def cut_save(obj, path):
                real_save(obj, path)
                _half(Path(path))
                _pause_for_the_kill(tmp_path / "ready")
            training.torch.save = cut_save
        training.load_or_train(tiny, TINY_TRAIN, folder, progress=False)

    _kill_child_at(stage, tmp_path, write)
    runs = []
    monkeypatch.setattr(training, "train", lambda *a, **k: runs.append(1) or tiny_model)
    again = training.load_or_train(tiny, TINY_TRAIN, folder, progress=False)
    assert runs == [1] and again.sidecar["sha256"] == cache.sha256_file(again.checkpoint)
    _no_temporaries_left(folder / "weights")


@pytest.mark.parametrize("stage", STAGES)
def test_kill_during_an_onnx_write_leaves_nothing_used(tmp_path, trained, stage, monkeypatch):
    folder = tmp_path / "cache"

    def write():
        if stage == "artifact_write":
            real_export = export.export_onnx

            def cut_export(model, spec, path, opset=export.OPSET):
                real_export(model, spec, path, opset)
                _half(Path(path))
                _pause_for_the_kill(tmp_path / "ready")
            export.export_onnx = cut_export
        simplecnn_onnx(trained, folder)

    _kill_child_at(stage, tmp_path, write)
    exports, real = [], export.export_onnx
    monkeypatch.setattr(export, "export_onnx", lambda *a, **k: exports.append(1) or real(*a, **k))
    path = simplecnn_onnx(trained, folder)
    assert exports == [1]
    export.check_onnx(path, zoo.get("simplecnn"))
    _no_temporaries_left(folder / "onnx")
