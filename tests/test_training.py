"""Training: learns the embedded task, is reproducible, and its cache never serves a bad checkpoint."""
import json
import shutil

import pytest
import torch

from model import cache, data, training

TINY_DATA = data.SyntheticSpec(train_per_class=1, calib_per_class=1, holdout_per_class=1)
TINY_TRAIN = training.TrainConfig(epochs=1, batch_size=50)


@pytest.fixture(scope="module")
def tiny():
    return data.synthetic(TINY_DATA)


@pytest.fixture(scope="module")
def tiny_cache(tiny, tmp_path_factory):
    """A cache holding one tiny training run; tests start from a copy instead of training again."""
    folder = tmp_path_factory.mktemp("tiny-cache")
    return folder, training.load_or_train(tiny, TINY_TRAIN, folder, progress=False)


@pytest.fixture
def filled(tiny_cache, tmp_path):
    """(cache folder, the run it holds): a private copy of tiny_cache's folder."""
    folder, run = tiny_cache
    shutil.copytree(folder, tmp_path, dirs_exist_ok=True)
    return tmp_path, run


def same_weights(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for name in a:
        assert torch.equal(a[name], b[name]), name


@pytest.fixture
def training_runs(monkeypatch) -> list:
    """One entry per real training run load_or_train starts from here on."""
    calls, real = [], training.train
    monkeypatch.setattr(training, "train", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def test_sidecar_records_the_run(trained):
    meta = trained.sidecar
    assert {"data", "holdout_accuracy", "train_seconds", "torch"} <= set(meta["figures"])
    assert {"epochs", "seed"} <= set(meta["key"]["train"]) and meta["sha256"] == cache.sha256_file(trained.checkpoint)
    assert json.loads(cache.sidecar_path(trained.checkpoint).read_text()) == meta


def test_embedded_task_is_learned_well_above_chance(trained, dataset):
    if dataset.name != data.SYNTHETIC:
        pytest.skip("the 50% bar is for the embedded dataset")
    assert trained.sidecar["figures"]["holdout_accuracy"] >= 0.50  # chance is 0.01
    assert training.evaluate(trained.model, dataset.holdout) == pytest.approx(trained.sidecar["figures"]["holdout_accuracy"])


def test_cache_hit_does_not_train(tiny, filled, monkeypatch):
    folder, first = filled
    monkeypatch.setattr(training, "train", lambda *a, **k: pytest.fail("trained again despite a valid cache"))
    second = training.load_or_train(tiny, TINY_TRAIN, folder, progress=False)
    assert second.checkpoint.name == first.checkpoint.name and second.sidecar == first.sidecar
    same_weights(first.model.state_dict(), second.model.state_dict())


def test_cache_key_follows_the_configuration(tiny, filled, training_runs):
    folder, a = filled
    b = training.load_or_train(tiny, training.TrainConfig(epochs=1, batch_size=50, seed=1), folder, progress=False)
    assert a.checkpoint.name != b.checkpoint.name and len(training_runs) == 1


@pytest.mark.parametrize("damage", ["truncate", "flip", "no_sidecar"])
def test_damaged_checkpoint_is_retrained_not_loaded(tiny, filled, damage, caplog, training_runs):
    folder, first = filled
    checkpoint = folder / first.checkpoint.relative_to(first.checkpoint.parents[1])
    blob = checkpoint.read_bytes()
    if damage == "truncate":
        checkpoint.write_bytes(blob[: len(blob) // 3])
    elif damage == "flip":
        checkpoint.write_bytes(blob[:-100] + bytes(b ^ 0xFF for b in blob[-100:]))
    else:
        cache.sidecar_path(checkpoint).unlink()
    again = training.load_or_train(tiny, TINY_TRAIN, folder, progress=False)
    assert len(training_runs) == 1  # retrained: a damaged or orphaned checkpoint is never loaded
    assert again.checkpoint == checkpoint
    # it loads (the file is whole again), and deterministic retraining gave the same weights
    same_weights(first.model.state_dict(), torch.load(again.checkpoint, weights_only=True))
    assert f"not using cached {checkpoint}" in caplog.text


def test_retrain_flag_forces_training(tiny, filled, training_runs):
    folder, _ = filled
    training.load_or_train(tiny, TINY_TRAIN, folder, retrain=True, progress=False)
    assert len(training_runs) == 1  # the cache held this run; --retrain trains despite it


@pytest.mark.parametrize("before", [False, True])
def test_training_leaves_the_deterministic_setting_as_it_found_it(tiny, before):
    # Left on, it makes CUDA PyTorch raise on cuBLAS matmuls in the same process after training.
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(before)
    try:
        training.train(tiny, TINY_TRAIN, progress=False)
        assert torch.are_deterministic_algorithms_enabled() is before
    finally:
        torch.use_deterministic_algorithms(was)


def test_training_is_deterministic(tiny, tiny_cache):
    same_weights(tiny_cache[1].model.state_dict(), training.train(tiny, TINY_TRAIN, progress=False).state_dict())
