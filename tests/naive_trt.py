"""The user's TensorRT inference code, reproduced on purpose: never calls `set_input_shape`.

It sizes buffers from the engine's declared dims (batch -1 replaced by the caller's batch, as the
notebook printed: `Binding: output, Size: 3200`) and returns the flat host buffer. Kept in tests/
only, as the bug the suite must catch; it is not part of the product API.
"""
import numpy as np

from model import cuda_rt, trt_compat


class NaiveTrtRunner:
    def __init__(self, plan: bytes) -> None:
        trt = trt_compat.import_tensorrt()
        self.logger = trt_compat.Logger(trt)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(plan)
        self.context = self.engine.create_execution_context()
        self.names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input = next(n for n in self.names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.output = next(n for n in self.names if n != self.input)
        self.stream = cuda_rt.Stream()
        self.execute_ok = None
        self.context_output_dims = None

    def infer(self, x: np.ndarray) -> np.ndarray:
        batch = x.shape[0]
        sizes = {n: batch * int(np.prod([d for d in self.engine.get_tensor_shape(n) if d > 0])) for n in self.names}
        device = {n: cuda_rt.DeviceBuffer(sizes[n] * 4) for n in self.names}
        host_out = np.zeros(sizes[self.output], np.float32)
        try:
            for n in self.names:
                self.context.set_tensor_address(n, device[n].ptr)
            device[self.input].copy_from_host_async(np.ascontiguousarray(x, np.float32), self.stream)
            self.execute_ok = self.context.execute_async_v3(self.stream.ptr)
            device[self.output].copy_to_host_async(host_out, self.stream)
            self.stream.synchronize()
            self.context_output_dims = tuple(self.context.get_tensor_shape(self.output))
        finally:
            for buf in device.values():
                buf.free()
        return host_out

    def close(self) -> None:
        self.stream.free()
        self.context = self.engine = self.runtime = None
