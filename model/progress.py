"""Progress of a long loop: tqdm's bar on a terminal, periodic plain lines anywhere else.

A bar redraws itself with carriage returns; written to a CI log or a file (stderr not a terminal)
every frame stays in it, thousands per training run. There the same calls print one line per
`every_s` seconds or `every_fraction` of the total, whichever comes first, and one at the end.
"""
from __future__ import annotations

import contextlib
import sys
import time
from types import ModuleType
from typing import TextIO

from tqdm.auto import tqdm


class LineProgress:
    """tqdm's `update` / `set_postfix` / `close`, as whole lines."""

    def __init__(self, total: int | None, desc: str, unit: str, file: TextIO,
                 every_s: float = 10.0, every_fraction: float = 0.1) -> None:
        """`total` None: unknown (a download without a length), a line every `every_s` only."""
        if total is not None and total <= 0:
            raise ValueError(f"progress total: received {total}; expected a positive count of {unit}s")
        self.total, self.desc, self.file = total, desc, file
        self.unit = unit if len(unit) == 1 else unit + "s"  # "B", else "steps"
        self.every_s = every_s
        self.step = max(1, int(total * every_fraction)) if total else None
        self.n, self.postfix, self.closed = 0, "", False
        self.start = self.last_time = time.monotonic()
        self.last_n = 0

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if (self.step and self.n - self.last_n >= self.step) or now - self.last_time >= self.every_s:
            self._line(now)

    def set_postfix(self, **values) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.n != self.last_n:
                self._line(time.monotonic())

    def _line(self, now: float) -> None:
        self.last_n, self.last_time = self.n, now
        extra = f", {self.postfix}" if self.postfix else ""
        done = f"{self.n}/{self.total} {self.unit} ({100 * self.n / self.total:.0f}%)" if self.total else f"{self.n} {self.unit}"
        print(f"{self.desc}: {done}, {now - self.start:.0f} s{extra}", file=self.file, flush=True)


def progress(total: int, desc: str, unit: str = "step", enabled: bool = True, file: TextIO | None = None):
    """A progress reporter for `total` units on `file` (default stderr): tqdm on a terminal, else lines."""
    file = sys.stderr if file is None else file
    if enabled and not _is_terminal(file):
        return LineProgress(total, desc, unit, file)
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, file=file)


@contextlib.contextmanager
def lines_in(module: ModuleType, desc: str, file: TextIO | None = None):
    """Within the block, a library's own tqdm bar (`module.tqdm`, such as torchvision's download
    bar) writes lines instead of frames where `file` (default stderr) is not a terminal."""
    file = sys.stderr if file is None else file
    if _is_terminal(file):
        yield
        return

    def line_bar(total: int | None = None, unit: str = "it", **_display_options) -> LineProgress:
        return LineProgress(total or None, desc, unit, file)

    original = module.tqdm
    module.tqdm = line_bar
    try:
        yield
    finally:
        module.tqdm = original


def _is_terminal(file: TextIO) -> bool:
    isatty = getattr(file, "isatty", None)
    return bool(isatty and isatty())
