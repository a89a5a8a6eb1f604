"""A small conv net with outputs of three ranks, two of whose spatial sizes follow the input's:
class logits (batch, 10), a stride-2 feature map (batch, 8, h // 2, w // 2) and its row profile
(batch, 8, h // 2). Images of any size in the declared range."""
from __future__ import annotations


def factory():
    import torch

    from model.profile import BatchProfile
    from model.spec import BATCH, Axis, ModelSpec, TensorSpec

    class MultiOutput(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.BatchNorm2d(8),
                                            torch.nn.ReLU())
            self.head = torch.nn.Linear(8, 10)

        def forward(self, image):
            features = self.stem(image)
            rows = features.mean(dim=3)
            return self.head(features.mean(dim=(2, 3))), features, rows

    net = MultiOutput()
    for bn in net.modules():
        if isinstance(bn, torch.nn.modules.batchnorm._BatchNorm):
            bn.momentum = None  # a plain average over the warm-up batches: momentum 0.1 would keep 66% of the initial 0 and 1
    net.train()
    with torch.no_grad():  # BatchNorm statistics from data: outputs of order one, not of the initial buffers
        for _ in range(3):
            net(torch.randn(8, 3, 16, 16))
    spec = ModelSpec(
        name="multi-output",
        inputs=[TensorSpec("image", "float32", (BATCH, 3, "h", "w"))],
        outputs=[TensorSpec("logits", "float32", (BATCH, 10)),
                 TensorSpec("features", "float32", (BATCH, 8, "h // 2", "w // 2")),
                 TensorSpec("rows", "float32", (BATCH, 8, "h // 2"))],
        profile=BatchProfile(min=1, opts=(4,), max=8),
        axes=[Axis("h", 8, 16, 32), Axis("w", 8, 16, 32)],
        logits=("logits",),
        # ONNX Runtime's CPU INT8 of the raw feature map errs by up to 0.8 on values of at most 2.5 (mean
        # error 0.01) here, past the suite's value bound; the classifier of the zoo covers INT8.
        precisions=("fp32", "fp16"),
        precision_notes="no INT8: a raw stride-2 feature map quantized per tensor errs past the value bound",
    )
    return net.eval(), spec
