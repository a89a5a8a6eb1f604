"""ONNX Runtime with explicitly chosen execution providers.

ONNX Runtime quietly falls back to the CPU when the CUDA provider cannot load; this runner checks
which providers the session really got and refuses to pretend.

On CUDA every call goes through IO binding: host inputs are bound as CPU inputs (ONNX Runtime
copies them), inputs already on the GPU by their pointer (no copy), outputs on the GPU, copied
back only for `outputs="host"`. ONNX Runtime has no pinned-buffer input, so `pinned_inputs` is
refused here.
"""
from __future__ import annotations

import numpy as np

from model.backends import ort_session
from model.backends.base import BackendUnavailable, Runner, TensorMeta
from model.backends.device_arrays import DeviceView, GpuArray, GpuTarget

# The CUDA provider computes FP32 convolutions in TF32 unless told not to (use_tf32=0); FP32
# here means IEEE FP32 on every backend.
CUDA_OPTIONS = {"use_tf32": "0"}
PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": [("CUDAExecutionProvider", CUDA_OPTIONS), "CPUExecutionProvider"],
}
_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
               "tensor(int32)": np.int32, "tensor(bool)": np.bool_, "tensor(double)": np.float64}


def preload_cuda_libraries(ort) -> None:
    """onnxruntime-gpu finds CUDA/cuDNN from the nvidia-* wheels only once they are preloaded."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        try:
            preload()
        except Exception:  # the provider check below reports what is missing
            pass


class OrtRunner(Runner):
    def __init__(self, onnx_path, metadata: dict[str, TensorMeta], device: str = "cpu",
                 label: str = "fp32", cache_dir=None, **kwargs) -> None:
        super().__init__(**kwargs)
        if device not in PROVIDERS:
            raise ValueError(f"OrtRunner device must be one of {sorted(PROVIDERS)}, received {device!r}")
        self.name = f"onnxruntime-{device}-{label}"
        self.onnx_path = str(onnx_path)
        self.device = device
        self._declared = metadata
        self.cache_dir = cache_dir  # where the session setting that survived (ort_session.py) is kept
        self.session = None

    def _activate(self) -> None:
        import onnxruntime as ort

        providers = PROVIDERS[self.device]
        wanted = providers[0][0] if isinstance(providers[0], tuple) else providers[0]
        if self.device == "cuda":
            preload_cuda_libraries(ort)
        if wanted not in ort.get_available_providers():
            raise BackendUnavailable(f"ONNX Runtime {ort.__version__} has no {wanted} "
                                     f"(available: {ort.get_available_providers()})")
        # log_severity 3: the provider fallback below is reported by us, not as log noise
        session, setting = ort_session.create(self.onnx_path, providers, log_severity=3, cache_dir=self.cache_dir)
        self.note = setting.note
        if session.get_providers()[0] != wanted:
            raise BackendUnavailable(f"ONNX Runtime was asked for {wanted} but the session runs on "
                                     f"{session.get_providers()} (no usable GPU or CUDA libraries)")
        self.session = session
        self._outputs = [(o.name, np.dtype(_ORT_DTYPES[o.type])) for o in session.get_outputs()]
        if self.device == "cuda":
            from model.backends.tensorrt import cuda as cuda_rt

            self._gpu = GpuTarget(0, cuda_rt.locate_pointer)  # the CUDA provider's default device_id

    def _deactivate(self) -> None:
        self.session, self._gpu = None, None

    def _input_metadata(self) -> dict[str, TensorMeta]:
        """The spec's metadata, after checking the session takes exactly those inputs."""
        found = {a.name: (np.dtype(_ORT_DTYPES.get(a.type, np.void)), tuple(d if isinstance(d, int) else None for d in a.shape))
                 for a in self.session.get_inputs()}
        declared = {n: (m.dtype, m.shape) for n, m in self._declared.items()}
        if found != declared:
            raise ValueError(f"{self.onnx_path}: the session's inputs {found} differ from the spec's {declared}")
        return self._declared

    def _infer(self, feed, outputs="host"):
        names = [name for name, _ in self._outputs]
        if self._gpu is None:
            return dict(zip(names, self.session.run(names, feed)))
        binding = self.session.io_binding()
        for name, value in feed.items():
            if isinstance(value, GpuArray):
                if value.stream is not None:  # ONNX Runtime runs on its own stream: the producer's must be done
                    from model.backends.tensorrt import cuda as cuda_rt

                    cuda_rt.synchronize_foreign_stream(value.stream)
                binding.bind_input(name, "cuda", value.device, value.dtype.type, list(value.shape), value.ptr)
            else:
                binding.bind_cpu_input(name, value)
        for name in names:
            binding.bind_output(name, "cuda", self._gpu.device)
        self.session.run_with_iobinding(binding)
        if outputs == "host":
            return dict(zip(names, binding.copy_outputs_to_cpu()))
        binding.synchronize_outputs()
        return {name: DeviceView(v.data_ptr(), v.shape(), dtype, owner=v)
                for (name, dtype), v in zip(self._outputs, binding.get_outputs())}
