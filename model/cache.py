"""The one cache layer every artifact goes through: weights, ONNX files, engine plans, timing caches.

An artifact is a file `<folder>/<name>` beside its sidecar `<folder>/<name>.json`:

    {"format": "artifact-sidecar/1", "artifact": NAME, "size": BYTES, "sha256": HEX,
     "key": {...what the artifact was built from...}, "figures": {...what is reported from it...},
     "record_sha256": HEX}

`record_sha256` is the sha256 of every other field (canonical JSON), so an edited figure, key or
file hash is caught like a damaged file. It guards against damage and stale or hand-edited
entries, not against someone who recomputes it: it is a checksum, not a signature.

API (callers name the file; `key(key_inputs)` gives a short hash to put in the name):

    get_or_build(folder, name, key_inputs, build, verify=None, rebuild=False) -> Artifact
        The verified artifact, built first if missing, damaged or built from other inputs.
        `build(tmp)` writes the artifact to `tmp` (a fresh, unique file in `folder` whose name
        ends in the artifact's own suffix; siblings named `tmp.with_suffix(".x" + tmp.suffix)`
        are unique too and removed afterwards) and returns the figures to record (a JSON-able
        dict, or None). `verify(path)` is an extra content check that raises on a bad file
        (onnx.checker, say); it runs on the new file before it is published and on every load.
    load(folder, name, key_inputs, verify=None) -> Artifact | None
        The verified artifact, or None (with a warning when something was there but unusable).
    store(folder, name, key_inputs, build, verify=None) -> Artifact
        Build and publish unconditionally, e.g. a timing cache that each engine build refines.

Guarantees:
- Verified on every load: the sidecar's own hash, its format and name, its key inputs against the
  caller's, the file's size and sha256, then `verify`. Anything wrong (missing, unreadable or junk
  sidecar, same-size damage, other inputs, an edited figure) is logged as a warning and rebuilt;
  the file is never used and nothing crashes.
- Atomic: the artifact and its sidecar are written to unique temporary files in `folder` and
  renamed into place, artifact first. A process killed at any point leaves either no artifact, a
  complete one whose sidecar does not vouch for it (rebuilt), or temporary files that are never
  read and are swept by the next build of that artifact.
- Built once under concurrency: a per-artifact inter-process lock (`filelock`, `<name>.lock`) is
  taken when the artifact must be built; whoever gets it second verifies the first one's result and
  uses it. Loads of a sound artifact take no lock.
- Files get the mode the umask gives (0666 & ~umask), not mkstemp's 0600.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from filelock import FileLock, Timeout

log = logging.getLogger(__name__)
DEFAULT_CACHE = Path(os.environ.get("SIMPLECNN_CACHE", Path(__file__).resolve().parent.parent / ".cache"))
FORMAT = "artifact-sidecar/1"

Build = Callable[[Path], "dict | None"]
Verify = Callable[[Path], None]


@dataclass(frozen=True)
class Artifact:
    path: Path
    sidecar: dict  # the verified record, as written
    built: bool  # True when this call built it

    @property
    def figures(self) -> dict:
        return self.sidecar["figures"]

    @property
    def key_inputs(self) -> dict:
        return self.sidecar["key"]


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def source_digest(*modules) -> str:
    """sha256 over the source files of `modules`: part of the key of an artifact that a change of
    that code must invalidate (a cache shared between checkouts, as CI keeps one, then never serves
    weights another version of the training code made)."""
    import inspect

    h = hashlib.sha256()
    for module in modules:
        h.update(Path(inspect.getsourcefile(module)).read_bytes())
    return h.hexdigest()[:16]


def _canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def key(key_inputs: dict) -> str:
    """A short hash of an artifact's inputs, for its file name."""
    return sha256_bytes(json.dumps(key_inputs, sort_keys=True).encode())[:16]


def sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def seal(record: dict) -> dict:
    """`record` plus `record_sha256`, the hash covering all of it."""
    body = {k: v for k, v in record.items() if k != "record_sha256"}
    return {**body, "record_sha256": sha256_bytes(_canonical(body))}


def _umask() -> int:
    try:  # Linux reports it without changing it
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _new_temp(folder: Path, name: str) -> Path:
    """A fresh file in `folder`, readable as the umask allows, named to be swept if orphaned."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=f".tmp{Path(name).suffix}")
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600 whatever the umask
    os.close(fd)
    return Path(tmp)


def _sweep(folder: Path, literal_prefix: str, wildcard_rest: str) -> None:
    escaped = "".join(f"[{c}]" if c in "*?[" else c for c in literal_prefix)
    for leftover in folder.glob(escaped + wildcard_rest):
        leftover.unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write a plain output file (a report, say) whole or not at all, with the umask's mode."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temp(path.parent, path.name)
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def strict_json(obj):
    """`obj` with every non-finite float as the string "NaN", "Infinity" or "-Infinity": Python's json
    writes those as bare tokens that JSON itself (RFC 8259) and most readers (jq, JavaScript) refuse,
    and a diverging conversion is exactly when they appear."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return "NaN" if math.isnan(obj) else ("Infinity" if obj > 0 else "-Infinity")
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    return obj


def json_text(obj, **options) -> str:
    """JSON that any reader parses: non-finite floats as strings (strict_json)."""
    return json.dumps(strict_json(obj), allow_nan=False, **options)


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_bytes(path, (json_text(obj, indent=2, sort_keys=True) + "\n").encode())


def _as_json(key_inputs: dict) -> dict:
    # What the sidecar will read back: tuples become lists, so a fresh key compares equal.
    return json.loads(_canonical(key_inputs))


def problem(path: Path, key_inputs: dict, verify: Verify | None = None) -> tuple[str | None, dict | None]:
    """(why the cached `path` must not be used or None when it is sound, its sidecar when sound)."""
    key_inputs = _as_json(key_inputs)
    side = sidecar_path(path)
    if not path.exists() and not side.exists():
        return "not built yet", None
    if not side.exists():
        return "its sidecar is missing", None
    try:
        record = json.loads(side.read_text())
    except (OSError, ValueError) as exc:
        return f"its sidecar is unreadable ({exc})", None
    if not isinstance(record, dict) or not isinstance(record.get("key"), dict):
        return f"its sidecar is not a {FORMAT} record (it holds {type(record).__name__} {str(record)[:60]})", None
    if record.get("format") != FORMAT or record.get("artifact") != path.name:
        return f"its sidecar is for {record.get('artifact')!r} in format {record.get('format')!r}", None
    if seal(record)["record_sha256"] != record.get("record_sha256"):
        return "its sidecar was edited after it was written (its record_sha256 does not match its content)", None
    if record["key"] != key_inputs:
        stale = sorted(k for k in set(record["key"]) | set(key_inputs) if record["key"].get(k) != key_inputs.get(k))
        return "it was built from other inputs: " + ", ".join(
            f"{k}: cached {record['key'].get(k)!r} vs now {key_inputs.get(k)!r}" for k in stale), None
    if not path.exists():
        return "the file is missing (its sidecar is there)", None
    size = path.stat().st_size
    if size != record.get("size"):
        return f"it is truncated or padded ({size} bytes, its sidecar says {record.get('size')})", None
    if sha256_file(path) != record.get("sha256"):
        return "its bytes do not match the sidecar's sha256 (damaged in place)", None
    if verify is not None:
        try:
            verify(path)
        except Exception as exc:  # whatever the check raises, the file is not used
            return f"it fails its content check ({type(exc).__name__}: {exc})", None
    return None, record


def load(folder: str | Path, name: str, key_inputs: dict, verify: Verify | None = None) -> Artifact | None:
    path = Path(folder) / name
    why, record = problem(path, key_inputs, verify)
    if why is None:
        return Artifact(path, record, built=False)
    if why != "not built yet":
        log.warning("not using cached %s: %s", path, why)
    return None


def _lock(path: Path) -> FileLock:
    return FileLock(path.with_name(f".{path.name}.lock"), mode=0o666 & ~_umask())


def _publish(path: Path, key_inputs: dict, build: Build, verify: Verify | None) -> Artifact:
    """Build and rename into place; the caller holds the artifact's lock."""
    folder, name = path.parent, path.name
    side = sidecar_path(path)
    for orphaned in (name, side.name):  # temporaries of builders killed earlier (we hold the lock)
        _sweep(folder, f".{orphaned}.", "*.tmp*")
    tmp = _new_temp(folder, name)
    own = tmp.name[: -len(tmp.suffix)] if tmp.suffix else tmp.name  # this build's temporaries
    try:
        figures = build(tmp) or {}
        if verify is not None:
            verify(tmp)
        record = seal({"format": FORMAT, "artifact": name, "size": tmp.stat().st_size,
                       "sha256": sha256_file(tmp), "key": _as_json(key_inputs), "figures": _as_json(figures)})
        side_tmp = _new_temp(folder, side.name)
        side_tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
        os.replace(side_tmp, side)
    finally:
        _sweep(folder, own, "*")
        _sweep(folder, f".{side.name}.", "*.tmp*")
    return Artifact(path, record, built=True)


def store(folder: str | Path, name: str, key_inputs: dict, build: Build, verify: Verify | None = None) -> Artifact:
    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with _lock(path):
        return _publish(path, key_inputs, build, verify)


def get_or_build(folder: str | Path, name: str, key_inputs: dict, build: Build,
                 verify: Verify | None = None, rebuild: bool = False) -> Artifact:
    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if not rebuild:
        why, record = problem(path, key_inputs, verify)
        if why is None:
            return Artifact(path, record, built=False)  # a sound artifact needs no lock
    lock = _lock(path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("waiting for another process building %s", path)
        lock.acquire()
    try:
        if not rebuild:
            # Whoever held the lock may have just built it; a fault seen now is a real one.
            found = load(folder, name, key_inputs, verify)
            if found is not None:
                return found
        return _publish(path, key_inputs, build, verify)
    finally:
        lock.release()
