"""Raw samples from fresh processes: `pytest benchmarks` run in a checkout, one process at a time.

Each process is a new interpreter with the checkout as cwd (and first on PYTHONPATH), so it imports
that checkout's own code. Sides are interleaved A B B A A B ..., so that a drift of the machine
(clocks, a neighbour job) falls on both sides alike. From pytest-benchmark's JSON (which always
holds every round's time) each benchmark gives one group of samples per process: the per-round GPU
compute times (CUDA events) where the benchmark recorded them in extra_info["gpu_compute_samples_s"],
else the per-round wall times.

With `cpus`, every process is pinned to that set of cores before it starts (sched_setaffinity, as
`taskset -c` does; pyperf pins to isolated cores the same way): otherwise each process lands on
whichever cores the scheduler picks, near the GPU or not, beside an interrupt-heavy core or not,
and that choice, made once per process, is part of the process-to-process spread the gate must
then tolerate.
"""
from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.samples import GPU_SAMPLES_KEY


class SamplingError(RuntimeError):
    pass


# Processes are forked from a server that has imported the libraries (model/gate/forkserver.py)
# when this is on, else started as fresh interpreters. One server per (python, cores).
FORK = {"enabled": False, "preload": None, "proven": False}
_SERVERS: dict = {}


def _server(python: str, cpus):
    from model.gate.forkserver import ForkServer

    key = (python, cpus)
    if key not in _SERVERS:
        preload = FORK["preload"] if FORK["preload"] is not None else ForkServer.DEFAULT_PRELOAD
        _SERVERS[key] = ForkServer(python, cpus, preload)
    return _SERVERS[key]


@atexit.register
def close_servers() -> None:
    while _SERVERS:
        _SERVERS.popitem()[1].close()


@dataclass
class Side:
    """One side of a comparison: a checkout and what its processes measured."""
    label: str
    checkout: Path
    pytest_args: list[str] = field(default_factory=list)
    targets: list[str] = field(default_factory=lambda: ["benchmarks"])  # pytest paths or node ids
    groups: dict[str, list] = field(default_factory=dict)   # benchmark -> one sample list per process
    clocks: dict[str, str] = field(default_factory=dict)    # benchmark -> "gpu" | "wall"
    machine_infos: list[dict] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)      # wall time of each process

    def add(self, result: dict) -> None:
        self.machine_infos.append(result["machine_info"])
        for name, (clock, samples) in samples_by_benchmark(result).items():
            if self.clocks.setdefault(name, clock) != clock:
                raise SamplingError(f"{self.label}: benchmark {name} was timed on the {clock} clock in one process "
                                    f"and on the {self.clocks[name]} clock in another")
            self.groups.setdefault(name, []).append(samples)


def samples_by_benchmark(result: dict) -> dict[str, tuple[str, list[float]]]:
    out = {}
    for bench in result["benchmarks"]:
        gpu = (bench.get("extra_info") or {}).get(GPU_SAMPLES_KEY)
        if gpu:
            out[bench["fullname"]] = ("gpu", [float(s) for s in gpu])
        else:
            data = bench["stats"].get("data")
            if not data:
                raise SamplingError(f"benchmark {bench['fullname']}: the JSON holds no per-round data "
                                    "(was it written with --benchmark-json?)")
            out[bench["fullname"]] = ("wall", [float(s) for s in data])
    return out


def interleaved(sides: list, processes: int) -> list:
    """A B B A A B ... for two sides; for more sides, forward then backward, so each side's mean
    position in time is the same."""
    order = []
    for i in range(processes):
        order.extend(sides if i % 2 == 0 else sides[::-1])
    return order


def parse_cpus(text: str) -> frozenset[int]:
    """taskset's list syntax: "2-5,8" -> {2, 3, 4, 5, 8}; every core must exist here."""
    cpus = set()
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            lo, _, hi = part.partition("-")
            cpus.update(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise ValueError(f"--cpus {text!r}: expected a list such as 2-5,8") from None
    allowed = os.sched_getaffinity(0)
    if not cpus or not cpus <= allowed:
        raise ValueError(f"--cpus {text!r}: expected cores among the {len(allowed)} this process may use "
                         f"({min(allowed)}-{max(allowed)})")
    return frozenset(cpus)


def run_process(side: Side, python: str, json_path: Path, log_path: Path, timeout_s: float = 3600,
                cpus: frozenset[int] | None = None, fresh: bool = False) -> dict:
    """One benchmark process: forked from the server when FORK is on (unless `fresh`), else a new interpreter."""
    # The process runs in the checkout, so the paths it is handed must not depend on the directory.
    json_path, log_path = Path(json_path).resolve(), Path(log_path).resolve()
    json_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [python, "-m", "pytest", *side.targets, "-q", "-p", "no:cacheprovider", "--benchmark-save-data",
           f"--benchmark-json={json_path}", *side.pytest_args]
    # Not a pytest-xdist worker's variables: a benchmark process started from a test run under
    # xdist (tests/test_bench_gate.py with -n) saw PYTEST_XDIST_WORKER and wrote no JSON.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_XDIST_", "PYTEST_CURRENT_TEST"))}
    env["PYTHONPATH"] = os.pathsep.join([str(side.checkout), *filter(None, [os.environ.get("PYTHONPATH")])])
    env.pop("PYTHONSAFEPATH", None)
    if FORK["enabled"] and not fresh:
        server = _server(python, cpus)  # started (and its imports paid) before the clock starts
        start = time.perf_counter()
        returncode = server.run(side.checkout, cmd[3:], env, log_path)
        side.seconds.append(time.perf_counter() - start)
    else:
        with open(log_path, "w") as log:
            start = time.perf_counter()
            pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None  # in the child, before exec
            returncode = subprocess.run(cmd, cwd=side.checkout, env=env, stdout=log, stderr=subprocess.STDOUT,
                                        timeout=timeout_s, preexec_fn=pin).returncode
            side.seconds.append(time.perf_counter() - start)
    if returncode != 0:
        tail = "".join(Path(log_path).read_text(errors="replace").splitlines(keepends=True)[-25:])
        raise SamplingError(f"{side.label}: `{' '.join(cmd)}` in {side.checkout} exited {returncode} "
                            f"(log {log_path}):\n{tail}")
    return json.loads(json_path.read_text())


def run_or_fall_back(side: Side, python: str, json_path: Path, log_path: Path, cpus=None, progress=print) -> dict:
    """run_process, but if the very first forked process fails (say, a library the server imported
    touched CUDA, which a forked child cannot inherit), say so and go on with fresh interpreters."""
    try:
        result = run_process(side, python, json_path, log_path, cpus=cpus)
    except SamplingError as exc:
        if not FORK["enabled"] or FORK["proven"]:
            raise
        FORK["enabled"] = False
        close_servers()
        side.seconds.pop()
        progress(f"  the first forked process failed; fresh interpreters from here on. {exc}")
        return run_process(side, python, json_path, log_path, cpus=cpus)
    FORK["proven"] = FORK["proven"] or FORK["enabled"]
    return result


def measure(sides: list[Side], processes: int, out_dir: Path, python: str = sys.executable, progress=print,
            cpus: frozenset[int] | None = None, warmup: int = 1) -> None:
    """Run `processes` fresh processes per side, interleaved, and add their samples to each side.

    First `warmup` processes of the first side whose samples are dropped: the first process after
    a checkout or an install reads its libraries, data and engines from disk, and it would be A's."""
    for i in range(warmup):
        scratch = Side(sides[0].label, sides[0].checkout, sides[0].pytest_args, sides[0].targets)
        stem = out_dir / f"warmup-{i + 1}"
        run_or_fall_back(scratch, python, stem.with_suffix(".json"), stem.with_suffix(".log"), cpus, progress)
        progress(f"  warm-up process {i + 1} ({sides[0].label}, not counted): {scratch.seconds[-1]:.1f} s")
    counts: dict[str, int] = {}
    order = interleaved(sides, processes)
    for step, side in enumerate(order, 1):
        n = counts[side.label] = counts.get(side.label, 0) + 1
        stem = out_dir / f"{side.label}-{n}"
        side.add(run_or_fall_back(side, python, stem.with_suffix(".json"), stem.with_suffix(".log"), cpus, progress))
        progress(f"  [{step}/{len(order)}] {side.label} process {n}: {side.seconds[-1]:.1f} s")
