"""Errors before work, results kept: every model of a run is checked before any is measured (a
broken factory is one usage error), two models never share a name, and a backend or model that
fails mid-run leaves the other rows, the table and the files, with a non-zero exit status."""
import contextlib
import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from model.cli import main
from tests import background

ROOT = Path(__file__).resolve().parent.parent

FACTORY = """
import torch
from model.profile import BatchProfile
from model.spec import BATCH, ModelSpec, TensorSpec

class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(4, {width})

    def forward(self, x):
        {body}

def factory():
    return Net().eval(), ModelSpec("{name}", [TensorSpec("x", "float32", (BATCH, 4))],
                                   [TensorSpec("y", "float32", (BATCH, {declared}))], BatchProfile(1, (2,), 8))
"""


def factory_file(folder: Path, file: str, name: str = "tiny", width: int = 3, declared: int = 3,
                 body: str = "return self.fc(x)") -> str:
    path = folder / file
    path.write_text(textwrap.dedent(FACTORY).format(name=name, width=width, declared=declared, body=body))
    return f"{path}:factory"


def compare(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["compare", *argv])
    return code, out.getvalue(), err.getvalue()


def test_a_broken_factory_fails_the_cli_before_any_model_is_measured(tmp_path):
    broken = factory_file(tmp_path, "broken.py", width=5, declared=3)
    code, out, err = compare("--model", f"simplecnn,{broken}", "--out", str(tmp_path / "out"),
                             "--cache-dir", str(tmp_path / "cache"))
    assert code == 2
    assert f"{broken}: output 'y' is float32 (2, 5) for a batch of 2, the spec declares float32 (2, 3)" in err
    assert "[compare]" not in err and not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


def test_a_factory_whose_forward_raises_is_named_before_any_work(tmp_path):
    broken = factory_file(tmp_path, "raises.py", body="return self.fc(x.reshape(-1, 3))")
    code, _, err = compare("--model", broken, "--cache-dir", str(tmp_path / "cache"))
    assert code == 2 and f"--model {broken}: the module raised RuntimeError" in err
    assert "on a sample batch of the spec's inputs {'x': (2, 4)}" in err


def _pytest_with_a_broken_factory(config, scratch: Path) -> background.Command:
    broken = factory_file(scratch, "broken.py", width=5, declared=3)
    return background.Command([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--model={broken}",
                               "tests/test_compare.py"], str(ROOT))


@background.register(_pytest_with_a_broken_factory)
def test_a_broken_factory_is_one_pytest_usage_error(request):
    done, _ = background.result(request)
    assert done.returncode == 4, done.stdout + done.stderr  # pytest's usage error, before collection
    assert done.stderr.count("ERROR:") == 1 and "the spec declares float32 (2, 3)" in done.stderr
    assert "passed" not in done.stdout and "error" not in done.stdout


def test_two_models_of_one_name_are_refused_naming_both(tmp_path):
    first, second = factory_file(tmp_path, "a.py", name="same"), factory_file(tmp_path, "b.py", name="same")
    code, _, err = compare("--model", f"{first},{second}", "--cache-dir", str(tmp_path / "cache"))
    assert code == 2 and f"two models are named 'same': {first} and {second}" in err


def test_two_models_of_one_name_are_a_pytest_usage_error(tmp_path):
    from model import options

    first, second = factory_file(tmp_path, "a.py", name="same"), factory_file(tmp_path, "b.py", name="same")
    given = {"--model": [first, second], "--onnx": None, "--axis": None, "--cache-dir": tmp_path,
             "--profile": None, "--batch-sizes": None}
    with pytest.raises(ValueError, match=f"two models are named 'same': {first} and {second}"):
        options.run_settings(given.get, default=[])


def test_a_backend_failing_mid_run_leaves_the_other_rows_table_and_files(tmp_path):
    """The export of this model fails (neither exporter has singular values): PyTorch's row is
    measured, ONNX Runtime's says why it failed, the table and JSON are written, the exit status is 1."""
    svd = factory_file(tmp_path, "svd.py", name="svd", width=4, declared=2,
                       body="return torch.linalg.svdvals(self.fc(x).reshape(x.shape[0], 2, 2))")
    out = tmp_path / "out"
    code, printed, err = compare("--model", svd, "--backends", "onnxruntime-cpu", "--batch-sizes", "1", "--runs", "2",
                                 "--out", str(out), "--cache-dir", str(tmp_path / "cache"))
    assert code == 1
    rows = {r["backend"]: r for r in json.loads((out / "svd" / "comparison.json").read_text())["results"]}
    assert rows["pytorch-cpu"]["available"] and rows["pytorch-cpu"]["latency_ms"]
    assert rows["onnxruntime-cpu"]["failed"] and "aten::linalg_svdvals" in rows["onnxruntime-cpu"]["error"]
    assert "| onnxruntime-cpu | fp32 | failed |" in (out / "svd" / "comparison.md").read_text()
    assert "| pytorch-cpu |" in printed and "error: failed: svd: onnxruntime-cpu" in err


def test_the_reference_row_reads_as_agreeing_with_itself(tmp_path, onnx_path, model_spec):
    """`--onnx FILE`: ONNX Runtime is the reference; its row's error is 0, not None (a None there
    raised TypeError in anything comparing the figure, test_cli's table test included)."""
    if model_spec.onnx is None and model_spec.name != "simplecnn":
        pytest.skip("one ONNX file is enough: SimpleCNN's export, or the run's own --onnx file")
    axes = [f"--axis={a.name}={a.min},{a.opt},{a.max}" for a in model_spec.axes]
    code, _, _ = compare("--onnx", str(onnx_path), *axes, "--backends", "onnxruntime-cpu", "--batch-sizes", "1",
                         "--runs", "2", "--out", str(tmp_path), "--cache-dir", str(tmp_path / "cache"))
    assert code == 0
    summary = json.loads(next(tmp_path.glob("*/comparison.json")).read_text())
    (row,) = summary["results"]
    assert summary["reference"] == row["backend"] == "onnxruntime-cpu" and row["max_abs_error"] == 0.0


CRASHING_RUN = """
import os, signal, sys
from dataclasses import replace
from model.backends.registry import BACKENDS
from model.cli import main

def crash(arts):  # what a segfault in a runtime, or the kernel's OOM killer, does to the process
    os.kill(os.getpid(), signal.SIGKILL)

BACKENDS["crash"] = replace(BACKENDS["onnxruntime-cpu"], name="crash", make=crash)
sys.exit(main(["compare", "--model", sys.argv[1], "--backends", "onnxruntime-cpu,crash", "--batch-sizes", "1",
               "--runs", "2", "--out", sys.argv[2], "--cache-dir", sys.argv[3]]))
"""


def test_a_process_killed_mid_run_leaves_the_rows_measured_before_it(tmp_path):
    """No `except` catches a native crash: the rows measured so far are on disk before each backend
    runs, and the files say where the run stopped."""
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-c", CRASHING_RUN, factory_file(tmp_path, "tiny.py"), str(out),
                           str(tmp_path / "cache")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == -9, done.stderr[-2000:]
    summary = json.loads((out / "tiny" / "comparison.json").read_text())
    assert summary["stopped_at"] == "crash"
    assert [r["backend"] for r in summary["results"]] == ["pytorch-cpu", "onnxruntime-cpu"]
    assert all(r["available"] and r["latency_ms"] for r in summary["results"])
    md = (out / "tiny" / "comparison.md").read_text()
    assert "**Incomplete:** the run stopped while measuring crash" in md and "| onnxruntime-cpu | fp32 |" in md
