"""A classifier of a few thousand weights, for tests that build every artifact of a model (ONNX,
its FP16 and INT8 variants, engines) more than once: seconds where the zoo's models take minutes.

Its 100 classes from 8 features give near-tied logits in many rows, so reduced precisions flip
some decisions on the 256 evaluation rows: an agreement figure computed from its outputs can be
told apart from a constant 1.0.
"""
from __future__ import annotations

from dataclasses import replace

from model.profile import BatchProfile
from model.spec import BATCH, Axis, ModelSpec, TensorSpec

CLASSES = 100
SPEC = ModelSpec(
    name="tiny-classifier",
    inputs=[TensorSpec("input", "float32", (BATCH, 2, 4, 4))],
    outputs=[TensorSpec("logits", "float32", (BATCH, CLASSES))],
    # The whole evaluation feed (256 rows) fits one call, so a test can score it without chunking.
    profile=BatchProfile(min=1, opts=(8,), max=256),
    logits=("logits",),
    source="tests/tiny_models.py",
)


def network(seed: int):
    import torch

    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(2, 2, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Linear(32, CLASSES)).eval()


def spec_with_weights(seed: int) -> ModelSpec:
    """The same model (name, tensors, factory code) with the weights `seed` draws."""
    net = network(seed)
    return replace(SPEC, module=lambda ctx: net)


def classifier():
    """`--model tests/tiny_models.py:classifier`: the (module, spec) a user's file returns."""
    return network(0), SPEC


def segmenter_spec(class_axis: int = 1) -> ModelSpec:
    """A segmenter's tensors: a (N, 5, H, W) mask of classes per pixel, H and W following the image's."""
    return ModelSpec("segmenter", [TensorSpec("image", "float32", (BATCH, 3, "h", "w"))],
                     [TensorSpec("mask", "float32", (BATCH, 5, "h", "w"))], BatchProfile(1, (2,), 4),
                     axes=[Axis("h", 8, 16, 32), Axis("w", 8, 16, 32)], logits=("mask",), class_axis=class_axis)


def segmenter():
    """Classes at half resolution, resized back to the input's: the TorchScript exporter leaves the
    Resize's channel dim symbolic ('Resizemask_dim_1'), though it is always 5."""
    import torch

    class Segmenter(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.encode = torch.nn.Conv2d(3, 5, 3, stride=2, padding=1)

        def forward(self, image):
            return torch.nn.functional.interpolate(self.encode(image), size=image.shape[-2:], mode="bilinear")

    return Segmenter().eval(), segmenter_spec()
