"""Options declared once, used by the CLI (`python -m model compare`) and by pytest (conftest.py).

Each option has one parser, so a bad value gets the same error naming the option in both places;
where the two want another default (pytest covers every shipped model, the CLI the user's one),
the declaration says so.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from model import cache, data, validate
from model.backends.tensorrt import build_slots
from model.backends.tensorrt.build import DEFAULT_WORKSPACE
from model.profile import BatchProfile
from model.spec import SpecError


def _argparse(parse):
    """A model.validate parser as an argparse type: argparse then names the option in its error,
    as pytest's UsageError does (both tools take these same functions)."""
    def typed(text: str):
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    typed.__name__ = parse.__name__
    return typed


int_list = _argparse(validate.batch_sizes)
positive_int = _argparse(validate.positive_int)
gpu_list = _argparse(validate.gpu_list)


def profile(text: str) -> BatchProfile:
    try:
        return BatchProfile.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def name_list(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected one or more comma-separated names, received {text!r}")
    return names


def axis(text: str):
    from model.sources import parse_axis
    from model.spec import SpecError

    try:
        return parse_axis(text)
    except SpecError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def backend_list(text: str) -> list[str]:
    from model.backends.registry import BACKENDS

    names = name_list(text)
    unknown = [n for n in names if n not in BACKENDS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown backends {unknown}; choose from {sorted(BACKENDS)}")
    return names


@dataclass(frozen=True)
class Option:
    flag: str
    kwargs: dict
    cli: dict | None = field(default_factory=dict)  # overrides for the CLI; None: pytest only
    pytest: dict | None = field(default_factory=dict)  # overrides for pytest; None: CLI only


OPTIONS = [
    Option("--model", dict(type=name_list, default=None, metavar="NAME[,NAME...]",
                           help="shipped model names, or path/to/file.py:factory returning (module, spec); "
                                "several separated by commas"),
           cli=dict(help="models to compare (default simplecnn unless --onnx is given): shipped names or "
                         "path/to/file.py:factory; several separated by commas"),
           pytest=dict(help="models to test (default: every shipped model): shipped names or path/to/file.py:factory")),
    Option("--onnx", dict(type=Path, action="append", default=None, metavar="PATH",
                          help="an ONNX model without PyTorch source (repeatable); its inputs, outputs and dynamic "
                               "axes are read from the file, the range of each non-batch axis from --axis")),
    Option("--axis", dict(type=axis, action="append", default=None, metavar="NAME=MIN,OPT,MAX",
                          help="range of a dynamic axis other than the batch, for --onnx models (repeatable)")),
    Option("--profile", dict(type=profile, default=None,
                             help="batch range every runner declares and TensorRT builds for, MIN,OPT,MAX[,STATIC]: one "
                                  "TensorRT engine per opt batch ('/' between several) and one fixed-shape engine per "
                                  "static batch (default: each model's own; SimpleCNN's is 1,32/4096,4096,1)")),
    Option("--batch-sizes", dict(type=int_list, default=None),
           cli=dict(help="latency batch sizes (default: those of 1,32,256 in each model's profile)"),
           pytest=dict(help="comma-separated batch sizes for parity tests (default per model: its profile's min, "
                            "7, 32, its opt batches and max; each must lie in the profile)")),
    Option("--data", dict(default=data.SYNTHETIC,
                          help="SimpleCNN's data: 'synthetic' (embedded, default) or the folder holding CIFAR-100's "
                               "cifar-100-python/")),
    Option("--cache-dir", dict(type=Path, default=cache.DEFAULT_CACHE,
                               help="where weights, ONNX files and engines are cached (default %(default)s)")),
    Option("--download", dict(action="store_true", help="download CIFAR-100 into --data if it is missing"), pytest=None),
    Option("--workspace-mb", dict(type=positive_int, default=DEFAULT_WORKSPACE >> 20,
                                  help="TensorRT builder workspace limit in MiB (default %(default)s)"), pytest=None),
    Option("--backends", dict(type=backend_list, default=None,
                              help="comma-separated backend names (default: all); see `python -m model backends`"),
           pytest=None),
    Option("--out", dict(type=Path, default=Path("out"),
                         help="folder for comparison.json/.md, one subfolder per model (default out/)"), pytest=None),
    Option("--epochs", dict(type=positive_int, default=None, help="SimpleCNN training epochs when not cached"),
           pytest=None),
    Option("--retrain", dict(action="store_true", help="train again even if a cached checkpoint matches"), pytest=None),
    Option("--runs", dict(type=positive_int, default=20, help="timed calls per batch size (default 20)"), pytest=None),
    Option("--require-gpu", dict(action="store_true",
                                 help="GPU-marked tests fail instead of skipping when there is no GPU or TensorRT"),
           cli=None),
    Option("--gpu-only", dict(action="store_true",
                              help="run only the GPU-marked tests (a GPU job whose CPU twin runs the rest)"),
           cli=None),
    # The CLI's compare times latency in one process on one GPU; only the tests spread (model/gpus.py).
    Option("--gpus", dict(type=gpu_list, default=None, metavar="all|I[,I...]",
                          help="GPUs for pytest-xdist workers, one per worker round robin (CUDA_VISIBLE_DEVICES): "
                               "'all' (default with -n: every GPU) or indices such as 0,1; without -n, one index "
                               "pins the run to that GPU"),
           cli=None),
]


def _kwargs(option: Option, where: str) -> dict | None:
    extra = getattr(option, where)
    return None if extra is None else {**option.kwargs, **extra}


def add_to_argparse(parser: argparse.ArgumentParser) -> None:
    for option in OPTIONS:
        kwargs = _kwargs(option, "cli")
        if kwargs is not None:
            parser.add_argument(option.flag, **kwargs)


def add_to_pytest(group) -> None:
    """pytest's parser takes argparse's keywords; values arrive parsed by the same functions."""
    for option in OPTIONS:
        kwargs = _kwargs(option, "pytest")
        if kwargs is not None:
            group.addoption(option.flag, **kwargs)


def model_specs(names: list[str] | None, onnx_paths: list[Path] | None, axes: list | None,
                default: list[str]) -> list:
    """The ModelSpecs a run covers: named (shipped or file.py:factory) and ONNX files, each checked
    before any model is measured: a factory's module is called on a sample batch and must return
    what its spec declares, and no two models may share a name (their results would share a folder)."""
    from model.sources import from_onnx, resolve

    specs = [resolve(n) for n in (names if names is not None else ([] if onnx_paths else default))]
    shared = len(onnx_paths or []) > 1  # one --axis list serves every file, each taking its own axes
    files = [from_onnx(str(p), list(axes or []), shared=shared) for p in onnx_paths or []]
    if axes and not onnx_paths:
        raise ValueError("--axis gives ranges for --onnx models; no --onnx was given")
    unused = sorted({a.name for a in axes or []} - {a.name for s in files for a in s.axes})
    if shared and unused:
        raise SpecError(f"--axis {unused} name no dynamic axis of any --onnx model "
                        f"(their axes: {sorted({a.name for s in files for a in s.axes}) or 'batch only'})")
    specs += files
    seen = {}
    for spec in specs:
        if spec.name in seen:
            first = seen[spec.name].source or spec.name
            raise SpecError(f"two models are named {spec.name!r}: {first} and {spec.source or spec.name}; each "
                            "model's results go to a folder of its name, so give one of them another ModelSpec name"
                            + (" (or list it once)" if first == (spec.source or spec.name) else ""))
        seen[spec.name] = spec
    for spec in specs:
        if ".py:" in spec.source:
            check_factory_module(spec)
    return specs


def check_factory_module(spec) -> None:
    """A `file.py:factory` module answers a sample batch with its spec's outputs, checked now rather
    than when its first test or backend runs (its factory already built it: this is one forward)."""
    from model.artifacts import check_module_outputs

    module = spec.module(None)
    try:
        check_module_outputs(spec, module)
    except SpecError:
        raise
    except Exception as exc:  # the forward itself raised: the user's code, named with what it received
        shapes = {n: tuple(v.shape) for n, v in spec.sample(2, **{a.name: a.min for a in spec.axes}).items()}
        raise SpecError(f"--model {spec.source}: the module raised {type(exc).__name__}: {exc} on a sample batch "
                        f"of the spec's inputs {shapes}") from None


PROBE_BATCHES = (7, 32)  # an odd batch and a common one, where the profile holds them


def run_settings(get, default: list[str]) -> tuple[dict, dict]:
    """What a pytest run covers, from its parsed options (`get(flag)`): each model's spec (with
    --profile applied) and each model's batch sizes (--batch-sizes, else the profile's ends, its opt
    batches (what TensorRT tunes for) and PROBE_BATCHES where it holds them). A bad option raises ValueError (SpecError is one) naming it."""
    specs = model_specs(get("--model"), get("--onnx"), get("--axis"), default=default)
    validate.writable_folder(get("--cache-dir"), "--cache-dir")
    build_slots.slots()  # $MODEL_TRT_BUILDS_PER_GPU, checked before any test builds
    override = get("--profile")
    specs = {s.name: s.with_profile(override) for s in specs}
    sizes, batches = get("--batch-sizes"), {}
    for name, spec in specs.items():
        chosen = sizes or sorted({n for n in (spec.profile.min, *PROBE_BATCHES, *spec.profile.opts, spec.profile.max)
                                  if n in spec.profile})
        bad = [s for s in chosen if s not in spec.profile]
        if bad:
            raise ValueError(f"--batch-sizes {bad} lie outside {name}'s profile ({spec.profile}); widen --profile")
        batches[name] = chosen
    return specs, batches
