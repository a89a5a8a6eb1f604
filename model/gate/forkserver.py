"""A fork server for the gate's benchmark processes: each `pytest` run is a new process forked from
one that has already imported the third-party libraries (numpy, torch, pytest, ONNX Runtime, ...),
so it does not pay seconds of imports before it measures anything (5 s of 12 on a loaded 2-core
machine; the gate starts dozens of processes per comparison).

What a forked process shares with its siblings: those libraries' code and import-time state, their
address layout, and the string hash seed. What is its own, as in a fresh interpreter: the project's
code (never imported by the server: each process imports its own checkout's, with that checkout
first on sys.path), its CUDA context, engines, buffers and every allocation, and the cores the
scheduler gives it (or the pinned set). Both sides of a comparison are forked from the same server,
so they remain alike in all of it; the gate's A/A proofs measure the spread that remains.

Run as a script (`python path/to/forkserver.py MODULE,...`), never imported by the server itself,
so that no `model` package is in sys.modules when a process imports its checkout's. Requests are
JSON lines on stdin ({"cwd", "argv", "env", "log"}); each answer is a JSON line {"rc": N} on stdout.
The client side is `ForkServer` below (imported by the gate, not by the server).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys


def _child(req: dict) -> int:
    fd = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.chdir(req["cwd"])
    os.environ.clear()
    os.environ.update(req["env"])
    # As `python -m pytest` in cwd with PYTHONPATH set: cwd first, then PYTHONPATH, then site.
    extra = [req["cwd"], *filter(None, req["env"].get("PYTHONPATH", "").split(os.pathsep))]
    sys.path[:0] = [p for p in extra if p not in sys.path[:len(extra)]]
    leaked = sorted(m for m in ("model", "benchmarks", "tests", "conftest") if m in sys.modules)
    if leaked:  # the server must never have imported project code; refuse rather than measure the wrong code
        print(f"fork server: project modules {leaked} already imported; refusing to run", file=sys.stderr)
        return 70
    import pytest

    # Plugins the server imported (hypothesis's) cannot have their asserts rewritten; that is all
    # pytest warns about here, and the project's filterwarnings = error would make it fatal.
    argv = ["-W", "ignore::pytest.PytestAssertRewriteWarning", *req["argv"]]
    sys.argv = ["pytest", *argv]
    return int(pytest.main(argv))


def _memo_cpu_info() -> None:
    """pytest-benchmark asks py-cpuinfo for the machine's CPU in every process, and py-cpuinfo starts
    a subprocess to read it (0.2 s on this 2-core machine): read once here, every child gets a copy.
    What it reads (the CPU model, flags, cores) is the machine's, the same in every child."""
    import copy

    import cpuinfo

    try:
        info = cpuinfo.get_cpu_info()
    except Exception as exc:  # noqa: BLE001 - then each child asks itself, as without the server
        print(f"fork server: cpuinfo not read once: {exc}", file=sys.stderr)
        return
    cpuinfo.get_cpu_info = lambda: copy.deepcopy(info)


def serve(preload: list[str]) -> None:
    sys.path = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]
    loaded = []
    for name in preload:
        try:
            __import__(name)
            loaded.append(name)
        except Exception as exc:  # noqa: BLE001 - a library this Python lacks is imported by the child, if at all
            print(f"fork server: not preloaded {name}: {exc}", file=sys.stderr)
    if "cpuinfo" in loaded:
        _memo_cpu_info()
    out = sys.stdout
    print(json.dumps({"ready": loaded}), file=out, flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = _child(req)
            except BaseException as exc:  # noqa: BLE001 - report, never return into the server loop
                try:
                    print(f"fork server child: {type(exc).__name__}: {exc}", file=sys.stderr)
                except Exception:  # noqa: BLE001
                    pass
            finally:
                try:
                    sys.stdout.flush()
                    sys.stderr.flush()
                finally:
                    os._exit(code)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"rc": os.waitstatus_to_exitcode(status)}), file=out, flush=True)


class ForkServer:
    """Client: start the server with `python` (pinned to `cpus` before it imports anything, so that
    thread pools sized at library load see the pinned set), then run pytest processes through it."""

    DEFAULT_PRELOAD = ("numpy", "pytest", "_pytest.python", "pytest_benchmark.plugin", "xdist.plugin", "hypothesis",
                       "cpuinfo", "filelock", "torch", "onnx", "onnxruntime", "tensorrt", "cuda.bindings.runtime")

    def __init__(self, python: str, cpus=None, preload=DEFAULT_PRELOAD) -> None:
        pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
        python = os.path.abspath(python) if os.sep in python else shutil.which(python) or python  # cwd is /
        self.proc = subprocess.Popen([python, os.path.abspath(__file__), ",".join(preload)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, preexec_fn=pin, cwd="/")
        ready = self.proc.stdout.readline()
        if not ready:
            raise RuntimeError(f"the fork server ({python}) exited {self.proc.wait()} before it was ready")
        self.preloaded = json.loads(ready)["ready"]

    def run(self, cwd, argv: list[str], env: dict, log) -> int:
        self.proc.stdin.write(json.dumps({"cwd": str(cwd), "argv": argv, "env": env, "log": str(log)}) + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        if not answer:
            raise RuntimeError(f"the fork server died (exit {self.proc.wait()})")
        return json.loads(answer)["rc"]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
        self.proc.stdout.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


if __name__ == "__main__":
    serve([m for m in sys.argv[1].split(",") if m] if len(sys.argv) > 1 else [])
