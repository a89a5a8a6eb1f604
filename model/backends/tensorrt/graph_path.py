"""The TensorRT runner's path for host input up to `graph_max_bytes`: the whole batch staged at
once into pinned memory by the calling thread, then the upload, the NaN/Inf check, the engine and
the copy out queued together. Once the same shapes, addresses and output place come twice in a
row, what follows the staging is captured as one CUDA graph and replayed, so a small batch costs
one launch instead of several driver calls (batch 1 end to end: about 45 us on the H200).
"""
from __future__ import annotations

import logging
import math

import numpy as np

from model.backends.base import nonfinite_error
from model.backends.device_arrays import DeviceView, GpuArray
from model.backends.tensorrt import cuda as cuda_rt
from model.backends.tensorrt import staging as host_staging
from model.backends.tensorrt.finite_gpu import OutOfHalf

log = logging.getLogger("model.backends.tensorrt.runner")  # the runner's warnings, under the one name users filter


class GraphPath:
    """Mixed into TrtRunner, beside its bindings (bindings.py). Reads the runner's buffers
    (`host`, `device`, `_wire_host`, `_wire_device`), streams, `_copy`, `_finite_gpu`,
    `_gpu_checked` and `use_graphs`."""

    def _stage_whole(self, name: str, value: np.ndarray, half: bool) -> np.ndarray | None:
        """A host input into the pinned buffer (`half`: converted into the float16 one, checked on
        the GPU as it is widened). Returns the rows still to be checked for NaN/Inf on the host
        (None: nothing to check there): the calling thread checks them while the GPU runs."""
        if half:
            self._copy(self._wire_host[name].view(value.shape), value)
            return None
        own = self._own_pinned(name, value)
        check = self._host_checks(name, value.dtype)
        if own and not check:
            return None
        if own:
            return value
        pinned = self.host[name].view(value.shape)
        self._copy(pinned, value)
        return pinned if check else None

    def _infer_whole(self, feed, outputs, halves):
        """The whole batch at once: staged (or pointed to, GPU feeds), then upload, NaN/Inf check
        beside the engine, engine and copy out; the second call with the same shapes, addresses
        and output place captures what follows the staging as one CUDA graph, replayed from then
        on. Written for as few Python steps as it can."""
        inputs = self.inputs
        out_shapes = self.bind({n: feed[n].shape for n in inputs})
        uploads, addresses, unchecked = [], [], []
        for n in inputs:
            value = feed[n]
            if isinstance(value, GpuArray):
                if value.stream is not None:  # the producer's queued work first, on the device
                    self._producer_event.record(value.stream)
                    self.stream.wait(self._producer_event)
                addresses.append(self._device_address(n, value))
            else:
                rows = self._stage_whole(n, value, n in halves)
                if rows is not None:
                    unchecked.append((n, rows))
                uploads.append(n)
                addresses.append(self.device[n].ptr)
        widens = [n for n in uploads if n in halves]
        checks = [n for n in uploads if n in self._gpu_checked and n not in halves]
        key = (self._bound_shape, addresses, uploads, checks, widens, outputs)  # what a captured graph bakes in
        if key != self._io_key:
            self._drop_io_graph()
            self._io_key, self._calls_at_key = key, 0
            for n, ptr in zip(inputs, addresses):
                self._point(n, ptr)
            for n in self.outputs:
                self._point(n, self.device[n].ptr)
        download = outputs == "host"
        if self._io_graph is not None:
            self._io_graph.launch()
        else:
            self._enqueue_io(uploads, checks, download, widens)
        # Checked while the GPU works (the copy only reads them); a NaN/Inf fails the call after it.
        bad = next((n for n, rows in unchecked if not host_staging.all_finite(rows)), None)
        self.stream.synchronize()
        flagged = self._finite_gpu.flagged() if checks or widens else None  # read (and cleared) either way
        if bad is None and flagged in halves:
            raise OutOfHalf(flagged)
        bad = bad or flagged
        if bad is not None:
            raise nonfinite_error(bad, feed[bad])
        results = self._results(out_shapes, outputs)
        if self._io_graph is None:
            self._calls_at_key += 1
            if self.use_graphs and self._calls_at_key >= 2:
                self._capture_io_graph(uploads, checks, download, widens)
        return results

    def _results(self, out_shapes: dict, outputs: str) -> dict:
        if outputs == "device":
            # The same views while the shapes stay: they only describe the runner's buffers.
            views = self._views.get(self._bound_shape)
            if views is None:
                views = self._views[self._bound_shape] = {
                    n: DeviceView(self.device[n].ptr, out_shapes[n], self.dtypes[n], owner=self) for n in self.outputs}
            return dict(views)
        return {n: self.host[n].view(out_shapes[n]).copy() for n in self.outputs}  # buffers are reused

    def _enqueue_io(self, uploads: list[str], checks: list[str], download: bool, widens: list[str]) -> None:
        """Copy the staged inputs in (`widens`: from their float16 buffers, then widened into the
        engine's, checked as they are), check the others on the check stream beside the engine
        (forked from the engine's stream and joined back before the copy out ends the work), run,
        copy the outputs out: all asynchronous."""
        shapes = dict(self._bound_shape)
        for n in uploads:
            if n in widens:
                self._wire_device[n].copy_from_host_async(self._wire_host[n].view(shapes[n]), self.stream)
            else:
                self.device[n].copy_from_host_async(self.host[n].view(shapes[n]), self.stream)
        for n in widens:
            self._finite_gpu.widen(n, self._wire_device[n].ptr, self.device[n].ptr, math.prod(shapes[n]), self.stream)
        if checks:
            self._fork.record(self.stream)
            self.check_stream.wait(self._fork)
            for n in checks:
                self._finite_gpu.enqueue(n, self.device[n].ptr, math.prod(shapes[n]), self.dtypes[n], self.check_stream)
            self._join.record(self.check_stream)
        self.enqueue()
        if download:
            for n in self.outputs:
                self.device[n].copy_to_host_async(self.host[n].view(self._out_shapes[n]), self.stream)
        if checks:
            self.stream.wait(self._join)

    @property
    def replaying(self) -> bool:
        """Whether the next call at the bound shape replays a captured graph."""
        return self._io_graph is not None

    def _capture_io_graph(self, uploads: list[str], checks: list[str], download: bool, widens: list[str]) -> None:
        try:
            self._io_graph = cuda_rt.Graph(self.stream, lambda: self._enqueue_io(uploads, checks, download, widens))
        except cuda_rt.CudaError as exc:  # graphs are an optimization: fall back to plain enqueues
            log.warning("%s: CUDA graph capture failed (%s); running without graphs", self.name, exc)
            self.use_graphs = False

    def _drop_io_graph(self) -> None:
        if self._io_graph is not None:
            self._io_graph.free()
            self._io_graph = None
