"""Backends after Polygraphy's backend/<name>/ layout: the registry (registry.py), the runner
contract (base.py, device_arrays.py), one module per framework (pytorch.py, onnxruntime.py) and
TensorRT's folder (tensorrt/: engine building, version shim, CUDA runtime wrapper, runner, engine
set, host staging)."""
