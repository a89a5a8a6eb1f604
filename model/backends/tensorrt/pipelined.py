"""The TensorRT runner's path for host input above `graph_max_bytes`: the batch cut into
sub-batches of about `subbatch_bytes` (staging.plan), each copied into pinned memory in one copy
(the first by the calling thread, the later ones by the feeder thread: staging.py), uploaded in
one copy on a second stream once staged and run right after, while the next is being staged.

Uploading pieces of a sub-batch as soon as each was copied was measured slower on the H200: the
copy stream moved 48 MiB in 5.4 ms (9 GB/s) against 0.25-0.4 ms per 12 MiB sub-batch uploaded
whole once staged.
"""
from __future__ import annotations

import math

import numpy as np

from model.backends.base import nonfinite_error
from model.backends.device_arrays import DeviceView
from model.backends.tensorrt import staging as host_staging
from model.backends.tensorrt.finite_gpu import OutOfHalf


class PipelinedPath:
    """Mixed into TrtRunner, beside its bindings (bindings.py). Reads the runner's buffers,
    streams (`stream` runs the engine, `copy_stream` uploads, `check_stream` checks), `_copy`,
    `_stager`, `_finite_gpu`, `_gpu_checked`, `subbatch_bytes` and `_batch_major`."""

    def _infer_pipelined(self, feed, outputs, halves):
        """A large batch in sub-batches. Once a sub-batch is staged (the calling thread stages it
        itself if the feeder has not claimed it, else waits on its latch), it is uploaded in one
        copy on the copy stream, the engine's stream waits for that (an event) and runs it, the
        NaN/Inf kernel reads it on the check stream meanwhile, and its outputs are copied back
        behind it; the result arrays are filled sub-batch by sub-batch as each one finishes. A feed
        that needs no staging (the runner's own pinned buffers, GPU checked) is uploaded as soon as
        the call starts its sub-batch. `halves` are staged as float16 and widened on the engine's
        stream before it runs.

        One execution context runs the sub-batches one after another on one stream (its one
        optimization profile is never used by two enqueues at once); the staging and the copies
        overlap the engine."""
        batch = feed[self.inputs[0]].shape[0]
        self._drop_io_graph()  # the context's addresses move below: no captured graph matches them
        self._io_key = None
        host = [n for n in self.inputs if isinstance(feed[n], np.ndarray)]
        row_values = {n: math.prod(feed[n].shape[1:]) for n in self.inputs}
        row_bytes = {n: row_values[n] * self.dtypes[n].itemsize for n in self.inputs}  # in the engine's buffers
        # The profile the whole batch calls for serves every sub-batch: no switch (and sync) mid-call.
        profile = self.profile_for({n: feed[n].shape for n in self.inputs})
        subbatches = self.plan(batch, sum(feed[n].nbytes // batch for n in host), self.profiles[profile][self.inputs[0]][0][0])
        pinned = {n: (self._wire_host if n in halves else self.host)[n].view(feed[n].shape) for n in host}
        items = [host_staging.Staged(feed[n], None if self._own_pinned(n, feed[n]) else pinned[n],
                                     n not in halves and self._host_checks(n, feed[n].dtype), self._copy)
                 for n in host]
        landing = {n: (self._wire_device if n in halves else self.device)[n] for n in host}
        # Checked on the check stream after each upload (halves: as they are widened).
        on_gpu = [n for n in host if n in self._gpu_checked and n not in halves]
        staging = self._stager.start(items, subbatches) if host_staging.needs_staging(items) else None
        try:
            self._wait_for_producers(feed)
            base = {n: self.device[n].ptr if n in host else self._device_address(n, feed[n]) for n in self.inputs}
            out_shapes = None
            for i, sb in enumerate(subbatches):
                if staging is not None:
                    bad = staging.through(i)
                    if bad >= 0:
                        raise nonfinite_error(host[bad], feed[host[bad]])
                if host:  # the whole sub-batch in one copy
                    self._upload_rows(host, pinned, landing, sb.start, sb.stop)
                    landed = self._event(2 * i)
                    landed.record(self.copy_stream)
                    self.stream.wait(landed)
                    for n in halves:
                        self._finite_gpu.widen(n, self._wire_device[n].ptr + sb.start * pinned[n].strides[0],
                                               self.device[n].ptr + sb.start * row_bytes[n], sb.rows * row_values[n],
                                               self.stream)
                    if on_gpu:
                        self.check_stream.wait(landed)
                        for n in on_gpu:
                            self._finite_gpu.enqueue(n, self.device[n].ptr + sb.start * row_bytes[n],
                                                     sb.rows * row_values[n], self.dtypes[n], self.check_stream)
                shapes = self.bind({n: (sb.rows, *feed[n].shape[1:]) for n in self.inputs}, profile)
                if out_shapes is None:
                    out_shapes = {n: (batch, *s[1:]) for n, s in shapes.items()}
                    out_row = {n: math.prod(s[1:]) * self.dtypes[n].itemsize for n, s in shapes.items()}
                for n in self.inputs:
                    self._point(n, base[n] + sb.start * row_bytes[n])
                for n in self.outputs:
                    self._point(n, self.device[n].ptr + sb.start * out_row[n])
                self.enqueue()
                if outputs == "host":
                    for n in self.outputs:
                        rows = self.host[n].view(out_shapes[n])[sb.start:sb.stop]
                        self.device[n].copy_to_host_async(rows, self.stream, offset=sb.start * out_row[n])
                    self._event(2 * i + 1).record(self.stream)
            if on_gpu:
                self._join.record(self.check_stream)
            if outputs == "device":
                self.stream.synchronize()
                self._refuse_flagged(feed, on_gpu, halves)
                return {n: DeviceView(self.device[n].ptr, out_shapes[n], self.dtypes[n], owner=self) for n in self.outputs}
            results = {n: np.empty(out_shapes[n], self.dtypes[n]) for n in self.outputs}
            for i, sb in enumerate(subbatches):  # earlier sub-batches are copied out while later ones run
                self._event(2 * i + 1).synchronize()
                for n in self.outputs:
                    results[n][sb.start:sb.stop] = self.host[n].view(out_shapes[n])[sb.start:sb.stop]
            self._refuse_flagged(feed, on_gpu, halves)
            return results
        except BaseException:
            if staging is not None:
                staging.abandon()  # the feeder writes nothing more once this returns
            for stream in (self.copy_stream, self.check_stream, self.stream):
                stream.synchronize()
            if self._finite_gpu is not None:
                self._finite_gpu.clear()  # a check that ran before the failure flags nothing next call
            raise

    def plan(self, batch: int, row_bytes: int, min_rows: int = 1) -> list[host_staging.SubBatch]:
        """How this runner cuts a batch of `row_bytes` host bytes per row (staging.plan): a model
        whose outputs do not grow with the batch runs it at once."""
        return host_staging.plan(batch, row_bytes, min_rows=min_rows, row_align=self._row_align,
                                 subbatch_bytes=self.subbatch_bytes if self._batch_major else 0)

    def _upload_rows(self, host: list[str], pinned: dict, landing: dict, start: int, stop: int) -> None:
        """Rows `start:stop` of every host input, from pinned memory into its device buffer, on the copy stream."""
        for n in host:
            landing[n].copy_from_host_async(pinned[n][start:stop], self.copy_stream, offset=start * pinned[n].strides[0])

    def _event(self, index: int):
        while len(self._events) <= index:
            self._events.append(self._make_event())
        return self._events[index]

    def _refuse_flagged(self, feed, on_gpu: list[str], halves: frozenset[str]) -> None:
        """Once the check stream's kernels (and the engine stream's widening) have finished: a
        NaN/Inf they found fails the call; one in a half upload is decided again from float32."""
        if on_gpu or halves:
            if on_gpu:  # the widening ran on the engine's stream, already waited for
                self._join.synchronize()
            bad = self._finite_gpu.flagged()
            if bad in halves:
                raise OutOfHalf(bad)
            if bad is not None:
                raise nonfinite_error(bad, feed[bad])
