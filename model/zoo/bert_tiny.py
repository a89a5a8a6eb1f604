"""A small BERT-style encoder from a Hugging Face `transformers` config, seeded random weights.

Two integer inputs (`input_ids`, `attention_mask`) with a dynamic sequence axis beside the batch
axis, LayerNorm, Softmax and MatMul; per-token and pooled outputs. TensorRT narrows the int64
inputs to int32. Offered in FP32 and FP16: INT8 for an encoder needs calibration of every MatMul
and Softmax input, or quantization-aware training, to keep its outputs meaningful, and a random
encoder has no task to check that on."""
from __future__ import annotations

import numpy as np

from model.compare import TOLERANCES
from model.profile import BatchProfile
from model.spec import BATCH, Axis, BuildContext, ModelSpec, TensorSpec

VOCAB, HIDDEN, LAYERS, HEADS, MAX_SEQ, SEED = 1000, 128, 2, 2, 128, 0


def _build(ctx: BuildContext):
    import torch
    from transformers import BertConfig, BertModel

    class Encoder(torch.nn.Module):
        """Tensors in, tensors out: what ONNX export and every runner need."""

        def __init__(self, bert) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask):
            out = self.bert(input_ids=input_ids, attention_mask=attention_mask)
            return out.last_hidden_state, out.pooler_output

    torch.manual_seed(SEED)
    config = BertConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                        intermediate_size=4 * HIDDEN, max_position_embeddings=MAX_SEQ,
                        attn_implementation="eager")  # exports to plain MatMul/Softmax at opset 17
    return Encoder(BertModel(config)).eval()


def _sample(rng: np.random.Generator, size: dict) -> dict:
    """Token ids with padding: each row keeps a random length >= 1, the rest masked out."""
    batch, seq = size[BATCH], size["seq"]
    ids = rng.integers(1, VOCAB, (batch, seq)).astype(np.int64)
    lengths = rng.integers(1, seq + 1, batch)
    mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int64)
    return {"input_ids": ids * mask, "attention_mask": mask}


SPEC = ModelSpec(
    name="bert-tiny",
    inputs=[TensorSpec("input_ids", "int64", (BATCH, "seq"), values=(0, VOCAB - 1)),
            TensorSpec("attention_mask", "int64", (BATCH, "seq"), values=(0, 1))],
    outputs=[TensorSpec("last_hidden_state", "float32", (BATCH, "seq", HIDDEN)),
             TensorSpec("pooler_output", "float32", (BATCH, HIDDEN))],
    profile=BatchProfile(min=1, opts=(16,), max=64),
    axes=[Axis("seq", 1, 64, MAX_SEQ)],
    module=_build,
    identity={"network": "transformers.BertModel", "vocab": VOCAB, "hidden": HIDDEN, "layers": LAYERS,
              "heads": HEADS, "max_seq": MAX_SEQ, "seed": SEED},
    precisions=("fp32", "fp16"),
    precision_notes="no INT8: an encoder's MatMul/Softmax inputs need per-layer calibration or QAT to stay meaningful",
    tolerances={"fp16": TOLERANCES["fp16"]},
    sampler=_sample,
    source="zoo:bert-tiny",
)
