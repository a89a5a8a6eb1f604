"""PyTorch eager, on the CPU or a CUDA device, FP32 or (CUDA only) FP16."""
from __future__ import annotations

import copy

import numpy as np
import torch

from model.network import INPUT_SHAPE
from model.profile import DEFAULT_PROFILE, INPUT_NAME, OUTPUT_NAME, BatchProfile
from model.runners.base import BackendUnavailable, Runner, TensorMeta


def disable_tf32() -> None:
    """FP32 means IEEE FP32 here, as for TensorRT (TF32 cleared): PyTorch lets cuDNN convolutions
    use TF32 by default, which moves logits by ~5e-3. The switch is process-wide."""
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False


class TorchRunner(Runner):
    def __init__(self, model: torch.nn.Module, device: str = "cpu", precision: str = "fp32",
                 profile: BatchProfile = DEFAULT_PROFILE, **kwargs) -> None:
        super().__init__(**kwargs)
        if precision not in ("fp32", "fp16"):
            raise ValueError(f"TorchRunner precision must be fp32 or fp16, received {precision!r}")
        self.name = f"pytorch-{device.split(':')[0]}-{precision}"
        self._source = model
        self.device = torch.device(device)
        self.precision = precision
        self.profile = profile
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
        return {INPUT_NAME: TensorMeta(np.dtype(np.float32), (None, *INPUT_SHAPE), self.profile.min, self.profile.max)}

    def forward_device(self, x: torch.Tensor) -> torch.Tensor:
        """Device tensor in, device logits out; no validation, no copies (for device-resident timing)."""
        with torch.inference_mode():
            return self.model(x)

    def _infer(self, feed):
        x = torch.from_numpy(feed[INPUT_NAME]).to(self.device, self.dtype, non_blocking=False)
        out = self.forward_device(x).float().cpu()  # .cpu() waits for the device
        return {OUTPUT_NAME: out.numpy().copy()}
