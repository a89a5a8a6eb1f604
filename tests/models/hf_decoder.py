"""A GPT-2 language model from `transformers` at a tiny size, called as a user would: token ids in,
no attention mask, no cache. transformers 5 then looks for packed sequences with `torch.diff`, which
the TorchScript ONNX exporter cannot export at opset 17, so this model is exported by the dynamo
exporter (model/export.py's fallback). Its output is what a decoder decides: the next token's
logits, (batch, vocabulary)."""
from __future__ import annotations

VOCAB, SEQ_MAX = 100, 16


def factory():
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from model.profile import BatchProfile
    from model.spec import BATCH, Axis, ModelSpec, TensorSpec

    class Decoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            config = GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=VOCAB, n_positions=SEQ_MAX,
                                bos_token_id=0, eos_token_id=0, attn_implementation="eager")
            self.gpt2 = GPT2LMHeadModel(config).eval()

        def forward(self, input_ids):
            return self.gpt2(input_ids=input_ids, use_cache=False).logits[:, -1, :]

    spec = ModelSpec(
        name="hf-gpt2-decoder",
        inputs=[TensorSpec("input_ids", "int64", (BATCH, "seq"), values=(0, VOCAB - 1))],
        outputs=[TensorSpec("logits", "float32", (BATCH, VOCAB))],
        profile=BatchProfile(min=1, opts=(4,), max=8),
        axes=[Axis("seq", 1, 8, SEQ_MAX)],
        logits=("logits",),
    )
    return Decoder().eval(), spec
