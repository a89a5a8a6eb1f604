"""One GPU per pytest-xdist worker (`pytest tests -n N`, `--gpus all|0,1,...`), as a pytest plugin.

The controller lists the GPUs without initialising CUDA in itself (an inherited CUDA_VISIBLE_DEVICES,
else `nvidia-smi -L`), gives worker gwK the K-th device round robin through xdist's `workerinput`,
and each worker sets CUDA_VISIBLE_DEVICES in its first `pytest_configure`, before the suite imports
anything that could initialise CUDA: CUDA reads the variable once, at its initialisation, so a value
set later would leave every worker on device 0 while the report said otherwise. Without xdist, or
with fewer than two GPUs, nothing changes unless `--gpus` names one device. Engine plans are keyed
to the GPU's name and compute capability (model/backends/tensorrt/build.py), so workers on GPUs of
one model share each plan and a mixed host builds one per model.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from model.validate import ALL_GPUS as ALL

_ENV = "CUDA_VISIBLE_DEVICES"
_INPUT = "gpus_device"  # the key of xdist's workerinput / workeroutput this plugin uses
_PLAN = pytest.StashKey[list]()
_SEEN = pytest.StashKey[dict]()
_NODES = pytest.StashKey[list]()


def visible(environ=os.environ, smi: str = "nvidia-smi") -> list[str] | None:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries, found without initialising
    CUDA: an inherited CUDA_VISIBLE_DEVICES's entries up to its first empty or negative one (where
    CUDA stops reading it), else one index per `nvidia-smi -L` GPU line; None when neither tells."""
    if _ENV in environ:
        entries = []
        for entry in (e.strip() for e in environ[_ENV].split(",")):
            if not entry or entry.startswith("-"):
                break
            entries.append(entry)
        return entries
    path = shutil.which(smi)
    if path is None:
        return None
    try:
        listing = subprocess.run([path, "-L"], capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):  # a driver that does not answer: no GPU to spread over
        return None
    return [str(i) for i in range(sum(line.startswith("GPU ") for line in listing.splitlines()))]


def assign(choice: str | tuple[int, ...] | None, workers: int, devices: list[str] | None) -> list[str] | None:
    """CUDA_VISIBLE_DEVICES per worker (gw0, gw1, ...; the one process when `workers` is 0, no
    xdist), round robin over the chosen devices; None leaves every process as it is. `choice`:
    --gpus as model.validate.gpu_list parsed it (None: not given, which is 'all')."""
    if choice is None or choice == ALL:
        if workers < 2 or not devices or len(devices) < 2:
            return None
        chosen = list(devices)
    else:
        if devices is not None:
            absent = [i for i in choice if i >= len(devices)]
            if absent:
                raise ValueError(f"--gpus {','.join(map(str, choice))}: no GPU {absent} here; expected indices below "
                                 f"{len(devices)} (this process sees {len(devices)} GPU(s))")
        chosen = [devices[i] if devices is not None else str(i) for i in choice]
        if workers == 0 and len(chosen) > 1:
            raise ValueError(f"--gpus {','.join(map(str, choice))} names {len(chosen)} GPUs for one process; "
                             f"expected one GPU, or pytest-xdist workers to spread over them (-n {len(chosen)})")
    return [chosen[k % len(chosen)] for k in range(max(workers, 1))]


def assigned(config) -> list[str] | None:
    """This run's assignment (per worker), None where every process stays as it is."""
    return config.stash.get(_PLAN, None)


def _workers(config) -> int:
    if config.getoption("dist", "no") == "no":
        return 0
    from xdist.workermanage import parse_tx_spec_config

    return len(parse_tx_spec_config(config))


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:  # an xdist worker: take the device the controller gave it
        if _INPUT in workerinput:
            torch = sys.modules.get("torch")
            if torch is not None and torch.cuda.is_initialized():
                raise pytest.UsageError(f"{workerinput['workerid']}: CUDA was initialised before its GPU "
                                        f"({workerinput[_INPUT]}) could be set; CUDA_VISIBLE_DEVICES would be ignored")
            os.environ[_ENV] = workerinput[_INPUT]
        return
    choice, workers = config.getoption("--gpus"), _workers(config)
    if choice in (None, ALL) and workers < 2:  # nothing to spread: not even nvidia-smi is asked
        return
    try:
        plan = assign(choice, workers, visible())
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    if plan is None:
        return
    config.stash[_PLAN], config.stash[_SEEN], config.stash[_NODES] = plan, {}, []
    if workers == 0:
        os.environ[_ENV] = plan[0]


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    plan = assigned(node.config)
    if plan:
        workerid = node.workerinput["workerid"]
        nodes = node.config.stash[_NODES]  # ids given with --tx id=NAME are not gwK: number them as they come
        if workerid not in nodes:
            nodes.append(workerid)
        index = int(workerid[2:]) if workerid.startswith("gw") and workerid[2:].isdigit() else nodes.index(workerid)
        node.workerinput[_INPUT] = plan[index % len(plan)]


def pytest_report_header(config):
    plan = assigned(config)
    if plan is None or hasattr(config, "workerinput"):
        return None
    if _workers(config) == 0:
        return f"GPU: {_ENV}={plan[0]} (--gpus)"
    return "GPU per xdist worker (CUDA_VISIBLE_DEVICES): " + ", ".join(f"gw{k}={d}" for k, d in enumerate(plan))


def pytest_sessionfinish(session):
    """A worker tells the controller which GPU it ran on, by name where it has one (at the end,
    when its tests have initialised CUDA already)."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is None or _INPUT not in session.config.workerinput:
        return
    from model import capabilities

    name = ""
    if capabilities.gpu() is None:
        from model.backends.tensorrt import cuda as cuda_rt

        identity = cuda_rt.device_identity()
        name = f" ({identity['gpu']}, sm {identity['compute_capability']})"
    workeroutput[_INPUT] = f"{_ENV}={os.environ.get(_ENV)}{name}"


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    seen = node.config.stash.get(_SEEN, None)
    if seen is not None and _INPUT in getattr(node, "workeroutput", {}):
        seen[node.workerinput["workerid"]] = node.workeroutput[_INPUT]


def pytest_terminal_summary(terminalreporter, config):
    seen = config.stash.get(_SEEN, None)
    if seen:
        terminalreporter.write_sep("-", "GPU per xdist worker")
        for worker in sorted(seen, key=lambda w: (len(w), w)):
            terminalreporter.write_line(f"{worker}: {seen[worker]}")
