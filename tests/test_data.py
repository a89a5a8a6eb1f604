"""The embedded dataset is deterministic, balanced, normalized and not trivial; CIFAR errors are clear."""
import numpy as np
import pytest

from model import data


def test_synthetic_is_deterministic_and_seeded():
    spec = data.SyntheticSpec(train_per_class=3, calib_per_class=1, holdout_per_class=2)
    a, b = data.synthetic(spec), data.synthetic(spec)
    assert np.array_equal(a.train.x, b.train.x) and np.array_equal(a.holdout.y, b.holdout.y)
    c = data.synthetic(data.SyntheticSpec(seed=1, train_per_class=3, calib_per_class=1, holdout_per_class=2))
    assert not np.array_equal(a.train.x, c.train.x)
    assert a.fingerprint == b.fingerprint != c.fingerprint


def test_synthetic_splits_shapes_balance_and_disjointness(dataset):
    if dataset.name != data.SYNTHETIC:
        pytest.skip("checks the embedded dataset")
    spec = data.SyntheticSpec()
    for split, per_class in ((dataset.train, spec.train_per_class), (dataset.calib, spec.calib_per_class),
                             (dataset.holdout, spec.holdout_per_class)):
        assert split.x.shape == (100 * per_class, 3, 32, 32) and split.x.dtype == np.float32
        assert split.x.flags.c_contiguous
        assert np.bincount(split.y, minlength=100).tolist() == [per_class] * 100
    # no held-out image is a copy of a training image
    train_hashes = {row.tobytes() for row in dataset.train.x[:2000]}
    assert not any(row.tobytes() in train_hashes for row in dataset.holdout.x)


def test_synthetic_is_roughly_normalized(dataset):
    x = dataset.holdout.x
    assert abs(float(x.mean())) < 0.1 and 0.8 < float(x.std()) < 1.2


def test_synthetic_is_not_solved_by_nearest_class_mean(dataset, trained):
    """A pixel-space nearest-centroid classifier must do far worse than the CNN: the task needs features."""
    if dataset.name != data.SYNTHETIC:
        pytest.skip("checks the embedded dataset")
    centroids = np.stack([dataset.train.x[dataset.train.y == c].mean(0).ravel() for c in range(100)])
    h = dataset.holdout.x.reshape(len(dataset.holdout), -1)
    d = (h**2).sum(1, keepdims=True) - 2 * h @ centroids.T + (centroids**2).sum(1)
    template = float((d.argmin(1) == dataset.holdout.y).mean())
    assert template < 0.6 and template <= trained.sidecar["figures"]["holdout_accuracy"] - 0.15


def test_missing_cifar_folder_says_what_to_do(tmp_path):
    pytest.importorskip("torchvision", reason="CIFAR-100 loading needs torchvision")
    with pytest.raises(RuntimeError, match=r"CIFAR-100 not found under .* --download"):
        data.load(str(tmp_path / "nowhere"))


def test_cifar_folder_is_read_and_normalized(tmp_path, monkeypatch):
    """A miniature CIFAR-100 in torchvision's on-disk format, so the real loader path runs here."""
    pytest.importorskip("torchvision", reason="CIFAR-100 loading needs torchvision")
    import hashlib
    import pickle

    from torchvision.datasets import CIFAR100

    folder = tmp_path / CIFAR100.base_folder
    folder.mkdir()
    rng = np.random.default_rng(0)
    files = {}
    for name, n in (("train", 1100), ("test", 50)):
        entry = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "fine_labels": rng.integers(0, 100, n).tolist()}
        blob = pickle.dumps(entry)
        (folder / name).write_bytes(blob)
        files[name] = hashlib.md5(blob).hexdigest()
    meta = pickle.dumps({"fine_label_names": [f"c{i}" for i in range(100)]})
    (folder / "meta").write_bytes(meta)
    monkeypatch.setattr(CIFAR100, "meta", {**CIFAR100.meta, "md5": hashlib.md5(meta).hexdigest()})
    monkeypatch.setattr(CIFAR100, "train_list", [["train", files["train"]]])
    monkeypatch.setattr(CIFAR100, "test_list", [["test", files["test"]]])
    ds = data.load(str(tmp_path))
    assert (len(ds.train), len(ds.calib), len(ds.holdout)) == (100, 1000, 50)
    assert ds.holdout.x.shape == (50, 3, 32, 32) and ds.holdout.x.dtype == np.float32
    assert -2.1 < float(ds.holdout.x.min()) and float(ds.holdout.x.max()) < 2.2
