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
            raise ValueError(f"batch profile needs 1 <= min <= opt <= max, received {self}")

    def __str__(self) -> str:
        return f"min={self.min} opt={self.opt} max={self.max}"


DEFAULT_PROFILE = BatchProfile()
