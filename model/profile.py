"""The batch range every runner declares and every TensorRT engine is built for."""
from __future__ import annotations

import math
from dataclasses import dataclass

INPUT_NAME = "input"
OUTPUT_NAME = "output"


@dataclass(frozen=True)
class BatchProfile:
    """Batches `min`..`max`, tuned for each batch in `opts`.

    TensorRT picks kernels for a profile's opt batch, and one choice does not serve both ends: on
    the H200 an FP16 engine tuned for 32 ran batch 4096 in 1.80 ms, one tuned for 4096 in 1.14 ms.
    So an engine gets one optimization profile per opt batch, all spanning min..max, and the
    runner serves each batch from the profile whose opt is nearest.
    """
    min: int = 1
    opts: tuple[int, ...] = (32, 4096)
    max: int = 4096

    def __post_init__(self) -> None:
        opts = tuple(self.opts)
        object.__setattr__(self, "opts", opts)
        if not opts or not all(1 <= self.min <= o <= self.max for o in opts) or len(set(opts)) != len(opts):
            raise ValueError(f"a batch profile needs 1 <= min <= each distinct opt <= max, received {self}")

    def __str__(self) -> str:
        return f"min={self.min} opt={'/'.join(map(str, self.opts))} max={self.max}"

    def spec(self) -> str:
        """The `MIN,OPT[/OPT...],MAX` text `parse` reads."""
        return f"{self.min},{'/'.join(map(str, self.opts))},{self.max}"

    @classmethod
    def parse(cls, text: str) -> "BatchProfile":
        """`MIN,OPT,MAX`, e.g. `1,32,4096`; several opt batches as `1,32/4096,4096`."""
        try:
            lo, opts, hi = text.split(",")
            values = int(lo), tuple(int(v) for v in opts.split("/")), int(hi)
        except ValueError:
            raise ValueError(f"a batch profile is MIN,OPT,MAX with OPT one batch or several joined by '/' "
                             f"(e.g. 1,32/4096,4096), received {text!r}") from None
        return cls(*values)

    def __contains__(self, batch: int) -> bool:
        return self.min <= batch <= self.max


def nearest_opt(batch: int, opts: list[int]) -> int:
    """Index of the opt batch closest to `batch` on a log scale (32 is nearer 256 than 4096 is)."""
    return min(range(len(opts)), key=lambda i: (abs(math.log(batch / opts[i])), i))


DEFAULT_PROFILE = BatchProfile()
