"""PyTorch eager, on the CPU or a CUDA device, FP32 or (CUDA only) FP16.

On CUDA it takes what TensorRT takes: numpy arrays, its own pinned buffers (`pinned_inputs`,
uploaded with `non_blocking=True`) and arrays already on the GPU: a torch CUDA tensor is used as
it is, another producer's array through `__cuda_array_interface__` or DLPack without a copy.
"""
from __future__ import annotations

import copy

import numpy as np
import torch

from model.network import INPUT_SHAPE
from model.profile import DEFAULT_PROFILE, INPUT_NAME, OUTPUT_NAME, BatchProfile
from model.runners.base import BackendUnavailable, Runner, TensorMeta, check_pinned_batch
from model.runners.device_arrays import GpuArray, GpuTarget


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
        self._pinned = None  # page-locked input buffer for the whole batch range, made on first request
        self._handed: dict[int, np.ndarray] = {}

    def _activate(self) -> None:
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailable("PyTorch was asked for CUDA but torch.cuda.is_available() is False")
        if self.precision == "fp16" and self.device.type != "cuda":
            raise BackendUnavailable("PyTorch FP16 runs on CUDA only (CPU half-precision convs are not a deployment target)")
        self.dtype = torch.float16 if self.precision == "fp16" else torch.float32
        if self.device.type == "cuda":
            disable_tf32()
            from model import cuda_rt

            index = self.device.index if self.device.index is not None else torch.cuda.current_device()
            self._gpu = GpuTarget(index, cuda_rt.locate_pointer)
        # A copy, so the caller's model (and its train/eval state) is never moved or cast.
        self.model = copy.deepcopy(self._source).to(self.device, self.dtype).eval()

    def _deactivate(self) -> None:
        self.model = None
        self._pinned, self._handed, self._gpu = None, {}, None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _input_metadata(self) -> dict[str, TensorMeta]:
        return {INPUT_NAME: TensorMeta(np.dtype(np.float32), (None, *INPUT_SHAPE), self.profile.min, self.profile.max)}

    def pinned_inputs(self, batch: int) -> dict[str, np.ndarray]:
        self._require_active()
        if self.device.type != "cuda":
            return super().pinned_inputs(batch)
        check_pinned_batch(INPUT_NAME, batch, self._metadata[INPUT_NAME])
        if self._pinned is None:
            self._pinned = torch.empty((self.profile.max, *INPUT_SHAPE), dtype=torch.float32, pin_memory=True)
        if batch not in self._handed:
            self._handed[batch] = self._pinned.numpy()[:batch]
        return {INPUT_NAME: self._handed[batch]}

    def forward_device(self, x: torch.Tensor) -> torch.Tensor:
        """Device tensor in, device logits out; no validation, no copies (for device-resident timing)."""
        with torch.inference_mode():
            return self.model(x)

    def _device_tensor(self, value: GpuArray) -> torch.Tensor:
        source = value.source
        if isinstance(source, torch.Tensor):
            return source  # on this device (checked), ordered on PyTorch's own stream
        if value.stream is not None:  # another producer's pending work: wait for it
            torch.cuda.synchronize(self.device)
        if hasattr(source, "__cuda_array_interface__"):
            return torch.as_tensor(source, device=self.device)
        return torch.from_dlpack(source)

    def _infer(self, feed, outputs="host"):
        value = feed[INPUT_NAME]
        if isinstance(value, GpuArray):
            x = self._device_tensor(value).to(self.dtype)
        elif self._handed.get(value.shape[0]) is value:  # the pinned buffer: an asynchronous upload
            x = self._pinned[: value.shape[0]].to(self.device, self.dtype, non_blocking=True)
        else:
            x = torch.from_numpy(value).to(self.device, self.dtype, non_blocking=False)
        out = self.forward_device(x).float()
        if outputs == "device":
            torch.cuda.synchronize(self.device)  # finished when infer returns, as on the host path
            return {OUTPUT_NAME: out}
        return {OUTPUT_NAME: out.cpu().numpy().copy()}  # .cpu() waits for the device
