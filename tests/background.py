"""Subprocess runs that a test judges, started when collection ends instead of when the test runs.

A run of the foreign models is a whole pytest session that imports torch, torchvision and
transformers again (about 20 s before its first test, then 20 s of tests). Run in the foreground
it idles the second of CI's two cores for that long; started as collection ends it overlaps the
rest of the suite, and the test that judges it only waits for what is left. Such tests run last and
their runs at a lower priority (nice 10), so the suite's own tests keep a core and the runs have the
whole session to finish. A test function registers its run (a test of one run: not parametrized);
under pytest-xdist, or when the test is deselected, nothing starts early and the test runs its
command itself.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

# test function -> its run, made from the pytest config and a scratch folder of the run's own
_COMMANDS: dict[Callable, Callable[[object, Path], "Command"]] = {}
_STARTED: dict[Callable, "_Run"] = {}


@dataclass(frozen=True)
class Command:
    argv: list[str]
    cwd: str
    env: dict[str, str] | None = None
    timeout: float = 600  # seconds from its start: a hung run fails its test instead of the whole CI job


@dataclass
class _Run:
    command: Command
    scratch: Path
    popen: subprocess.Popen
    stdout: object = field(repr=False)
    stderr: object = field(repr=False)
    deadline: float = 0.0

    @classmethod
    def start(cls, make: Callable[[object, Path], Command], config) -> "_Run":
        scratch = Path(tempfile.mkdtemp(prefix="pytest-background-"))
        command = make(config, scratch)
        out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
        popen = subprocess.Popen(command.argv, cwd=command.cwd, env=command.env, stdout=out, stderr=err,
                                 preexec_fn=lambda: os.nice(10))
        return cls(command, scratch, popen, out, err, time.monotonic() + command.timeout)

    def finish(self) -> subprocess.CompletedProcess:
        try:
            code = self.popen.wait(timeout=max(0.0, self.deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            raise AssertionError(f"{self.command.argv} ran past its {self.command.timeout} s") from None
        texts = []
        for f in (self.stdout, self.stderr):
            f.seek(0)
            texts.append(f.read())
            f.close()
        return subprocess.CompletedProcess(self.command.argv, code, *texts)


def register(command: Callable[[object, Path], Command]):
    """Decorates a test function: `command(config, scratch)` is the run it judges (`result(request)`);
    `scratch` is an empty folder the run may write into, removed after the test."""
    def decorate(test: Callable) -> Callable:
        _COMMANDS[test] = command
        return test
    return decorate


def run_last(items: list) -> None:
    """Moves the tests that judge a registered run to the end, in their order (collection_modifyitems)."""
    late = [item for item in items if getattr(item, "function", None) in _COMMANDS]
    if late and not os.environ.get("PYTEST_XDIST_WORKER"):
        items[:] = [item for item in items if item not in late] + late


def start_selected(session) -> None:
    """Starts the registered runs of the tests this session will run (pytest_collection_finish)."""
    config = session.config
    if os.environ.get("PYTEST_XDIST_WORKER") or config.getoption("collectonly"):
        return
    for item in session.items:
        test = getattr(item, "function", None)
        if test in _COMMANDS and test not in _STARTED:
            _STARTED[test] = _Run.start(_COMMANDS[test], config)


def result(request) -> tuple[subprocess.CompletedProcess, Path]:
    """The finished run of the requesting test (the one started early, else started now) and its
    scratch folder, which stays until the test ends."""
    test = request.function
    run = _STARTED.pop(test, None) or _Run.start(_COMMANDS[test], request.config)
    request.addfinalizer(lambda: shutil.rmtree(run.scratch, ignore_errors=True))
    return run.finish(), run.scratch


def stop_all() -> None:
    """Ends runs whose tests never ran (the session was interrupted or stopped at a first failure)."""
    while _STARTED:
        _, run = _STARTED.popitem()
        run.popen.kill()
        run.finish()
        shutil.rmtree(run.scratch, ignore_errors=True)
