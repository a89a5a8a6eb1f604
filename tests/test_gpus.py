"""One GPU per pytest-xdist worker (model/gpus.py), on a fake device list: no GPU needed."""
from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from model import gpus, validate
from tests import background

ROOT = Path(__file__).resolve().parents[1]


def fake_smi(folder: Path, gpu_lines: int, code: int = 0) -> Path:
    """An `nvidia-smi` that lists `gpu_lines` GPUs (each with a MIG line under it, which is no GPU
    of its own to CUDA_VISIBLE_DEVICES's indices) and exits with `code`."""
    folder.mkdir(exist_ok=True)
    lines = "".join(f"GPU {i}: NVIDIA Fake (UUID: GPU-{i:08d})\\n  MIG 1g.10gb Device 0: (UUID: MIG-{i})\\n"
                    for i in range(gpu_lines))
    path = folder / "nvidia-smi"
    path.write_text(f"#!/bin/sh\nprintf '{lines}'\nexit {code}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


@pytest.mark.parametrize("text, expected", [("all", "all"), (" ALL ", "all"), ("0", (0,)), ("1, 0", (1, 0))])
def test_gpu_list_parses(text, expected):
    assert validate.gpu_list(text) == expected


@pytest.mark.parametrize("text, says", [("", "comma-separated GPU indices"), ("0,x", "received '0,x'"),
                                        ("-1", "received '-1'"), ("0,1,0", "naming [0] more than once")])
def test_gpu_list_refuses(text, says):
    with pytest.raises(ValueError, match="expected") as caught:
        validate.gpu_list(text)
    assert says in str(caught.value)


def test_visible_reads_an_inherited_list_as_cuda_does():
    assert gpus.visible({"CUDA_VISIBLE_DEVICES": "2,3"}) == ["2", "3"]
    assert gpus.visible({"CUDA_VISIBLE_DEVICES": "GPU-aa, GPU-bb"}) == ["GPU-aa", "GPU-bb"]
    assert gpus.visible({"CUDA_VISIBLE_DEVICES": "0,-1,2"}) == ["0"]  # CUDA stops at the invalid entry
    assert gpus.visible({"CUDA_VISIBLE_DEVICES": ""}) == []


def test_visible_counts_nvidia_smi_gpus(tmp_path):
    assert gpus.visible({}, smi=str(fake_smi(tmp_path / "two", 2))) == ["0", "1"]
    assert gpus.visible({}, smi=str(fake_smi(tmp_path / "broken", 2, code=9))) is None
    assert gpus.visible({}, smi=str(tmp_path / "absent" / "nvidia-smi")) is None


@pytest.mark.parametrize("choice, workers, devices, expected", [
    (None, 0, ["0", "1"], None),                     # no xdist: as today
    (None, 4, ["0"], None),                          # one GPU: as today
    (None, 4, None, None),                           # no GPU found: as today
    ("all", 1, ["0", "1"], None),                    # one worker: as today
    (None, 3, ["0", "1"], ["0", "1", "0"]),          # round robin
    ("all", 2, ["4", "6"], ["4", "6"]),              # an inherited CUDA_VISIBLE_DEVICES's entries
    ((1, 0), 3, ["0", "1"], ["1", "0", "1"]),
    ((1,), 2, ["4", "6"], ["6", "6"]),               # indices into what this process sees
    ((0, 1), 2, None, ["0", "1"]),                   # no nvidia-smi to check against: as given
    ((1,), 0, ["0", "1"], ["1"]),                    # no xdist: the one process pinned
])
def test_assign(choice, workers, devices, expected):
    assert gpus.assign(choice, workers, devices) == expected


def test_assign_refuses_absent_gpus_and_a_list_for_one_process():
    with pytest.raises(ValueError, match=r"--gpus 0,2: no GPU \[2\] here; expected indices below 2"):
        gpus.assign((0, 2), 2, ["0", "1"])
    with pytest.raises(ValueError, match=r"--gpus 0,1 names 2 GPUs for one process.*\(-n 2\)"):
        gpus.assign((0, 1), 0, ["0", "1"])


def test_benchmarks_refuse_workers_on_several_gpus():
    from benchmarks import conftest as bench

    class Run:  # what benchmarks' pytest_configure reads of a config: its stash
        def __init__(self, plan):
            self.stash = pytest.Stash()
            self.stash[gpus._PLAN] = plan

    bench.pytest_configure(Run(["1", "1"]))  # two workers on one GPU: allowed
    with pytest.raises(pytest.UsageError, match=r"benchmarks run on one GPU; received workers spread over GPUs \['0', '1'\]"):
        bench.pytest_configure(Run(["0", "1"]))


CONFTEST = """
import os
from pathlib import Path

from model import options

pytest_plugins = ("model.gpus",)


def pytest_addoption(parser):
    options.add_to_pytest(parser.getgroup("models"))


def pytest_configure(config):  # runs after the plugin's: what the worker's own set-up sees
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:
        Path(os.environ["SEEN_DIR"], worker).write_text(os.environ.get("CUDA_VISIBLE_DEVICES", "unset"))
"""

TEST = """
import os
from pathlib import Path


def test_device_is_the_one_configured():
    worker = os.environ["PYTEST_XDIST_WORKER"]
    assert os.environ["CUDA_VISIBLE_DEVICES"] == Path(os.environ["SEEN_DIR"], worker).read_text()
"""


def _two_workers_on_two_fake_gpus(config, scratch: Path) -> background.Command:
    (scratch / "pytest.ini").write_text("[pytest]\n")
    (scratch / "conftest.py").write_text(CONFTEST)
    (scratch / "test_tiny.py").write_text(TEST)
    (scratch / "seen").mkdir()
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    env.update(PATH=f"{fake_smi(scratch / 'bin', 2).parent}{os.pathsep}{env['PATH']}", SEEN_DIR=str(scratch / "seen"),
               PYTHONPATH=str(ROOT))
    return background.Command([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "2", "--gpus", "1,0",
                               "test_tiny.py"], str(scratch), env)


@background.register(_two_workers_on_two_fake_gpus)
def test_each_worker_gets_its_gpu_before_its_setup(request):
    """A real `pytest -n 2 --gpus 1,0` over a two-GPU fake nvidia-smi: workers get 1 and 0 in their
    environment by the time any conftest's pytest_configure runs, and the run says so (round robin
    over more workers than GPUs: test_assign)."""
    run, scratch = background.result(request)
    seen = scratch / "seen"
    assert run.returncode == 0, run.stdout + run.stderr
    assert {p.name: p.read_text() for p in seen.iterdir()} == {"gw0": "1", "gw1": "0"}
    assert "GPU per xdist worker (CUDA_VISIBLE_DEVICES): gw0=1, gw1=0" in run.stdout
    for worker, device in (("gw0", 1), ("gw1", 0)):
        assert f"{worker}: CUDA_VISIBLE_DEVICES={device}" in run.stdout, run.stdout
