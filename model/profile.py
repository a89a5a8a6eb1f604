"""The batch range every runner declares and every TensorRT engine is built for."""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class BatchProfile:
    """Batches `min`..`max`, tuned for each batch in `opts`.

    TensorRT picks kernels for a profile's opt batch, and one choice does not serve both ends: on
    the H200 an FP16 engine tuned for 32 ran batch 4096 in 1.80 ms, one tuned for 4096 in 1.14 ms.
    So an engine gets one optimization profile per opt batch, all spanning min..max, and the
    runner serves each batch from the profile whose opt is nearest.

    `static` batches also get an engine built for that one shape, which serves exactly that batch:
    on the H200 an FP16 engine built for batch 1 ran it in 41.3 us, the dynamic one tuned for 32 in
    47.0 us (same process; TensorRT chose fewer reformatting copies and GEMV kernels for it).
    """
    min: int = 1
    opts: tuple[int, ...] = (32, 4096)
    max: int = 4096
    static: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        opts, static = tuple(self.opts), tuple(self.static)
        object.__setattr__(self, "opts", opts)
        object.__setattr__(self, "static", static)
        if not opts or not all(1 <= self.min <= o <= self.max for o in opts) or len(set(opts)) != len(opts):
            raise ValueError(f"a batch profile needs 1 <= min <= each distinct opt <= max, received {self}")
        if not all(self.min <= b <= self.max for b in static) or len(set(static)) != len(static):
            raise ValueError(f"a batch profile's static batches must be distinct and lie in min..max, received {self}")

    def __str__(self) -> str:
        text = f"min={self.min} opt={'/'.join(map(str, self.opts))} max={self.max}"
        return text + (f" static={'/'.join(map(str, self.static))}" if self.static else "")

    def spec(self) -> str:
        """The `MIN,OPT[/OPT...],MAX[,STATIC[/STATIC...]]` text `parse` reads."""
        text = f"{self.min},{'/'.join(map(str, self.opts))},{self.max}"
        return text + (f",{'/'.join(map(str, self.static))}" if self.static else "")

    @classmethod
    def parse(cls, text: str) -> "BatchProfile":
        """`MIN,OPT,MAX`, e.g. `1,32,4096`; several opt batches as `1,32/4096,4096`; a fourth field
        lists the batches that also get a fixed-shape engine (`1,32/4096,4096,1`); without it, none."""
        try:
            lo, opts, hi, *static = text.split(",")
            if len(static) > 1:
                raise ValueError
            values = (int(lo), tuple(int(v) for v in opts.split("/")), int(hi),
                      tuple(int(v) for v in static[0].split("/")) if static else ())
        except ValueError:
            raise ValueError(f"a batch profile is MIN,OPT,MAX[,STATIC] with OPT one batch or several joined by '/', "
                             f"and STATIC likewise (e.g. 1,32/4096,4096,1), received {text!r}") from None
        return cls(*values)

    def engine_profiles(self) -> list["BatchProfile"]:
        """What a set of one-profile TensorRT engines covers this range with: one engine per opt
        batch over min..max, and one per static batch for that shape alone."""
        return ([BatchProfile(self.min, (o,), self.max, ()) for o in self.opts]
                + [BatchProfile(b, (b,), b, ()) for b in self.static])

    def __contains__(self, batch: int) -> bool:
        return self.min <= batch <= self.max


def serving_profile(batch: int, profiles: list[BatchProfile]) -> int:
    """Index of the one-profile engine that serves `batch`: of those whose range holds it, the one
    tuned nearest it on a log scale, the narrower range on a tie (a static engine for that batch)."""
    fits = [i for i, p in enumerate(profiles) if batch in p] or list(range(len(profiles)))
    return min(fits, key=lambda i: (_log_distance(batch, profiles[i].opts[0]), profiles[i].max - profiles[i].min, i))


def nearest_opt(batch: int, opts: list[int]) -> int:
    """Index of the opt batch closest to `batch` on a log scale (32 is nearer 256 than 4096 is)."""
    return min(range(len(opts)), key=lambda i: (_log_distance(batch, opts[i]), i))


def _log_distance(batch: int, opt: int) -> float:
    return abs(math.log(batch / opt))


DEFAULT_PROFILE = BatchProfile(static=(1,))
