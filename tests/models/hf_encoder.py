"""A BERT encoder from `transformers` at a tiny size (one layer, 32 wide, vocabulary 100), with a
sequence-classification head: token ids and an attention mask with padding in, per-token hidden
states and class logits out."""
from __future__ import annotations

VOCAB, SEQ_MAX, LABELS = 100, 16, 3


def _sample(rng, size: dict) -> dict:
    """Token ids with padding: each row keeps a random length of at least half the sequence, the rest
    masked out. Short rows of a 100-token vocabulary repeat across seeds (one token: 1 in 99), and a
    calibration row equal to an evaluation row would make the INT8 check see its own answers."""
    import numpy as np

    batch, seq = size["batch"], size["seq"]
    lengths = rng.integers(max(1, (seq + 1) // 2), seq + 1, batch)
    mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int64)
    return {"input_ids": rng.integers(1, VOCAB, (batch, seq)).astype(np.int64) * mask, "attention_mask": mask}


def factory():
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from model.profile import BatchProfile
    from model.spec import BATCH, Axis, ModelSpec, TensorSpec

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            config = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=64, max_position_embeddings=SEQ_MAX, num_labels=LABELS,
                                initializer_range=0.2,  # the default 0.02 gives logits of about 0.05: within FP16's floor
                                attn_implementation="eager")
            self.bert = BertForSequenceClassification(config).eval()

        def forward(self, input_ids, attention_mask):
            out = self.bert(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
            return out.hidden_states[-1], out.logits

    spec = ModelSpec(
        name="hf-bert-encoder",
        inputs=[TensorSpec("input_ids", "int64", (BATCH, "seq"), values=(0, VOCAB - 1)),
                TensorSpec("attention_mask", "int64", (BATCH, "seq"), values=(0, 1))],
        outputs=[TensorSpec("last_hidden_state", "float32", (BATCH, "seq", 32)),
                 TensorSpec("logits", "float32", (BATCH, LABELS))],
        profile=BatchProfile(min=1, opts=(4,), max=8),
        axes=[Axis("seq", 1, 8, SEQ_MAX)],
        logits=("logits",),
        sampler=_sample,
        # As the shipped bert-tiny: ONNX Runtime's static INT8 of a random encoder's hidden states misses
        # the value bound (measured here); an encoder needs per-layer calibration or QAT for INT8.
        precisions=("fp32", "fp16"),
        precision_notes="no INT8: an encoder's MatMul/Softmax inputs need per-layer calibration or QAT to stay meaningful",
    )
    return Encoder().eval(), spec
