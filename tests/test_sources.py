"""Models from outside the zoo: a user's `file.py:factory` and an ONNX file without PyTorch source,
through the CLI and through the whole parity suite, and every way they can be wrong, named."""
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest

from model.cli import main
from model.profile import DEFAULT_PROFILE
from model.sources import from_factory, from_onnx, parse_axis, resolve
from model.spec import Axis, ModelSpec, SpecError, TensorSpec

ROOT = Path(__file__).resolve().parent.parent

# The README's example, as a user would write it outside the project.
USER_MODEL = '''
import torch
from model.profile import BatchProfile
from model.spec import BATCH, ModelSpec, TensorSpec

def make():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    spec = ModelSpec(name="tiny-mlp", inputs=[TensorSpec("x", "float32", (BATCH, 16))],
                     outputs=[TensorSpec("y", "float32", (BATCH, 4))],
                     profile=BatchProfile(min=1, opts=(8,), max=64), logits=("y",), precisions=("fp32", "fp16"))
    return net, spec

def wrong_outputs():
    net, spec = make()
    return net, spec.__class__(**{**spec.__dict__, "outputs": (TensorSpec("y", "float32", (BATCH, 5)),)})

def not_a_module():
    return "weights.pt", make()[1]

def raises():
    raise RuntimeError("no GPU for the factory")
'''


@pytest.fixture(scope="module")
def user_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("user") / "mine.py"
    path.write_text(textwrap.dedent(USER_MODEL))
    return path


class Encoder:
    """A small module with a named sequence axis, exported to the ONNX file the tests feed."""

    @staticmethod
    def write(path: Path, seq_name: str | None = "seq") -> Path:
        import torch

        class Net(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.embed = torch.nn.Embedding(50, 8)
                self.proj = torch.nn.Linear(8, 3)

            def forward(self, ids):
                return self.proj(torch.relu(self.embed(ids))).mean(1)

        torch.manual_seed(0)
        axes = {"ids": {0: "batch", 1: seq_name}, "out": {0: "batch"}} if seq_name else {"ids": {0: "batch"}, "out": {0: "batch"}}
        torch.onnx.export(Net().eval(), (torch.zeros(2, 5, dtype=torch.int64),), str(path), dynamo=False, opset_version=17,
                          input_names=["ids"], output_names=["out"], dynamic_axes=axes)
        return path


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory) -> Path:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Encoder.write(tmp_path_factory.mktemp("onnx") / "encoder.onnx")


def test_factory_gives_its_spec_with_the_module(user_file):
    spec = from_factory(f"{user_file}:make")
    assert spec.name == "tiny-mlp" and spec.module is not None and spec.reference == "pytorch-cpu"
    assert spec.source == f"{user_file}:make"


def test_onnx_file_spec_is_read_from_the_file(onnx_file):
    spec = from_onnx(str(onnx_file), [Axis("seq", 1, 8, 16)])
    assert [(t.name, t.dtype, t.shape) for t in spec.inputs] == [("ids", "int64", ("batch", "seq"))]
    assert [(t.name, t.dtype, t.shape) for t in spec.outputs] == [("out", "float32", ("batch", 3))]
    assert spec.reference == "onnxruntime-cpu" and spec.module is None


@pytest.mark.parametrize("which", ["factory", "onnx"])
def test_cli_compares_the_users_model(which, user_file, onnx_file, tmp_path, capsys):
    args = ["--model", f"{user_file}:make"] if which == "factory" else ["--onnx", str(onnx_file), "--axis", "seq=1,8,16"]
    assert main(["compare", *args, "--backends", "onnxruntime-cpu,onnxruntime-cpu-fp16", "--batch-sizes", "1,7",
                 "--runs", "2", "--out", str(tmp_path), "--cache-dir", str(tmp_path / "cache")]) == 0
    printed = capsys.readouterr().out
    name, reference = ("tiny-mlp", "pytorch-cpu") if which == "factory" else ("encoder", "onnxruntime-cpu")
    assert f"## {name} (reference: {reference}" in printed and "| onnxruntime-cpu-fp16 |" in printed
    assert (tmp_path / name / "comparison.json").is_file()


def test_the_parity_suite_runs_on_the_users_models(user_file, onnx_file, tmp_path):
    """`pytest --model file.py:factory --onnx file --axis ...`: the same parametrized suite as the
    shipped models, on both of the user's models in one pytest run (the tests parametrized by model,
    selected by the models' names)."""
    args = [f"--model={user_file}:make", f"--onnx={onnx_file}", "--axis=seq=1,8,16", "-k", "tiny-mlp or encoder"]
    done = subprocess.run([sys.executable, "-m", "pytest", "tests/test_parity.py", "tests/test_input_validation.py",
                           "tests/test_export.py", "-v", "-p", "no:cacheprovider", *args, f"--cache-dir={tmp_path}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    tail = done.stdout[-3000:] + done.stderr[-2000:]
    assert done.returncode == 0, tail
    assert " passed" in done.stdout.splitlines()[-1] and "failed" not in done.stdout.splitlines()[-1], tail
    for model in ("tiny-mlp", "encoder"):
        assert any(model in line and "PASSED" in line for line in done.stdout.splitlines()), f"no {model} test ran:\n{tail}"


@pytest.mark.parametrize("factory, message", [
    ("wrong_outputs", "output 'y' is float32 (2, 4) for a batch of 2, the spec declares float32 (2, 5)"),
    ("not_a_module", "make() returned a str where a torch.nn.Module was expected"),
    ("raises", "raises() raised RuntimeError: no GPU for the factory"),
    ("missing", "has no callable 'missing'"),
])
def test_bad_factories_are_named_and_nothing_is_cached(factory, message, user_file, tmp_path, capsys):
    assert main(["compare", "--model", f"{user_file}:{factory}", "--backends", "onnxruntime-cpu",
                 "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message.replace("make()", f"{factory}()") in err or message in err, err
    # Checked and created before any work, the folders hold nothing from the failed attempt.
    assert not (tmp_path / "cache" / "onnx").exists() and not any((tmp_path / "out").rglob("*"))


def test_a_file_that_does_not_import_is_named(tmp_path):
    bad = tmp_path / "broken.py"
    bad.write_text("import not_a_module_anywhere\n")
    with pytest.raises(SpecError, match=rf"{bad} does not import: ModuleNotFoundError: No module named 'not_a_module_anywhere'"):
        resolve(f"{bad}:make")


def test_unknown_model_lists_the_shipped_ones():
    with pytest.raises(SpecError, match="unknown model 'vgg'; shipped models: bert-tiny, resnet18, simplecnn"):
        resolve("vgg")


def test_onnx_dynamic_axis_without_a_range_is_refused(onnx_file):
    with pytest.raises(SpecError, match=r"dynamic axes \['seq'\] need a range: add --axis NAME=MIN,OPT,MAX"):
        from_onnx(str(onnx_file))
    with pytest.raises(SpecError, match=r"--axis \['len'\] name no dynamic axis of the model"):
        from_onnx(str(onnx_file), [Axis("seq", 1, 8, 16), Axis("len", 1, 2, 3)])


def test_onnx_dynamic_axis_without_a_name_is_refused(onnx_file, tmp_path):
    model = onnx.load(str(onnx_file))
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_param = ""
    path = tmp_path / "unnamed.onnx"
    onnx.save(model, str(path))
    with pytest.raises(SpecError, match=r"input 'ids' dim 1 is dynamic without a name"):
        from_onnx(str(path))


def test_onnx_file_without_the_declared_inputs_is_refused(onnx_file, tmp_path):
    from model.artifacts import ModelArtifacts

    spec = ModelSpec(name="declared", inputs=[TensorSpec("tokens", "int64", ("batch", "seq"))],
                     outputs=[TensorSpec("out", "float32", ("batch", 3))], profile=from_onnx(
                         str(onnx_file), [Axis("seq", 1, 8, 16)]).profile, axes=[Axis("seq", 1, 8, 16)], onnx=str(onnx_file))
    with pytest.raises(SpecError, match=r"graph inputs are \['ids'\], expected \['tokens'\]"):
        ModelArtifacts(spec, tmp_path).onnx


@pytest.mark.parametrize("text", ["seq", "seq=1,8", "seq=a,b,c", "=1,2,3x"])
def test_axis_option_is_parsed_or_named(text):
    with pytest.raises(SpecError, match="an axis range is NAME=MIN,OPT,MAX"):
        parse_axis(text)


def test_spec_refuses_a_dynamic_axis_without_a_range():
    with pytest.raises(SpecError, match=r"tensor 'ids' has dynamic axes \['seq'\] without a range"):
        ModelSpec(name="m", inputs=[TensorSpec("ids", "int64", ("batch", "seq"))],
                  outputs=[TensorSpec("out", "float32", ("batch", 3))], profile=DEFAULT_PROFILE, onnx="m.onnx")


def test_sample_inputs_respect_declared_values():
    from model.zoo import get

    feed = get("bert-tiny").sample(4, seq=9)
    assert feed["input_ids"].shape == (4, 9) and feed["input_ids"].max() < 1000 and set(np.unique(feed["attention_mask"])) <= {0, 1}
