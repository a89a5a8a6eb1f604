"""Options and input files checked one way for the CLI (model/cli.py) and pytest (conftest.py).

Parsers take the option's text and raise ValueError saying what was received and what was
expected; each caller adds the option's name the way its tool reports usage errors (argparse's
`argument --x:`, pytest's UsageError). Checks of paths name the option themselves.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"expected a positive integer, received {text!r}") from None
    if value < 1:
        raise ValueError(f"expected a positive integer, received {value}")
    return value


def batch_sizes(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"expected comma-separated integers like 1,32,256, received {text!r}") from None
    if not values or min(values) < 1:
        raise ValueError(f"batch sizes must be positive integers (at least one), received {text!r}")
    return values


ALL_GPUS = "all"


def gpu_list(text: str) -> str | tuple[int, ...]:
    """'all' or distinct comma-separated GPU indices, as CUDA numbers the GPUs a process sees (the
    entries of an inherited CUDA_VISIBLE_DEVICES, else every GPU): model/gpus.py spreads over them."""
    if text.strip().lower() == ALL_GPUS:
        return ALL_GPUS
    parts = [p.strip() for p in text.split(",")]
    if not all(p.isdigit() for p in parts):
        raise ValueError(f"expected 'all' or comma-separated GPU indices such as 0,1, received {text!r}")
    indices = tuple(int(p) for p in parts)
    repeated = sorted({i for i in indices if indices.count(i) > 1})
    if repeated:
        raise ValueError(f"expected each GPU index once (workers beyond the GPUs share them round robin), "
                         f"received {text!r} naming {repeated} more than once")
    return indices


def batches_in_profile(sizes: list[int], profile) -> None:
    outside = [n for n in sizes if n not in profile]
    if outside:
        raise ValueError(f"--batch-sizes: batch sizes {outside} lie outside the profile ({profile}); widen --profile")


def writable_folder(path: str | Path, option: str) -> Path:
    """`path` as a folder that exists (created if need be) and takes new files, or a ValueError
    naming `option`. Run before any work, so a bad location costs nothing."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{option} {path}: is a file, expected a folder (existing or to be created)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"{option} {path}: cannot create the folder ({exc.strerror or exc})") from None
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise ValueError(f"{option} {path}: cannot write files in it ({exc.strerror or exc}); "
                         "expected a writable folder") from None
    return path


def json_document(path: str | Path, expected: str) -> dict:
    """The JSON object in `path`, or a ValueError naming the file and what it should have been."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read it ({exc.strerror or exc}); expected {expected}") from None
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{path}: not JSON ({exc}); expected {expected}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: holds a JSON {type(doc).__name__}, expected {expected}")
    return doc
