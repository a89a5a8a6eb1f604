"""Datasets: real CIFAR-100 from a folder the user names, or the embedded synthetic default.

Both come back as normalized float32 NCHW arrays split three ways: `train`, `calib` (for INT8
calibration, never evaluated on) and `holdout` (the evaluation split every backend is scored on).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from model import progress

NUM_CLASSES = 100
INPUT_SHAPE = (3, 32, 32)  # C, H, W of one CIFAR image
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
SYNTHETIC = "synthetic"
GENERATOR_VERSION = 3  # bump whenever the synthetic images change: it is part of every cache key


@dataclass(frozen=True)
class Split:
    x: np.ndarray  # (N, 3, 32, 32) float32, normalized
    y: np.ndarray  # (N,) int64

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class Dataset:
    name: str
    train: Split
    calib: Split
    holdout: Split
    description: dict  # what identifies it (goes into cache keys and report sidecars)

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.description, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class SyntheticSpec:
    """Each class: a smooth colour field plus an oriented, coloured grating of random phase.
    Images are shifted, re-lit, mixed with another class's field and noised. Template matching
    finds the weak field (about 46% held-out); a CNN also finds the grating (about 75% after the
    default 3 epochs), so the task is learnable on a CPU yet far from solved."""

    seed: int = 0
    train_per_class: int = 100
    calib_per_class: int = 10
    holdout_per_class: int = 30
    max_shift: int = 6
    distractor: float = 0.9
    noise: float = 1.1
    prototype: float = 0.3  # weight of the class's smooth colour field
    texture: float = 0.8  # amplitude of the class's oriented grating (random phase per image)


def _smooth_fields(rng: np.random.Generator, n: int, grid: int) -> np.ndarray:
    """n random (3, 32, 32) fields, bilinearly upsampled from a coarse grid, unit std each."""
    import torch
    import torch.nn.functional as F

    coarse = torch.from_numpy(rng.standard_normal((n, 3, grid, grid)).astype(np.float32))
    fine = F.interpolate(coarse, size=INPUT_SHAPE[1:], mode="bilinear", align_corners=False).numpy()
    fine -= fine.mean(axis=(1, 2, 3), keepdims=True)
    fine /= fine.std(axis=(1, 2, 3), keepdims=True)
    return fine


def _gratings(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each class's oriented, coloured grating (10 orientations x 5 frequencies x 2 colourings).
    The phase is random per image, so averaging a class's images cancels it: a template cannot
    find it, a bank of convolution filters can."""
    n = len(labels)
    # Per-image jitter (a quarter of the gap between neighbouring classes) keeps classes apart
    # but not cleanly separable.
    orientation = (labels % 10) * np.pi / 10 + rng.normal(0, np.pi / 40, n)
    frequency = np.array([2.0, 3.0, 4.5, 6.0, 8.0])[(labels // 10) % 5] / 32 * rng.uniform(0.92, 1.08, n)
    phases = rng.uniform(0, 2 * np.pi, n)
    colour = np.array([[1.0, 0.2, -0.6], [-0.5, 0.9, 0.4]], np.float32)[labels // 50]
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float32)
    proj = xx[None] * np.cos(orientation)[:, None, None] + yy[None] * np.sin(orientation)[:, None, None]
    wave = np.cos(2 * np.pi * frequency[:, None, None] * proj + phases[:, None, None]).astype(np.float32)
    return colour[:, :, None, None] * wave[:, None]


def _synthetic_split(spec: SyntheticSpec, prototypes: np.ndarray, per_class: int, stream: int) -> Split:
    rng = np.random.default_rng([spec.seed, stream])
    y = np.repeat(np.arange(NUM_CLASSES), per_class)
    rng.shuffle(y)
    n = len(y)
    x = prototypes[y].copy()
    shifts = rng.integers(-spec.max_shift, spec.max_shift + 1, size=(n, 2))
    for i, (dy, dx) in enumerate(shifts):
        x[i] = np.roll(x[i], (int(dy), int(dx)), axis=(1, 2))
    others = (y + rng.integers(1, NUM_CLASSES, size=n)) % NUM_CLASSES
    x += spec.distractor * prototypes[others][:, :, ::-1, :]  # flipped so it is not a shifted copy
    if spec.texture:
        x += spec.texture * _gratings(y, rng)
    x *= rng.uniform(0.7, 1.3, size=(n, 3, 1, 1)).astype(np.float32)
    x += spec.noise * rng.standard_normal(x.shape).astype(np.float32)
    return Split(np.ascontiguousarray(x, dtype=np.float32), y.astype(np.int64))


def synthetic(spec: SyntheticSpec = SyntheticSpec()) -> Dataset:
    rng = np.random.default_rng([spec.seed, 0])
    prototypes = spec.prototype * (0.6 * _smooth_fields(rng, NUM_CLASSES, 4) + 0.8 * _smooth_fields(rng, NUM_CLASSES, 8))
    splits = [_synthetic_split(spec, prototypes, n, stream) for stream, n in
              enumerate((spec.train_per_class, spec.calib_per_class, spec.holdout_per_class), start=1)]
    # Per-channel standardization with the training split's statistics, as for CIFAR.
    mean = splits[0].x.mean(axis=(0, 2, 3), keepdims=True)
    std = splits[0].x.std(axis=(0, 2, 3), keepdims=True)
    train, calib, holdout = (Split(np.ascontiguousarray((s.x - mean) / std, dtype=np.float32), s.y) for s in splits)
    return Dataset(SYNTHETIC, train, calib, holdout,
                   description={"name": SYNTHETIC, "generator": GENERATOR_VERSION, **spec.__dict__})


def _normalize_uint8_nhwc(images: np.ndarray) -> np.ndarray:
    x = images.astype(np.float32).transpose(0, 3, 1, 2) / 255.0
    mean = np.asarray(CIFAR100_MEAN, np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(CIFAR100_STD, np.float32).reshape(1, 3, 1, 1)
    return np.ascontiguousarray((x - mean) / std)


def cifar100(root: str | Path, download: bool = False, calib_size: int = 1000) -> Dataset:
    """CIFAR-100 through torchvision; the calibration split is the tail of the training set."""
    root = Path(root).expanduser()
    try:
        from torchvision.datasets import CIFAR100  # imported here: the GPU kit has no torchvision
        from torchvision.datasets import utils as download_utils
    except ImportError as exc:
        raise RuntimeError(f"real CIFAR-100 needs torchvision, which failed to import: {exc}") from exc
    try:
        with progress.lines_in(download_utils, "download CIFAR-100"):
            train = CIFAR100(str(root), train=True, download=download)
            test = CIFAR100(str(root), train=False, download=download)
    except RuntimeError as exc:
        raise RuntimeError(
            f"CIFAR-100 not found under {root} ({exc}). Point --data at the folder that holds "
            "'cifar-100-python/', or add --download to fetch it there."
        ) from exc
    tx, ty = _normalize_uint8_nhwc(train.data), np.asarray(train.targets, np.int64)
    hx, hy = _normalize_uint8_nhwc(test.data), np.asarray(test.targets, np.int64)
    return Dataset(
        name="cifar100",
        train=Split(tx[:-calib_size], ty[:-calib_size]),
        calib=Split(tx[-calib_size:], ty[-calib_size:]),
        holdout=Split(hx, hy),
        description={"name": "cifar100", "root": str(root.resolve()), "calib_size": calib_size},
    )


@lru_cache(maxsize=2)  # SimpleCNN's training and its spec's dataset ask for the same data
def load(data: str = SYNTHETIC, download: bool = False, seed: int = 0) -> Dataset:
    """`synthetic` (the default, made in-process) or a folder holding CIFAR-100."""
    if data == SYNTHETIC:
        return _synthetic_cached(SyntheticSpec(seed=seed))
    return cifar100(data, download=download)


SPLITS = ("train", "calib", "holdout")


def _synthetic_cached(spec: SyntheticSpec) -> Dataset:
    """synthetic(spec), kept in the artifact cache (SIMPLECNN_CACHE, else the project's .cache): made
    once, read afterwards, because every fresh process that needs the data (the regression gate
    starts dozens) would otherwise spend seconds generating the same 14,000 images."""
    from model import cache

    description = {"name": SYNTHETIC, "generator": GENERATOR_VERSION, **spec.__dict__}

    def build(tmp: Path) -> None:
        made = synthetic(spec)
        with open(tmp, "wb") as f:
            np.savez(f, **{f"{name}_{k}": getattr(getattr(made, name), k) for name in SPLITS for k in ("x", "y")})

    found = cache.get_or_build(cache.DEFAULT_CACHE / "data", f"synthetic-{cache.key(description)}.npz", description,
                               build)
    with np.load(found.path) as saved:
        splits = [Split(saved[f"{name}_x"], saved[f"{name}_y"]) for name in SPLITS]
    return Dataset(SYNTHETIC, *splits, description=description)
