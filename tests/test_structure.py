"""The package's shape: no import circle in model/ (module-level and function-level imports alike:
a circle through a function-level import is still one module that cannot be read without the
other), no module a reader cannot hold (over 400 lines), and the regression gate's core importing
nothing from its calibration."""
from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "model"
MAX_LINES = 400
GATE_CALIBRATION = {"model.gate.probe", "model.gate.plan", "model.gate.proof", "model.gate.inject"}
GATE_ENTRY = {"model.gate.__main__"}  # composes the core's commands with the calibration's


def _name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(package: Path = PACKAGE) -> dict[str, Path]:
    return {_name(p, package.parent): p for p in sorted(package.rglob("*.py")) if "__pycache__" not in p.parts}


def _type_checking_only(node: ast.AST, parents: dict) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of `known` that `name` imports anywhere in its body (not under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text(), str(path))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's own package upwards
                base = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            # `from model.gate import sampling` imports the module model.gate.sampling.
            targets = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in known else prefix for a in node.names]
        else:
            continue
        if _type_checking_only(node, parents):
            continue
        found.update(t for t in targets if t in known and t != name)
    return found


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    mods = modules(package)
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        return exc.args[1]
    return None


def test_the_walk_finds_a_circle_through_a_function_level_import(tmp_path):
    pkg = tmp_path / "model"
    (pkg / "gate").mkdir(parents=True)
    for f in ("__init__.py", "gate/__init__.py"):
        (pkg / f).write_text("")
    (pkg / "gate" / "cli.py").write_text("from model.gate import stats\n\ndef parser():\n    from .probe import add\n")
    (pkg / "gate" / "probe.py").write_text("from model.gate.cli import parser\n")
    (pkg / "gate" / "stats.py").write_text("import math\n")
    graph = import_graph(pkg)
    assert graph["model.gate.cli"] == {"model.gate.stats", "model.gate.probe"}
    circle = find_circle(graph)
    assert circle is not None and set(circle) == {"model.gate.cli", "model.gate.probe"}


def test_no_import_circle_in_model():
    circle = find_circle(import_graph())
    assert circle is None, "import circle in model/: " + " -> ".join(circle)


def test_the_gate_core_imports_nothing_from_its_calibration():
    graph = import_graph()
    core = {n for n in graph if n.startswith("model.gate") and n not in GATE_CALIBRATION | GATE_ENTRY}
    bad = {n: sorted(graph[n] & GATE_CALIBRATION) for n in sorted(core) if graph[n] & GATE_CALIBRATION}
    assert not bad, f"the gate's core imports its calibration: {bad}"


@pytest.mark.parametrize("name", sorted(modules()))
def test_module_fits_in_a_reader_s_head(name):
    lines = len(modules()[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{modules()[name].relative_to(ROOT)}: {lines} lines, expected at most {MAX_LINES}"
