"""SimpleCNN on CIFAR-100 (or the embedded synthetic stand-in), trained on first use and cached."""
from __future__ import annotations

from model import data
from model.data import INPUT_SHAPE, NUM_CLASSES
from model.profile import DEFAULT_PROFILE
from model.spec import BATCH, BuildContext, Built, Dataset, ModelSpec, TensorSpec

INPUT_NAME, OUTPUT_NAME = "input", "output"  # as in the user's notebook


def _build(ctx: BuildContext) -> Built:
    from model.training import TrainConfig, load_or_train

    config = TrainConfig() if ctx.epochs is None else TrainConfig(epochs=ctx.epochs)
    trained = load_or_train(data.load(ctx.data), config, ctx.cache_dir, retrain=ctx.retrain, progress=ctx.progress)
    return Built(trained.model, trained.checkpoint, {**trained.sidecar["figures"], "key": trained.sidecar["key"]})


def _dataset(option: str | None) -> Dataset:
    d = data.load(option or data.SYNTHETIC)
    return Dataset(d.name, {INPUT_NAME: d.holdout.x}, d.holdout.y, {INPUT_NAME: d.calib.x},
                   description=d.description)


SPEC = ModelSpec(
    name="simplecnn",
    inputs=[TensorSpec(INPUT_NAME, "float32", (BATCH, *INPUT_SHAPE))],
    outputs=[TensorSpec(OUTPUT_NAME, "float32", (BATCH, NUM_CLASSES))],
    profile=DEFAULT_PROFILE,
    module=_build,
    identity={"network": "SimpleCNN"},
    logits=(OUTPUT_NAME,),
    dataset=_dataset,
    source="zoo:simplecnn",
)
