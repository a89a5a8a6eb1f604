"""Output dims that follow input dims: `h // 2`, `seq + 1`, `(h - 1) // 2 + 1`.

A dim is parsed with `ast` and only names, integers, `+ - * //` and parentheses are accepted;
nothing is ever `eval`-ed, so a spec (or an ONNX file's dim_param) cannot run code.
"""
from __future__ import annotations

import ast
import operator

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.FloorDiv: operator.floordiv}
ALLOWED = "names, integers, + - * // and parentheses"


class DimError(ValueError):
    """A dim that is not a name or an expression of names; the message says which part."""


def _check(node: ast.AST, text: str) -> None:
    if isinstance(node, ast.Name):
        return
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        _check(node.left, text)
        _check(node.right, text)
        return
    raise DimError(f"dim {text!r}: {ast.unparse(node)!r} is not allowed (only {ALLOWED})")


def parse(text: str) -> ast.expr:
    try:
        body = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        raise DimError(f"dim {text!r} is not a name or an expression of {ALLOWED}") from None
    _check(body, text)
    return body


def canonical(text: str) -> str:
    """One spelling per expression (`h//2` and `h // 2` alike), the name an export gives the dim."""
    return ast.unparse(parse(text))


def is_name(text: str) -> bool:
    return isinstance(parse(text), ast.Name)


def names(text: str) -> set[str]:
    return {n.id for n in ast.walk(parse(text)) if isinstance(n, ast.Name)}


def evaluate(text: str, sizes: dict[str, int]) -> int:
    def value(node: ast.AST) -> int:
        if isinstance(node, ast.Name):
            return sizes[node.id]
        if isinstance(node, ast.Constant):
            return node.value
        right = value(node.right)
        if isinstance(node.op, ast.FloorDiv) and right == 0:
            raise DimError(f"dim {text!r} divides by zero at {sizes}")
        return _OPS[type(node.op)](value(node.left), right)

    missing = names(text) - set(sizes)
    if missing:
        raise DimError(f"dim {text!r} needs {sorted(missing)}, which the sizes {sizes} lack")
    result = value(parse(text))
    if result < 0:
        raise DimError(f"dim {text!r} is {result} at {sizes}: a size cannot be negative")
    return result
