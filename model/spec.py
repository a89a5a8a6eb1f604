"""What a model is, for every part of the suite: one `ModelSpec` per model.

A spec says how to get the network (a PyTorch module factory, or an ONNX file when there is no
PyTorch source), every input and output (name, dtype, shape with named dynamic axes), the range of
each dynamic axis, the reference backend, an optional dataset with its metric, the precisions the
model is offered in and their tolerances. Runners, exports, engine profiles, tests, benchmarks and
the CLI read everything model-specific from here; nothing else names a tensor or a shape.

The batch axis is always axis 0 of every input and output and is named `batch`; its range is the
run's `BatchProfile` (model/profile.py), which the spec supplies a default for. Every other dynamic
axis carries its own min/opt/max here.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from model import dims
from model.backends.base import TensorMeta
from model.compare import TOLERANCES, Tolerance
from model.profile import BatchProfile

BATCH = "batch"
# INT8 outputs that are not decisions (hidden states, embeddings), without a tolerance of the model's
# own: |error| <= 0.1 + 10% of |reference|. Loose enough for a calibrated conversion, far inside
# what a wrong scale, saturation or garbage produces.
INT8_VALUE_ATOL, INT8_VALUE_RTOL = 0.1, 0.1
# ... and at least 5% of the output's spread, which passes the floor only above a spread of 2 (the
# shipped models' hidden states have 1): a few INT8 steps of an output's range.
INT8_VALUE_SCALE_TOL = 0.05
PRECISIONS = ("fp32", "fp16", "int8")


class SpecError(ValueError):
    """A model spec, or what it points at, is not usable; the message says what and why."""


@dataclass(frozen=True)
class Axis:
    """A dynamic axis other than the batch: the range TensorRT builds for and runners accept."""

    name: str
    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise SpecError(f"dynamic axis {self.name!r} needs 1 <= min <= opt <= max, "
                            f"received min={self.min} opt={self.opt} max={self.max}")


@dataclass(frozen=True)
class TensorSpec:
    """`shape`: an int per fixed dim, an axis name per dynamic dim; dim 0 is always `batch`.
    `values`: for integer inputs, the inclusive range of valid values (token ids < vocabulary),
    checked on every feed and used to draw sample inputs. An output's dim may be an expression of
    input axes (`"h // 2"`, model/dims.py), evaluated on each feed's sizes."""

    name: str
    dtype: str
    shape: tuple
    values: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        try:
            shape = tuple(dims.canonical(d) if isinstance(d, str) else d for d in self.shape)
        except dims.DimError as exc:
            raise SpecError(f"tensor {self.name!r}: {exc}") from None
        object.__setattr__(self, "shape", shape)
        if not self.shape or self.shape[0] != BATCH:
            raise SpecError(f"tensor {self.name!r}: dim 0 must be the dynamic axis {BATCH!r}, received shape {self.shape}")
        np.dtype(self.dtype)  # raises TypeError on a name numpy does not know

    @property
    def dynamic_axes(self) -> dict[int, str]:
        return {i: d for i, d in enumerate(self.shape) if isinstance(d, str)}


@dataclass(frozen=True)
class BuildContext:
    """What a module factory may need: where to cache, which data, how to train."""

    cache_dir: Path
    data: str = "synthetic"
    epochs: int | None = None
    retrain: bool = False
    progress: bool = True


@dataclass(frozen=True)
class Built:
    """A factory's result: the module in eval mode, its weights file when it made one (else the
    suite saves the state dict), and figures to report (training accuracy, time)."""

    module: object
    checkpoint: Path | None = None
    info: dict = field(default_factory=dict)


Sampler = Callable[[np.random.Generator, dict], dict]  # (rng, {axis: size}) -> feed


@dataclass(frozen=True)
class Dataset:
    """Labelled data for a metric. `calib` feeds INT8 calibration and is never evaluated on."""

    name: str
    holdout: dict  # input name -> array
    labels: np.ndarray
    calib: dict
    metric: str = "top1"
    description: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    profile: BatchProfile  # default batch range; a run's --profile replaces it
    axes: tuple[Axis, ...] = ()
    # Exactly one of these: a factory `(BuildContext) -> Built | nn.Module` (eval mode, with its weights), or an ONNX file.
    module: Callable | None = None
    onnx: str | None = None
    identity: dict = field(default_factory=dict)  # what fixes the weights (seed, config): part of cache keys
    # Digest of the code that defines the module's forward() (model/code_digest.py), part of every
    # cache key made from the module; by default the file that defines `module`.
    code: str = ""
    precisions: tuple[str, ...] = PRECISIONS
    precision_notes: str = ""  # why a precision is not offered (README, skip reasons)
    tolerances: dict = field(default_factory=dict)  # precision -> Tolerance (default: model.compare)
    logits: tuple[str, ...] = ()  # outputs whose argmax is a decision (top-1 agreement applies)
    # The axis of the `logits` outputs that holds the classes: the last by default (a classifier's
    # (N, classes), a decoder's (N, seq, vocab)); 1 for a segmentation's (N, classes, H, W).
    class_axis: int = -1
    sampler: Sampler | None = None  # draws valid inputs; default: normal floats, uniform ints in `values`
    dataset: Callable | None = None  # (data option) -> Dataset, for the metric; None: sample inputs only
    source: str = ""  # where the spec came from (zoo name, file.py:factory, ONNX path), for messages
    # precision -> ONNX node names its variant and TensorRT engine keep in float32 (a repair that
    # `python -m model diagnose --repair` proposes); part of those artifacts' cache keys.
    keep_fp32: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        object.__setattr__(self, "axes", tuple(self.axes))
        if self.module is not None and self.onnx is not None:
            raise SpecError(f"model {self.name!r}: give a module factory or an ONNX file, not both")
        if self.module is not None and not self.code:
            from model import code_digest

            object.__setattr__(self, "code", code_digest.of_callable(self.module))
        if not self.inputs or not self.outputs:
            raise SpecError(f"model {self.name!r}: a spec needs at least one input and one output")
        names = [t.name for t in (*self.inputs, *self.outputs)]
        if len(set(names)) != len(names):
            raise SpecError(f"model {self.name!r}: tensor names must be unique, received {names}")
        self._check_axes()
        unknown = set(self.precisions) - set(PRECISIONS)
        if unknown:
            raise SpecError(f"model {self.name!r}: unknown precisions {sorted(unknown)}; expected some of {PRECISIONS}")
        bad_keep = {p: v for p, v in self.keep_fp32.items()
                    if p not in ("fp16", "int8") or isinstance(v, str) or not all(isinstance(n, str) for n in v)}
        if bad_keep:
            raise SpecError(f"model {self.name!r}: keep_fp32 maps fp16/int8 to ONNX node names, received {bad_keep}")
        object.__setattr__(self, "keep_fp32", {p: tuple(v) for p, v in self.keep_fp32.items() if v})
        bad_logits = set(self.logits) - {t.name for t in self.outputs}
        if bad_logits:
            raise SpecError(f"model {self.name!r}: logits {sorted(bad_logits)} are not outputs")
        self._check_class_axis()

    def _check_class_axis(self) -> None:
        """An argmax over a batch, sequence or spatial axis is no decision, and its agreement figure
        would mean nothing: the class axis of every `logits` output must be a fixed size."""
        for t in self.outputs:
            if t.name not in self.logits:
                continue
            if not -len(t.shape) <= self.class_axis < len(t.shape):
                raise SpecError(f"model {self.name!r}: class_axis {self.class_axis} lies outside logits output "
                                f"{t.name!r} of shape {t.shape}")
            dim = t.shape[self.class_axis]
            if isinstance(dim, str):
                raise SpecError(f"model {self.name!r}: logits output {t.name!r} {t.shape} has the dynamic dim {dim!r} "
                                f"on its class axis ({self.class_axis}), and an argmax over it decides nothing; set "
                                "class_axis to the axis of the classes (1 for (N, classes, H, W))")

    def _check_axes(self) -> None:
        ranged = {a.name for a in self.axes}
        for t in self.inputs:
            exprs = [d for d in t.dynamic_axes.values() if not dims.is_name(d)]
            if exprs:
                raise SpecError(f"model {self.name!r}: input {t.name!r} has dims {exprs}: an input's dims are "
                                "integers or axis names (expressions of input axes are for outputs)")
            missing = [d for d in t.dynamic_axes.values() if d != BATCH and d not in ranged]
            if missing:
                raise SpecError(f"model {self.name!r}: tensor {t.name!r} has dynamic axes {missing} without a range; "
                                f"declare Axis(name, min, opt, max) for each (declared: {sorted(ranged) or 'none'})")
        # An output's size follows from the inputs' sizes; a name no input has could not be chosen by
        # a caller nor checked by a test.
        known = {d for t in self.inputs for d in t.dynamic_axes.values()}
        for t in self.outputs:
            for i, d in t.dynamic_axes.items():
                unknown = sorted(dims.names(d) - known)
                if unknown:
                    raise SpecError(f"model {self.name!r}: output {t.name!r} dim {i} is {d!r}, whose {unknown} names "
                                    f"no input axis (input axes: {sorted(known)}); write it as an expression of "
                                    "them, e.g. 'h // 2'")

    # -- derived -----------------------------------------------------------------------------------
    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    @property
    def reference(self) -> str:
        """The backend everything is compared with: PyTorch FP32 where there is a module."""
        return "pytorch-cpu" if self.module is not None else "onnxruntime-cpu"

    def axis(self, name: str) -> Axis:
        return next(a for a in self.axes if a.name == name)

    def with_profile(self, profile: BatchProfile | None) -> "ModelSpec":
        return self if profile is None else replace(self, profile=profile)

    def decisions(self, values) -> np.ndarray:
        """The class each position of a `logits` output decides: its argmax over `class_axis`."""
        return np.asarray(values).argmax(axis=self.class_axis)

    def tolerance(self, precision: str, output: str) -> Tolerance:
        tol = self.tolerances.get(precision, TOLERANCES[precision])
        if output in self.logits:
            return tol
        # Not a decision: judged on values only (an argmax over hidden units means nothing). INT8's
        # default judges decisions alone (atol inf); values that are no decision get a bound instead.
        if tol.atol == float("inf") and precision not in self.tolerances:
            tol = replace(tol, atol=INT8_VALUE_ATOL, rtol=INT8_VALUE_RTOL, scale_tol=INT8_VALUE_SCALE_TOL)
        return replace(tol, min_top1_agreement=0.0, tie_margin=float("inf"))

    def input_metadata(self) -> dict[str, TensorMeta]:
        """What every runner accepts: dtype, shape (None where dynamic) and each dynamic axis's range."""
        ranges = {BATCH: (self.profile.min, self.profile.max), **{a.name: (a.min, a.max) for a in self.axes}}
        return {t.name: TensorMeta(np.dtype(t.dtype), tuple(None if isinstance(d, str) else d for d in t.shape),
                                   tuple(ranges[d] if isinstance(d, str) else None for d in t.shape),
                                   tuple(d if isinstance(d, str) else None for d in t.shape), t.values)
                for t in self.inputs}

    def shapes(self, batch: int, **sizes: int) -> dict[str, tuple]:
        """Concrete input shapes for a batch; other dynamic axes at `sizes` or their opt."""
        size = {BATCH: batch, **{a.name: sizes.get(a.name, a.opt) for a in self.axes}}
        return {t.name: tuple(size[d] if isinstance(d, str) else d for d in t.shape) for t in self.inputs}

    def axis_sizes(self, feed: dict) -> dict[str, int]:
        """Every input axis's size in a feed, by name (`batch` included)."""
        return {d: feed[t.name].shape[i] for t in self.inputs for i, d in t.dynamic_axes.items()}

    def output_shapes(self, sizes: dict[str, int]) -> dict[str, tuple]:
        """Each output's shape for the input axes' `sizes` (see `axis_sizes`), expressions evaluated."""
        return {t.name: tuple(dims.evaluate(d, sizes) if isinstance(d, str) else d for d in t.shape)
                for t in self.outputs}

    def profile_shapes(self, opt_batch: int, batch: BatchProfile) -> dict[str, tuple[tuple, tuple, tuple]]:
        """Per input, the (min, opt, max) shapes of one TensorRT optimization profile."""
        def at(which: str, b: int) -> dict[str, tuple]:
            return self.shapes(b, **{a.name: getattr(a, which) for a in self.axes})
        lo, opt, hi = at("min", batch.min), at("opt", opt_batch), at("max", batch.max)
        return {n: (lo[n], opt[n], hi[n]) for n in self.input_names}

    def sample(self, batch: int, seed: int = 0, **sizes: int) -> dict[str, np.ndarray]:
        """A valid, deterministic feed: the model's own sampler, else normal floats and uniform ints."""
        rng = np.random.default_rng([seed, batch, *sorted(sizes.values())])
        shapes = self.shapes(batch, **sizes)
        if self.sampler is not None:
            size = {BATCH: batch, **{a.name: sizes.get(a.name, a.opt) for a in self.axes}}
            return {n: np.ascontiguousarray(v) for n, v in self.sampler(rng, size).items()}
        feed = {}
        for t in self.inputs:
            if np.issubdtype(np.dtype(t.dtype), np.floating):
                feed[t.name] = rng.standard_normal(shapes[t.name]).astype(t.dtype)
            else:
                lo, hi = t.values or (0, 1)
                feed[t.name] = rng.integers(lo, hi + 1, shapes[t.name]).astype(t.dtype)
        return feed

    def calibration_feeds(self, dataset: Dataset | None, count: int = 200, batch: int = 50) -> list[dict]:
        """INT8 calibration batches: the dataset's calib split, else sample inputs drawn from seeds
        the evaluation never uses."""
        if dataset is not None:
            n = len(next(iter(dataset.calib.values())))
            return [{k: v[i : i + batch] for k, v in dataset.calib.items()} for i in range(0, n, batch)]
        return [self.sample(batch, seed=1000 + i) for i in range(0, count, batch)]
