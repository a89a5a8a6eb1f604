"""PyTorch eager, on the CPU or a CUDA device, FP32 or (CUDA only) FP16, for any model spec.

On CUDA it takes what TensorRT takes: numpy arrays, its own pinned buffers (`pinned_inputs`,
uploaded with `non_blocking=True`) and arrays already on the GPU: a torch CUDA tensor is used as
it is, another producer's array through `__cuda_array_interface__` or DLPack without a copy.
"""
from __future__ import annotations

import copy

import numpy as np
import torch

from model.backends.base import BackendUnavailable, InputError, Runner, TensorMeta, check_pinned_batch
from model.backends.device_arrays import GpuArray, GpuTarget


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
        self._pinned: dict[str, torch.Tensor] = {}  # page-locked input buffers over the batch range, made on request
        self._handed: dict[tuple[str, int], np.ndarray] = {}

    def _activate(self) -> None:
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailable("PyTorch was asked for CUDA but torch.cuda.is_available() is False")
        if self.precision == "fp16" and self.device.type != "cuda":
            raise BackendUnavailable("PyTorch FP16 runs on CUDA only (CPU half-precision convs are not a deployment target)")
        self.dtype = torch.float16 if self.precision == "fp16" else torch.float32
        if self.device.type == "cuda":
            disable_tf32()
            from model.backends.tensorrt import cuda as cuda_rt

            index = self.device.index if self.device.index is not None else torch.cuda.current_device()
            self._gpu = GpuTarget(index, cuda_rt.locate_pointer)
        # A copy, so the caller's model (and its train/eval state) is never moved or cast.
        self.model = copy.deepcopy(self._source).to(self.device, self.dtype).eval()

    def _deactivate(self) -> None:
        self.model = None
        self._pinned, self._handed, self._gpu = {}, {}, None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _input_metadata(self) -> dict[str, TensorMeta]:
        return self._declared

    def pinned_inputs(self, batch: int) -> dict[str, np.ndarray]:
        self._require_active()
        if self.device.type != "cuda":
            return super().pinned_inputs(batch)
        out = {}
        for n, meta in self._metadata.items():
            check_pinned_batch(n, batch, meta)
            if any(d is None for d in meta.shape[1:]):
                raise InputError(f"Input tensor: {n} | pinned_inputs needs every dim but the batch fixed; this input "
                                 f"is {meta.dtype} {meta.shape}: pass host arrays instead")
            if n not in self._pinned:
                self._pinned[n] = torch.empty((meta.max_batch, *meta.shape[1:]), dtype=torch.from_numpy(
                    np.empty(0, meta.dtype)).dtype, pin_memory=True)
            if (n, batch) not in self._handed:
                self._handed[n, batch] = self._pinned[n].numpy()[:batch]
            out[n] = self._handed[n, batch]
        return out

    def _device_tensor(self, value: GpuArray) -> torch.Tensor:
        source = value.source
        if isinstance(source, torch.Tensor):
            return source  # on this device (checked), ordered on PyTorch's own stream
        if value.stream is not None:  # another producer's pending work: wait for it
            torch.cuda.synchronize(self.device)
        if hasattr(source, "__cuda_array_interface__"):
            return torch.as_tensor(source, device=self.device)
        return torch.from_dlpack(source)

    def to_device(self, feed: dict) -> list[torch.Tensor]:
        """The feed as device tensors in the module's argument order; floats at the run's precision."""
        args = []
        for n in self._declared:
            value = feed[n]
            if isinstance(value, GpuArray):
                x = self._device_tensor(value)
            elif self._handed.get((n, value.shape[0])) is value:  # the pinned buffer: an asynchronous upload
                x = self._pinned[n][: value.shape[0]].to(self.device, non_blocking=True)
            else:
                x = torch.from_numpy(value).to(self.device, non_blocking=False)
            args.append(x.to(self.dtype) if x.is_floating_point() else x)
        return args

    def forward_device(self, *args: torch.Tensor) -> dict[str, torch.Tensor]:
        """Device tensors in, device outputs out; no validation, no copies (for device-resident timing)."""
        with torch.inference_mode():
            return as_outputs(self.model(*args), self.outputs)

    def _infer(self, feed, outputs="host"):
        out = {n: t.float() if t.is_floating_point() else t for n, t in self.forward_device(*self.to_device(feed)).items()}
        if outputs == "device":
            torch.cuda.synchronize(self.device)  # finished when infer returns, as on the host path
            return out
        return {n: t.cpu().numpy().copy() for n, t in out.items()}  # .cpu() waits for the device
