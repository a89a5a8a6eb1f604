"""The line a failing parity test ends with: the first diverging layer, and the command for the rest."""
from __future__ import annotations

HINT_ROWS = 16  # rows of the failing feed diagnosed: every intermediate tensor of a 4096-row batch would not fit


def command(spec, backend_name: str) -> str:
    """The `diagnose` command line for this model as the suite was given it."""
    source = spec.source or spec.name
    model = source if (".py:" in source or source.endswith(".onnx")) else spec.name
    axes = "".join(f" --axis {a.name}={a.min},{a.opt},{a.max}" for a in spec.axes) if source.endswith(".onnx") else ""
    return f"python -m model diagnose --model {model}{axes} --backend {backend_name}"


def first_diverging_layer(arts, backend_name: str, feed: dict) -> str:
    """For ONNX Runtime backends, the diagnosis of the first rows of `feed`; for TensorRT (an engine
    build per probe) only the command."""
    from model.backends.registry import BACKENDS

    line = command(arts.spec, backend_name)
    if BACKENDS[backend_name].framework != "ONNX Runtime":
        return f"\nlayer by layer: {line}"
    from model.diagnose.run import diagnose
    from model.diagnose.report import summary

    profile = arts.profile
    rows = min(max(HINT_ROWS, profile.min), profile.max, len(next(iter(feed.values()))))
    try:
        result = diagnose(arts, backend_name, {k: v[:rows] for k, v in feed.items()})
    except Exception as exc:  # noqa: BLE001 -- a hint that fails must not hide the failure it explains
        return f"\n(layer diagnosis failed: {type(exc).__name__}: {exc})\nlayer by layer: {line}"
    first_lines = summary(result).splitlines()[:2]
    return "\n" + "\n".join(first_lines) + f"\nevery layer, and a repair: {line} --repair"
