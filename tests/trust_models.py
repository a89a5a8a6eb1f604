"""Small models nobody here wrote, or shaped unlike the shipped ones, as `file.py:factory`
factories for the checks that must hold for any model: a GPT-2-style decoder (MatMul/Gemm, no
Conv) and a net with two outputs of different ranks."""
import torch

from model.profile import BatchProfile
from model.spec import BATCH, Axis, ModelSpec, TensorSpec

PROFILE = BatchProfile(min=1, opts=(4,), max=8)


def gpt2_tiny():
    """transformers' GPT2Model at a tiny config: 2 layers of width 64, hidden states out."""
    from transformers import GPT2Config, GPT2Model

    class Decoder(torch.nn.Module):
        def __init__(self, gpt) -> None:
            super().__init__()
            self.gpt = gpt

        def forward(self, input_ids):
            # With no mask, transformers derives one through aten::diff, which opset 17 lacks.
            mask = torch.ones_like(input_ids)
            return self.gpt(input_ids=input_ids, attention_mask=mask, use_cache=False).last_hidden_state

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=256, bos_token_id=0, eos_token_id=0, n_positions=32, n_embd=64, n_layer=2, n_head=2, attn_implementation="eager")
    spec = ModelSpec("gpt2-tiny", [TensorSpec("input_ids", "int64", (BATCH, "seq"), values=(0, 255))],
                     [TensorSpec("hidden", "float32", (BATCH, "seq", 64))], PROFILE, axes=[Axis("seq", 1, 8, 32)])
    return Decoder(GPT2Model(config)).eval(), spec


class TwoHeads(torch.nn.Module):
    """A conv trunk with a class head (batch, 5) and a feature map (batch, 8, h, w)."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                         torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU())
        self.head = torch.nn.Linear(8, 5)

    def forward(self, image):
        features = self.trunk(image)
        return self.head(features.mean((2, 3))), features


def two_outputs():
    torch.manual_seed(0)
    spec = ModelSpec("two-outputs", [TensorSpec("image", "float32", (BATCH, 3, 16, 16))],
                     [TensorSpec("scores", "float32", (BATCH, 5)), TensorSpec("features", "float32", (BATCH, 8, 16, 16))],
                     PROFILE, logits=("scores",))
    return TwoHeads().eval(), spec
