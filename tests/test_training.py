"""Training: learns the embedded task, is reproducible, and its cache never serves a bad checkpoint."""
import json

import pytest
import torch

from model import cache, data, training

TINY_DATA = data.SyntheticSpec(train_per_class=2, calib_per_class=1, holdout_per_class=1)
TINY_TRAIN = training.TrainConfig(epochs=1, batch_size=50)


@pytest.fixture(scope="module")
def tiny():
    return data.synthetic(TINY_DATA)


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


def test_cache_hit_does_not_train(tiny, tmp_path, monkeypatch):
    first = training.load_or_train(tiny, TINY_TRAIN, tmp_path, progress=False)
    monkeypatch.setattr(training, "train", lambda *a, **k: pytest.fail("trained again despite a valid cache"))
    second = training.load_or_train(tiny, TINY_TRAIN, tmp_path, progress=False)
    assert second.checkpoint == first.checkpoint
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values()):
        assert torch.equal(a, b)


def test_cache_key_follows_the_configuration(tiny, tmp_path):
    a = training.load_or_train(tiny, TINY_TRAIN, tmp_path, progress=False)
    b = training.load_or_train(tiny, training.TrainConfig(epochs=1, batch_size=50, seed=1), tmp_path, progress=False)
    assert a.checkpoint != b.checkpoint


@pytest.mark.parametrize("damage", ["truncate", "flip", "no_sidecar"])
def test_damaged_checkpoint_is_retrained_not_loaded(tiny, tmp_path, damage, caplog, training_runs):
    first = training.load_or_train(tiny, TINY_TRAIN, tmp_path, progress=False)
    blob = first.checkpoint.read_bytes()
    if damage == "truncate":
        first.checkpoint.write_bytes(blob[: len(blob) // 3])
    elif damage == "flip":
        first.checkpoint.write_bytes(blob[:-100] + bytes(b ^ 0xFF for b in blob[-100:]))
    else:
        cache.sidecar_path(first.checkpoint).unlink()
    runs_before = len(training_runs)
    again = training.load_or_train(tiny, TINY_TRAIN, tmp_path, progress=False)
    assert len(training_runs) == runs_before + 1  # retrained: a damaged or orphaned checkpoint is never loaded
    reloaded = torch.load(again.checkpoint, weights_only=True)  # loads: the file is whole again
    for (name, x), y in zip(first.model.state_dict().items(), reloaded.values()):
        assert torch.equal(x, y), name  # and deterministic retraining gave the same weights
    assert f"not using cached {first.checkpoint}" in caplog.text


def test_retrain_flag_forces_training(tiny, tmp_path, training_runs):
    training.load_or_train(tiny, TINY_TRAIN, tmp_path, progress=False)
    training.load_or_train(tiny, TINY_TRAIN, tmp_path, retrain=True, progress=False)
    assert len(training_runs) == 2  # the first fills the cache, --retrain trains despite it


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


@pytest.mark.slow
def test_training_is_deterministic(tiny):
    a = training.train(tiny, TINY_TRAIN, progress=False)
    b = training.train(tiny, TINY_TRAIN, progress=False)
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name
