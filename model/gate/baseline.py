"""Stored-baseline mode, for when only one commit is at hand (a push to main): `record` keeps every
process's raw samples and the A/A spread measured between those processes; `check` compares a new
run with them, the stored processes being the base side of the test (model/gate/stats.py), so
their spread enters the noise floor. The spread between processes minutes apart is what this mode
can measure; drift over days is not, which is why pull requests use the same-job comparison."""
from __future__ import annotations

import json
import math
from pathlib import Path

from model.gate.sampling import Side
from model.gate.stats import Settings, detectable, log_medians, process_sd

FORMAT = "model.gate baseline v2"


def save(side: Side, path: Path) -> dict:
    if len(side.machine_infos) < 2:
        raise ValueError(f"a baseline needs at least two processes to measure its A/A spread; received "
                         f"{len(side.machine_infos)}")
    data = {"format": FORMAT, "machine_info": side.machine_infos[0], "processes": len(side.machine_infos),
            "benchmarks": {name: {"clock": side.clocks[name], "groups": groups,
                                  "aa_sd": math.expm1(process_sd(log_medians(groups))[0])}
                           for name, groups in side.groups.items()}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return data


def projected_sdr(groups: list, check_processes: int, settings: Settings, family: int) -> float:
    """The smallest detectable regression a later check of `check_processes` processes would have
    against these stored processes, if its processes spread as these did."""
    sd, df = process_sd(log_medians(groups))
    if sd is None:
        return math.inf
    res = detectable(sd, df + check_processes - 1, len(groups), check_processes, settings.alpha / max(family, 1))
    return max(settings.min_effect, res)


def blind_spots(side: Side, check_processes: int, settings: Settings) -> dict[str, float]:
    """Benchmark -> projected SDR, for those a check against this baseline could not gate.

    A baseline recorded beside another job (a busy loop on the other core here: process-to-process
    sd up to 420%) left every later check judging all 33 benchmarks too noisy; it must not be stored."""
    sdrs = {name: projected_sdr(groups, check_processes, settings, len(side.groups)) for name, groups in side.groups.items()}
    return {name: sdr for name, sdr in sdrs.items() if sdr > settings.max_detectable}


def load(path: Path) -> Side:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"baseline {path} does not exist; record one first: "
                                f"python -m model.gate record --baseline {path}") from None
    if data.get("format") != FORMAT:
        raise ValueError(f"baseline {path}: format {data.get('format')!r}, expected {FORMAT!r}; record it again")
    side = Side("baseline", Path(path).parent)
    side.machine_infos = [data["machine_info"]]
    for name, b in data["benchmarks"].items():
        side.clocks[name], side.groups[name] = b["clock"], b["groups"]
    return side
