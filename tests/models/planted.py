"""Two tiny classifiers whose reduced precision breaks at one known layer, for the diagnosis tests.

`fp16_overflow`: `big` scales its input into the hundreds of thousands, past float16's 65504; a
group LayerNorm after it brings FP32 back to unit scale, so FP32 answers are right while every
float16 value from `big` on is infinite. The reshape into groups between them is what makes ONNX
Runtime CPU show it: it computes float16 Gemm and LayerNorm in float32 behind inserted casts, but a
reshape takes float16 as it is, so `big`'s output is rounded to float16 (inf) on its way.

`int8_outlier`: `wide` has one output channel ~1000x the others. Per-tensor activation quantization
spreads 255 levels over that channel's range, which rounds the other channels (the only ones `head`
reads) to zero: INT8 decisions turn to noise while FP32 is untouched.

Each factory returns (module, ModelSpec), as `--model tests/models/planted.py:fp16_overflow` takes.
"""
from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from model.profile import BatchProfile
from model.spec import BATCH, ModelSpec, TensorSpec

FEATURES, HIDDEN, CLASSES, GROUPS = 16, 32, 10, 4
# The planted layers, by module name: their ONNX nodes are the ones whose weight is `<name>.weight`.
FP16_LAYER, INT8_LAYER = "big", "wide"


def _spec(name: str, precision: str) -> ModelSpec:
    # Offered in FP32 and the one precision it was planted for: its other one means nothing here.
    return ModelSpec(name=name, inputs=[TensorSpec("input", "float32", (BATCH, FEATURES))],
                     outputs=[TensorSpec("logits", "float32", (BATCH, CLASSES))],
                     profile=BatchProfile(min=1, opts=(8,), max=64), logits=("logits",),
                     precisions=("fp32", precision), precision_notes=f"planted to break in {precision} only")


class Fp16Overflow(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(FEATURES, HIDDEN)
        self.big = nn.Linear(HIDDEN, HIDDEN)
        self.norm = nn.LayerNorm(HIDDEN // GROUPS)
        self.head = nn.Linear(HIDDEN, CLASSES)

    def forward(self, x):
        groups = self.big(torch.relu(self.stem(x))).reshape(-1, GROUPS, HIDDEN // GROUPS)
        return self.head(self.norm(groups).reshape(-1, HIDDEN))


class Int8Outlier(nn.Module):
    """Hand-set weights: `stem` splits each feature into its positive and negative parts, `wide`
    passes them on (plus the outlier channel 0, which nothing reads), `head` subtracts the parts
    again, so logit k is feature k + 1 and FP32 decisions have the sampler's margin of ~3."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(FEATURES, HIDDEN)
        self.wide = nn.Linear(HIDDEN, HIDDEN)
        self.head = nn.Linear(HIDDEN, CLASSES)

    def forward(self, x):
        return self.head(self.wide(torch.relu(self.stem(x))))


def _separable(rng, size: dict) -> dict:
    """Rows whose class k has feature k + 1 raised by 3 over unit-scale noise: clear decisions."""
    x = rng.normal(0.0, 0.3, (size[BATCH], FEATURES)).astype("float32")
    x[range(len(x)), 1 + rng.integers(0, CLASSES, len(x))] += 3.0
    return {"input": x}


def fp16_overflow():
    torch.manual_seed(0)
    net = Fp16Overflow()
    with torch.no_grad():
        net.stem.weight.mul_(100.0)
        net.big.weight.mul_(2e4)  # weights stay inside float16, |big(x)| reaches ~1e5-1e6: its output overflows
        net.head.weight.mul_(4.0)  # clear decisions, so FP32 and a working FP16 agree row by row
    return net.eval(), _spec("planted-fp16", "fp16")


def int8_outlier():
    torch.manual_seed(0)
    net = Int8Outlier()
    eye = torch.eye(FEATURES)
    with torch.no_grad():
        net.stem.weight.copy_(torch.cat([eye, -eye]))
        net.wide.weight.copy_(torch.eye(HIDDEN))
        net.wide.weight[0] = 3e3 * torch.randn(HIDDEN)  # the outlier channel sets the activation scale
        net.head.weight.zero_()
        for k in range(CLASSES):
            net.head.weight[k, 1 + k], net.head.weight[k, FEATURES + 1 + k] = 1.0, -1.0
        for layer in (net.stem, net.wide, net.head):
            layer.bias.zero_()
    return net.eval(), replace(_spec("planted-int8", "int8"), sampler=_separable)
