"""A sequence tagger on PyTorch's own recurrent layer: token ids, an embedding, a bidirectional GRU
and a per-token linear head, (batch, seq) in and (batch, seq, tags) out, each token's argmax a
decision. In float16 its head (a Transpose feeding a MatMul) crashed onnxruntime 1.31.1 with
SIGSEGV while the CPU session was created, which took the whole pytest run down with it
(model/backends/ort_session.py now creates that session past the crash and says so)."""
from __future__ import annotations

# Its axis is "steps", not "seq": the zoo's ONNX-file run passes one --axis per name to every file,
# and the transformers models' positions stop at 16.
VOCAB, TAGS, STEPS_MAX = 50, 7, 24


def factory():
    import torch

    from model.profile import BatchProfile
    from model.spec import BATCH, Axis, ModelSpec, TensorSpec

    class Tagger(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(2)
            self.embed = torch.nn.Embedding(VOCAB, 32)
            self.gru = torch.nn.GRU(32, 48, batch_first=True, bidirectional=True)
            self.head = torch.nn.Linear(96, TAGS)

        def forward(self, tokens):
            states, _ = self.gru(self.embed(tokens))
            return self.head(states)

    spec = ModelSpec(
        name="gru-tagger",
        inputs=[TensorSpec("tokens", "int64", (BATCH, "steps"), values=(0, VOCAB - 1))],
        outputs=[TensorSpec("tags", "float32", (BATCH, "steps", TAGS))],
        profile=BatchProfile(min=1, opts=(4,), max=8),
        axes=[Axis("steps", 1, 8, STEPS_MAX)],
        logits=("tags",),
    )
    return Tagger().eval(), spec
