"""PyTorch eager, on the CPU or a CUDA device, FP32 or (CUDA only) FP16, for any model spec."""
from __future__ import annotations

import copy

import numpy as np
import torch

from model.runners.base import BackendUnavailable, Runner, TensorMeta


def disable_tf32() -> None:
    """FP32 means IEEE FP32 here, as for TensorRT (TF32 cleared): PyTorch lets cuDNN convolutions
    use TF32 by default, which moves logits by ~5e-3. The switch is process-wide."""
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False


def as_outputs(result, names: list[str]) -> dict:
    """A module's return value (a tensor, a tuple/list, or a dict) as {declared output name: tensor};
    anything that does not line up with the declared outputs is an error naming both."""
    if isinstance(result, torch.Tensor):
        result = (result,)
    if isinstance(result, dict):
        if set(result) != set(names):
            raise ValueError(f"the module returned outputs {sorted(result)}, the spec declares {names}")
        return {n: result[n] for n in names}
    if isinstance(result, (tuple, list)) and all(isinstance(r, torch.Tensor) for r in result):
        if len(result) != len(names):
            raise ValueError(f"the module returned {len(result)} tensors, the spec declares {len(names)} outputs {names}")
        return dict(zip(names, result))
    raise ValueError(f"the module returned a {type(result).__name__}; expected tensors for the outputs {names}")


class TorchRunner(Runner):
    def __init__(self, model: torch.nn.Module, metadata: dict[str, TensorMeta], outputs: list[str],
                 device: str = "cpu", precision: str = "fp32", **kwargs) -> None:
        super().__init__(**kwargs)
        if precision not in ("fp32", "fp16"):
            raise ValueError(f"TorchRunner precision must be fp32 or fp16, received {precision!r}")
        self.name = f"pytorch-{device.split(':')[0]}-{precision}"
        self._source = model
        self._declared = metadata
        self.outputs = list(outputs)
        self.device = torch.device(device)
        self.precision = precision
        self.model = None

    def _activate(self) -> None:
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailable("PyTorch was asked for CUDA but torch.cuda.is_available() is False")
        if self.precision == "fp16" and self.device.type != "cuda":
            raise BackendUnavailable("PyTorch FP16 runs on CUDA only (CPU half-precision convs are not a deployment target)")
        self.dtype = torch.float16 if self.precision == "fp16" else torch.float32
        if self.device.type == "cuda":
            disable_tf32()
        # A copy, so the caller's model (and its train/eval state) is never moved or cast.
        self.model = copy.deepcopy(self._source).to(self.device, self.dtype).eval()

    def _deactivate(self) -> None:
        self.model = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _input_metadata(self) -> dict[str, TensorMeta]:
        return self._declared

    def to_device(self, feed: dict) -> list[torch.Tensor]:
        """Host arrays as device tensors in the module's argument order; floats at the run's precision."""
        return [torch.from_numpy(feed[n]).to(self.device, self.dtype if feed[n].dtype.kind == "f" else None)
                for n in self._declared]

    def forward_device(self, *args: torch.Tensor) -> dict[str, torch.Tensor]:
        """Device tensors in, device outputs out; no validation, no copies (for device-resident timing)."""
        with torch.inference_mode():
            return as_outputs(self.model(*args), self.outputs)

    def _infer(self, feed):
        out = self.forward_device(*self.to_device(feed))
        # .cpu() waits for the device; float32 out whatever the run's precision, as the spec declares.
        return {n: t.float().cpu().numpy().copy() if t.is_floating_point() else t.cpu().numpy().copy()
                for n, t in out.items()}
