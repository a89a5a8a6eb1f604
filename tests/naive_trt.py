"""The user's TensorRT inference code, reproduced on purpose: never calls `set_input_shape`.

Two ways users size buffers without telling the context the shapes, for any model:
- `flat` (the user's notebook): each -1 in the engine's declared dims replaced by the caller's
  size for that axis, the host buffer returned flat (`Binding: output, Size: 3200`);
- `max`: buffers for the profile's largest shapes, returned shaped so.
Kept in tests/ only, as the bug the suite must catch; it is not part of the product API.
"""
import math

import numpy as np

from model.backends.tensorrt import compat as trt_compat
from model.backends.tensorrt import cuda as cuda_rt


class NaiveTrtRunner:
    def __init__(self, plan: bytes, mode: str = "flat") -> None:
        trt = trt_compat.import_tensorrt()
        self.mode = mode
        self.logger = trt_compat.Logger(trt)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(plan)
        self.context = self.engine.create_execution_context()
        self.names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in self.names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in self.names if n not in self.inputs]
        self.dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in self.names}
        self.stream = cuda_rt.Stream()
        self.execute_ok = None
        self.context_output_dims = {}

    def _shape(self, name: str, feed: dict) -> tuple:
        declared = tuple(self.engine.get_tensor_shape(name))
        if self.mode == "max":
            if name in self.inputs:
                return tuple(self.engine.get_tensor_profile_shape(name, 0)[2])
            first = self.inputs[0]
            top = self.engine.get_tensor_profile_shape(first, 0)[2]
            sizes = iter([d for d, x in zip(top, declared) if x < 0] + [top[0]] * 8)
            return tuple(next(sizes) if d < 0 else d for d in declared)
        sizes = iter([d for d, x in zip(next(iter(feed.values())).shape, declared) if x < 0] * 4)
        return tuple(next(sizes) if d < 0 else d for d in declared)

    def infer(self, feed: dict) -> dict:
        shapes = {n: self._shape(n, feed) for n in self.names}
        device = {n: cuda_rt.DeviceBuffer(max(1, math.prod(shapes[n])) * self.dtypes[n].itemsize) for n in self.names}
        host = {n: np.zeros(math.prod(shapes[n]), self.dtypes[n]) for n in self.outputs}
        try:
            for n in self.names:
                self.context.set_tensor_address(n, device[n].ptr)
            for n in self.inputs:
                device[n].copy_from_host_async(np.ascontiguousarray(feed[n], self.dtypes[n]), self.stream)
            self.execute_ok = self.context.execute_async_v3(self.stream.ptr)
            for n in self.outputs:
                device[n].copy_to_host_async(host[n], self.stream)
            self.stream.synchronize()
            self.context_output_dims = {n: tuple(self.context.get_tensor_shape(n)) for n in self.outputs}
        finally:
            for buf in device.values():
                buf.free()
        return host if self.mode == "flat" else {n: host[n].reshape(shapes[n]) for n in self.outputs}

    def close(self) -> None:
        self.stream.free()
        self.context = self.engine = self.runtime = None
