"""TensorRT in one place: build.py (engines from ONNX, cached plans), compat.py (the only code that
knows TensorRT versions apart), cuda.py (the CUDA runtime through cuda-python), runner.py (one
engine), engine_set.py (one engine per profile), staging.py (the host path into pinned memory)."""
