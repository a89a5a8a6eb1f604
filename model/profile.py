"""The batch range every runner declares and every TensorRT engine is built for."""
from __future__ import annotations

from dataclasses import dataclass

INPUT_NAME = "input"
OUTPUT_NAME = "output"


@dataclass(frozen=True)
class BatchProfile:
    min: int = 1
    opt: int = 32
    max: int = 4096

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise ValueError(f"a batch profile needs 1 <= min <= opt <= max, received {self}")

    def __str__(self) -> str:
        return f"min={self.min} opt={self.opt} max={self.max}"

    @classmethod
    def parse(cls, text: str) -> "BatchProfile":
        """`MIN,OPT,MAX`, e.g. `1,32,4096`."""
        try:
            lo, opt, hi = (int(v) for v in text.split(","))
        except ValueError:
            raise ValueError(f"a batch profile is MIN,OPT,MAX (e.g. 1,32,4096), received {text!r}") from None
        return cls(lo, opt, hi)

    def __contains__(self, batch: int) -> bool:
        return self.min <= batch <= self.max


DEFAULT_PROFILE = BatchProfile()
