"""The shipped models: every module in this folder that defines `SPEC` is one. Adding a model is
adding a file here; nothing else lists them."""
from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache

from model.spec import ModelSpec, SpecError


@lru_cache(maxsize=1)
def shipped() -> dict[str, ModelSpec]:
    specs = {}
    for info in pkgutil.iter_modules(__path__):
        spec = getattr(importlib.import_module(f"{__name__}.{info.name}"), "SPEC", None)
        if isinstance(spec, ModelSpec):
            specs[spec.name] = spec
    return dict(sorted(specs.items()))


def get(name: str) -> ModelSpec:
    specs = shipped()
    if name not in specs:
        raise SpecError(f"unknown model {name!r}; shipped models: {', '.join(specs)} "
                        "(or give path/to/file.py:factory, or --onnx path/to/model.onnx)")
    return specs[name]
