"""The source a module's `forward()` comes from, as a digest for cache keys.

An export made from the same weights by different code is a different graph: a user who edits
`forward()` (ReLU -> Tanh) must get a new ONNX file, not the one cached from the old code. For a
`file.py:factory` model the code is the factory file and every local module it imports (directly,
inside a function, or as the defining module of a layer class of the network), found by reading
their `import` statements with `ast` and resolving them as Python does; "local" means under the
factory file's folder and outside any installed environment (site-packages, the interpreter's
prefix), whose code is versioned by its package instead.
"""
from __future__ import annotations

import ast
import hashlib
import importlib.util
import inspect
import sys
import sysconfig
from pathlib import Path
from typing import Iterable


def _installed_roots() -> list[Path]:
    paths = sysconfig.get_paths()
    roots = {paths.get("purelib"), paths.get("platlib"), paths.get("stdlib"), sys.prefix, sys.base_prefix, sys.exec_prefix}
    return [Path(p).resolve() for p in roots if p]


def _is_local(path: Path, root: Path, installed: list[Path]) -> bool:
    if not path.is_relative_to(root) or path.suffix != ".py":
        return False
    if {"site-packages", "dist-packages"} & set(path.relative_to(root).parts):
        return False
    # An environment inside the project folder (./.venv) is installed code, not the user's.
    return not any(path.is_relative_to(r) and r.is_relative_to(root) and r != root for r in installed)


def _file_of(name: str) -> Path | None:
    module = sys.modules.get(name)
    origin = getattr(module, "__file__", None)
    if origin is None:
        try:
            found = importlib.util.find_spec(name)
        except (ImportError, ValueError, AttributeError):  # a name that only an optional import guards
            return None
        origin = found.origin if found is not None else None
    return Path(origin).resolve() if origin and origin.endswith(".py") else None


def _relative(file: Path, level: int, module: str | None) -> Path | None:
    base = file.parent
    for _ in range(level - 1):
        base = base.parent
    target = base.joinpath(*module.split(".")) if module else base
    for candidate in (target.with_suffix(".py"), target / "__init__.py"):
        if candidate.is_file():
            return candidate.resolve()
    return None


def _imports(file: Path) -> set[Path]:
    """The files `file`'s import statements (anywhere in it, functions included) name."""
    found: set[Path] = set()
    try:
        tree = ast.parse(file.read_bytes(), filename=str(file))
    except SyntaxError:
        return found
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level:
            parts = [_relative(file, node.level, ".".join(filter(None, (node.module, a.name)))) for a in node.names]
            found.update(p for p in (*parts, _relative(file, node.level, node.module)) if p is not None)
            continue
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        else:
            continue
        for name in names:
            pieces = name.split(".")
            # `import a.b` runs a/__init__.py as well; `from a import B` where B is a class finds no module a.B.
            for i in range(1, len(pieces) + 1):
                path = _file_of(".".join(pieces[:i]))
                if path is not None:
                    found.add(path)
    return found


def local_sources(entry: str | Path, modules: Iterable[str] = ()) -> list[Path]:
    """`entry` and the local files it reaches through imports, plus the files of `modules` (module
    names, e.g. each layer class's `__module__`), sorted."""
    entry = Path(entry).resolve()
    root, installed = entry.parent, _installed_roots()
    seen: set[Path] = set()
    pending = [entry, *(p for p in map(_file_of, modules) if p is not None)]
    while pending:
        path = pending.pop()
        if path in seen or not (path == entry or _is_local(path, root, installed)):
            continue
        seen.add(path)
        pending.extend(_imports(path) - seen)
    return sorted(seen)


def digest(files: Iterable[Path], root: Path) -> str:
    """sha256 over each file's path (relative to `root`, so two checkouts agree) and bytes."""
    h = hashlib.sha256()
    for path in sorted(files):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def of_factory(entry: str | Path, network=None) -> str:
    """The digest of a `file.py:factory` model's code: the file, its local imports and the modules
    that define the network's layer classes."""
    modules = {type(m).__module__ for m in network.modules()} if network is not None else set()
    entry = Path(entry).resolve()
    return digest(local_sources(entry, modules), entry.parent)


def of_callable(fn) -> str:
    """The digest of the file that defines `fn` (a zoo model's factory): an edit to it rebuilds."""
    try:
        path = Path(inspect.getsourcefile(fn if inspect.isroutine(fn) or inspect.isclass(fn) else type(fn)))
    except TypeError:
        return ""
    return digest([path.resolve()], path.resolve().parent)
