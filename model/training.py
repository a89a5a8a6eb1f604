"""Seeded CPU training with a cache keyed by the training configuration.

A checkpoint is `simplecnn-<key>.pt` (a state_dict), cached through `model.cache`: its sidecar
holds the configuration and the digest of the network's and this module's code (the key), the held-out accuracy, training time and torch version, all
covered by the sidecar's hash; a checkpoint its sidecar does not vouch for is retrained, never loaded.
"""
from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from model import cache, network
from model.data import Dataset, Split
from model.network import SimpleCNN
from model.progress import progress as progress_reporter


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 3
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0


@dataclass(frozen=True)
class Trained:
    model: SimpleCNN  # in eval mode
    checkpoint: Path
    sidecar: dict  # the cache record; the measured figures are under "figures"


def evaluate(model: nn.Module, split: Split, batch_size: int = 500) -> float:
    """Top-1 accuracy (fraction) of a torch model on a split."""
    model.eval()
    correct = 0
    with torch.inference_mode():
        for i in range(0, len(split), batch_size):
            logits = model(torch.from_numpy(split.x[i : i + batch_size]))
            correct += int((logits.argmax(1).numpy() == split.y[i : i + batch_size]).sum())
    return correct / len(split)


def train(dataset: Dataset, config: TrainConfig, progress: bool = True) -> SimpleCNN:
    # Deterministic kernels only while training: left on for the process, they make CUDA PyTorch
    # raise on cuBLAS matmuls later (it wants CUBLAS_WORKSPACE_CONFIG) in the runs that train first.
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        return _train(dataset, config, progress)
    finally:
        torch.use_deterministic_algorithms(was_deterministic)


def _train(dataset: Dataset, config: TrainConfig, progress: bool) -> SimpleCNN:
    torch.manual_seed(config.seed)
    model = SimpleCNN()
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = -(-len(dataset.train) // config.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, config.lr, total_steps=config.epochs * steps_per_epoch)
    loss_fn = nn.CrossEntropyLoss()
    order_rng = np.random.default_rng(config.seed)
    x_all, y_all = torch.from_numpy(dataset.train.x), torch.from_numpy(dataset.train.y)
    bar = progress_reporter(config.epochs * steps_per_epoch, "train SimpleCNN", "step", enabled=progress)
    for epoch in range(config.epochs):
        model.train()
        order = torch.from_numpy(order_rng.permutation(len(dataset.train)))
        for i in range(0, len(order), config.batch_size):
            idx = order[i : i + config.batch_size]
            loss = loss_fn(model(x_all[idx]), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update()
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}")
    bar.close()
    return model.eval()


def _cache_config(dataset: Dataset, config: TrainConfig) -> dict:
    # torch's version is recorded in the sidecar, not keyed: a checkpoint trained by one release
    # loads in another, and the GPU machine's two Pythons (different torch) share one model.
    return {"data": dataset.description, "train": asdict(config),
            "code": cache.source_digest(network, sys.modules[__name__])}


def load_or_train(
    dataset: Dataset,
    config: TrainConfig = TrainConfig(),
    cache_dir: str | Path = cache.DEFAULT_CACHE,
    retrain: bool = False,
    progress: bool = True,
) -> Trained:
    cache_config = _cache_config(dataset, config)
    trained = {}

    def build(tmp: Path) -> dict:
        start = time.perf_counter()
        trained["model"] = model = train(dataset, config, progress=progress)
        seconds = time.perf_counter() - start
        torch.save(model.state_dict(), tmp)
        return {"data": dataset.name, "holdout_accuracy": evaluate(model, dataset.holdout),
                "train_seconds": round(seconds, 1), "torch": torch.__version__}

    art = cache.get_or_build(Path(cache_dir) / "weights", f"simplecnn-{cache.key(cache_config)}.pt",
                             cache_config, build, rebuild=retrain)
    model = trained.get("model")
    if model is None:  # cached (here or by a concurrent run): load the verified bytes
        model = SimpleCNN()
        model.load_state_dict(torch.load(art.path, map_location="cpu", weights_only=True))
    return Trained(model.eval(), art.path, art.sidecar)
