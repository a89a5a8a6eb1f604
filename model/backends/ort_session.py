"""ONNX Runtime sessions that a native crash in ONNX Runtime cannot take a whole run down with.

ONNX Runtime's CPU provider has no kernels for many float16 ops and runs them through casts it
inserts; on some graphs a later optimization pass then kills the process with SIGSEGV while the
session is created. Seen here with onnxruntime 1.31.1: NchwcTransformer crashes on a GRU tagger
(reduced: a float16 Transpose feeding a MatMul) and on a small ViT; upstream reports the same class
(microsoft/onnxruntime#15494, #26717). A crash takes every row a run has measured with it, and no
`except` can catch it, so a graph holding float16 gets its session created first in a child
process, going down `SETTINGS` until one survives. Turning the pass off for every float16 graph
instead would cost 1.3-4.7x of CPU latency on the CNNs it does not crash on (measured here).

The setting that survived is cached with the artifacts (keyed by the graph's sha256, the ONNX
Runtime version and the providers) and is said wherever it is not the first: the report's notes
and a logged warning. Graphs without float16 never take the inserted-cast path and are not probed.
"""
from __future__ import annotations

import json
import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from model import cache

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Setting:
    level: str  # an onnxruntime.GraphOptimizationLevel member
    disabled: tuple[str, ...] = ()  # graph transformers turned off by name
    note: str = ""  # why this and not the first setting; "" for the first

    def describe(self) -> str:
        what = {"ORT_ENABLE_ALL": "all graph optimizations", "ORT_ENABLE_EXTENDED": "extended graph optimizations",
                "ORT_ENABLE_BASIC": "basic graph optimizations", "ORT_DISABLE_ALL": "no graph optimizations"}[self.level]
        return what + (f" but {', '.join(self.disabled)}" if self.disabled else "")


SETTINGS = (Setting("ORT_ENABLE_ALL"), Setting("ORT_ENABLE_ALL", ("NchwcTransformer",)),
            Setting("ORT_ENABLE_EXTENDED"), Setting("ORT_ENABLE_BASIC"), Setting("ORT_DISABLE_ALL"))

# Imports onnxruntime alone (not torch), so a probe costs about 0.4 s. The graph comes as a path (its
# external data beside it) or, serialized, on stdin.
_CHILD = """
import json, sys
import onnxruntime as ort
level, disabled, providers, path = json.loads(sys.argv[1])
if any("CUDA" in str(p) for p in providers) and hasattr(ort, "preload_dlls"):
    try:
        ort.preload_dlls()
    except Exception:
        pass
options = ort.SessionOptions()
options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
options.log_severity_level = 4
providers = [tuple(p) if isinstance(p, list) else p for p in providers]
ort.InferenceSession(path or sys.stdin.buffer.read(), options, providers=providers, disabled_optimizers=disabled)
"""


class SessionCrash(RuntimeError):
    """ONNX Runtime killed the process creating a session for this graph at every setting."""


Graph = Union[Path, bytes]  # a file, or a serialized model


def _load(graph: Graph):
    import onnx

    if isinstance(graph, bytes):
        return onnx.load_from_string(graph)
    return onnx.load(str(graph), load_external_data=False)


def holds_float16(graph: Graph) -> bool:
    import onnx

    model = _load(graph)
    typed = [*model.graph.input, *model.graph.output, *model.graph.value_info]
    return (any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
            or any(v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16 for v in typed)
            or any(a.name == "to" and a.i == onnx.TensorProto.FLOAT16 for n in model.graph.node for a in n.attribute))


def probe(graph: Graph, setting: Setting, providers: list) -> int:
    """The exit status of a child process that creates the session: negative when a signal killed it."""
    path = None if isinstance(graph, bytes) else str(Path(graph).resolve())
    arg = json.dumps([setting.level, list(setting.disabled), providers, path])
    return subprocess.run([sys.executable, "-c", _CHILD, arg], input=graph if path is None else b"",
                          capture_output=True).returncode


def _signal_name(code: int) -> str:
    import signal

    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def first_surviving(graph: Graph, providers: list, what: str) -> Setting:
    """The first setting whose session creation a child process survives. A child that exits by
    itself (an invalid graph, a missing kernel) ends the search: creating the session here raises
    that error with its real message."""
    import onnxruntime as ort

    crashed = []
    for setting in SETTINGS:
        code = probe(graph, setting, providers)
        if code >= 0:
            if not crashed:
                return setting
            return Setting(setting.level, setting.disabled,
                           f"onnxruntime {ort.__version__} crashed creating the session ({'; '.join(crashed)}); "
                           f"it runs with {setting.describe()}")
        crashed.append(f"{_signal_name(code)} with {setting.describe()}")
    raise SessionCrash(f"{what}: onnxruntime {ort.__version__} crashed creating a session on {providers} at every "
                       f"optimization setting ({'; '.join(crashed)}); nothing of this graph can run on it")


def _name(graph: Graph) -> str:
    return "the graph" if isinstance(graph, bytes) else str(graph)


def safe_setting(graph: Graph, providers: list, cache_dir: str | Path | None = None) -> Setting:
    """The setting to create this graph's session with."""
    import onnxruntime as ort

    what = _name(graph)
    if not holds_float16(graph):
        return SETTINGS[0]
    if cache_dir is None:
        return first_surviving(graph, providers, what)
    digest = cache.sha256_bytes(graph) if isinstance(graph, bytes) else cache.sha256_file(graph)
    key_inputs = {"graph_sha256": digest, "onnxruntime": ort.__version__,
                  "providers": json.loads(json.dumps(providers)), "settings": [s.describe() for s in SETTINGS]}

    def build(tmp: Path) -> dict:
        setting = first_surviving(graph, providers, what)
        record = {"level": setting.level, "disabled": list(setting.disabled), "note": setting.note}
        tmp.write_text(json.dumps(record))
        return record

    art = cache.get_or_build(Path(cache_dir) / "onnxruntime", f"session-{cache.key(key_inputs)}.json", key_inputs, build)
    f = art.figures
    return Setting(f["level"], tuple(f["disabled"]), f["note"])


def create(graph: str | Path | bytes, providers: list, log_severity: int = 3, cache_dir: str | Path | None = None):
    """(session, setting): an InferenceSession for `graph` (a path or the serialized model) created
    with the first setting that does not crash ONNX Runtime; `setting.note` says what was turned off."""
    import onnxruntime as ort

    graph = graph if isinstance(graph, bytes) else Path(graph)
    setting = safe_setting(graph, providers, cache_dir)
    if setting.note:
        log.warning("%s: %s", _name(graph), setting.note)
    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, setting.level)
    options.log_severity_level = log_severity
    session = ort.InferenceSession(graph if isinstance(graph, bytes) else str(graph), sess_options=options,
                                   providers=providers, disabled_optimizers=list(setting.disabled))
    return session, setting
