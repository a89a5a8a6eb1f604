"""Where a reduced-precision conversion breaks and what to keep in float32 to repair it.

- layers.py: every intermediate tensor of a backend against ONNX Runtime CPU FP32, in graph order.
- trt_layers.py: the same for TensorRT (tensors marked as outputs, or bisected), and its repair.
- repair.py: the search for a small set of nodes to keep in float32, and the file it is proposed in.
- report.py: the table, JSON and plot; command.py: `python -m model diagnose`.
"""
