"""Where cached artifacts live, and how they are written so a crash never leaves a half file."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

DEFAULT_CACHE = Path(os.environ.get("SIMPLECNN_CACHE", Path(__file__).resolve().parent.parent / ".cache"))


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def config_key(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, obj: dict) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: str | Path) -> dict | None:
    """The sidecar, or None when it is missing or unreadable (the caller rebuilds)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
