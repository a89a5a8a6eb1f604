"""`python -m model compare`: the main job's table, files and errors."""
import contextlib
import io
import json
import os
from pathlib import Path

import pytest

from model.cli import main


@pytest.fixture(scope="session")
def run(tmp_path_factory, trained, cache_dir):
    """`compare` of SimpleCNN: (exit code, its output folder, what it printed). Session-scoped: the
    suite's items are grouped by model across files, which split this module's tests and made a
    module-scoped run three runs (about 9 s each here)."""
    out = tmp_path_factory.mktemp("compare")
    args = ["compare", "--backends", "onnxruntime-cpu,tensorrt-fp32", "--batch-sizes", "1,7",
            "--runs", "3", "--out", str(out), "--cache-dir", str(cache_dir)]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(args)
    return code, out / "simplecnn", printed.getvalue()


def test_exit_code_and_files(run):
    code, out, _ = run
    assert code == 0
    assert (out / "comparison.json").exists() and (out / "comparison.md").exists()


def test_every_model_prints_its_table(model_name, model_artifacts, cache_dir, tmp_path, capsys, request):
    """`compare --model NAME` for each model of the run: its reference and ONNX Runtime side by side
    (SimpleCNN's run is the `run` fixture's, which the other tests here read too)."""
    spec = model_artifacts.spec
    if model_name == "simplecnn" and not spec.onnx:
        code, out, printed = request.getfixturevalue("run")
    else:
        which = (["--onnx", spec.onnx, *[f"--axis={a.name}={a.min},{a.opt},{a.max}" for a in spec.axes]] if spec.onnx
                 else ["--model", spec.source if ".py:" in spec.source else model_name])
        code = main(["compare", *which, "--backends", "onnxruntime-cpu", "--batch-sizes", "1,7", "--runs", "2",
                     "--out", str(tmp_path), "--cache-dir", str(cache_dir)])
        out, printed = tmp_path / model_name, capsys.readouterr().out
    assert code == 0
    assert f"## {model_name} (reference: {model_artifacts.reference}" in printed
    assert f"| {model_artifacts.reference} |" in printed and "| onnxruntime-cpu |" in printed
    summary = json.loads((out / "comparison.json").read_text())
    rows = {r["backend"]: r for r in summary["results"]}
    assert rows["onnxruntime-cpu"]["available"] and rows["onnxruntime-cpu"]["max_abs_error"] < 1e-3


def test_json_holds_measured_figures_for_every_available_backend(run):
    summary = json.loads((run[1] / "comparison.json").read_text())
    results = {r["backend"]: r for r in summary["results"]}
    assert list(results) == ["pytorch-cpu", "onnxruntime-cpu", "tensorrt-fp32"]
    for r in results.values():
        if r["available"]:
            assert 0.0 <= r["accuracy"] <= 1.0 and r["file_mb"] > 0
            assert set(r["latency_ms"]) == {"1", "7"} and all(v["mean"] > 0 for v in r["latency_ms"].values())
        else:
            assert r["reason"], f"{r['backend']} is unavailable without a reason"
    assert results["pytorch-cpu"]["available"] and results["onnxruntime-cpu"]["available"]
    assert results["onnxruntime-cpu"]["accuracy"] == results["pytorch-cpu"]["accuracy"]
    assert results["onnxruntime-cpu"]["top1_agreement"] == 1.0


def test_markdown_table_lists_every_backend(run):
    md = (run[1] / "comparison.md").read_text()
    for name in ("pytorch-cpu", "onnxruntime-cpu", "tensorrt-fp32"):
        assert f"| {name} |" in md
    assert "ms/batch @1" in md and "File (MB)" in md


@pytest.mark.parametrize("argv, message", [
    (["compare", "--batch-sizes", "0"], "argument --batch-sizes: batch sizes must be positive integers (at least one)"),
    (["compare", "--batch-sizes", "a,b"], "argument --batch-sizes: expected comma-separated integers like 1,32,256"),
    (["compare", "--batch-sizes", ","], "argument --batch-sizes: batch sizes must be positive integers (at least one)"),
    (["compare", "--axis", "seq=1,64"], "argument --axis: an axis range is NAME=MIN,OPT,MAX"),
    (["compare", "--backends", "tensorflow"], "unknown backends"),
    (["compare", "--profile", "1,32"], "a batch profile is MIN,OPT,MAX"),
    (["compare", "--profile", "64,32,4096"], "needs 1 <= min <= each distinct opt <= max"),
    (["compare", "--profile", "1,32/x,4096"], "OPT one batch or several joined by '/'"),
    (["compare", "--runs", "0"], "expected a positive integer, received 0"),
    (["compare", "--epochs", "0"], "expected a positive integer, received 0"),
    (["compare", "--workspace-mb", "-1"], "expected a positive integer, received -1"),
    (["compare", "--runs", "many"], "expected a positive integer, received 'many'"),
])
def test_bad_arguments_exit_with_a_message(capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_missing_cifar_folder_is_an_error_not_a_crash(tmp_path, capsys):
    pytest.importorskip("torchvision", reason="CIFAR-100 loading needs torchvision")
    assert main(["compare", "--data", str(tmp_path / "none"), "--cache-dir", str(tmp_path)]) == 2
    assert "CIFAR-100 not found" in capsys.readouterr().err


def test_batch_outside_the_profile_is_refused_before_any_work(capsys, tmp_path):
    assert main(["compare", "--profile", "1,8,16", "--batch-sizes", "1,32", "--cache-dir", str(tmp_path)]) == 2
    assert "--batch-sizes [32] lie outside simplecnn's profile (min=1 opt=8 max=16)" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing trained or exported


@pytest.mark.parametrize("argv, message", [
    (["--model", "resnet-50"], "unknown model 'resnet-50'; shipped models: bert-tiny, "),
    (["--model", "missing.py:make"], "--model missing.py:make: missing.py is not a file"),
    (["--onnx", "missing.onnx"], "--onnx missing.onnx: no such file"),
    (["--axis", "seq=1,8,16"], "--axis gives ranges for --onnx models; no --onnx was given"),
])
def test_bad_model_options_name_what_was_wrong(capsys, tmp_path, argv, message):
    assert main(["compare", *argv, "--cache-dir", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_profile_reaches_every_runner(trained, cache_dir):
    """A narrower profile is what each runner declares, so feeds past it fail the same way everywhere."""
    from model.artifacts import ModelArtifacts
    from model.backends.registry import BACKENDS
    from model.profile import BatchProfile
    from model.zoo import get

    arts = ModelArtifacts(get("simplecnn"), cache_dir, profile=BatchProfile(2, (8,), 16))
    for name in ("pytorch-cpu", "onnxruntime-cpu"):
        with BACKENDS[name].runner(arts) as runner:
            meta = runner.input_metadata()["input"]
            assert (meta.min_batch, meta.max_batch) == (2, 16)


def test_evaluation_chunks_stay_inside_the_profile(model_artifacts, model_spec):
    """The evaluation pass feeds chunks the runner accepts: at least the profile's min (a short last
    chunk is topped up and the extra outputs dropped), at most its max."""
    import numpy as np

    from model.artifacts import ModelArtifacts
    from model.backends.registry import BACKENDS
    from model.evaluate import run_chunked
    from model.profile import BatchProfile

    feed = model_spec.sample(20, seed=3)  # chunks of 16, then 4 < min 7
    narrow = ModelArtifacts(model_spec, model_artifacts.cache_dir, profile=BatchProfile(7, (8,), 16))
    narrow._built = model_artifacts._built
    with BACKENDS["onnxruntime-cpu"].runner(narrow) as runner:
        got = run_chunked(runner, feed, 500)
    with BACKENDS["onnxruntime-cpu"].runner(model_artifacts) as runner:
        expected = run_chunked(runner, feed, 500)
    for name in model_spec.output_names:
        assert got[name].shape[0] == 20
        np.testing.assert_allclose(got[name], expected[name], atol=1e-5, rtol=1e-4)


# -- locations, inputs and results: refused before any work, named in the error, never lost -------

@pytest.fixture
def no_training(monkeypatch):
    from model import training

    monkeypatch.setattr(training, "train", lambda *a, **k: pytest.fail("trained before checking the locations"))


def test_out_under_a_file_is_refused_before_training(tmp_path, capsys, no_training):
    (tmp_path / "a-file").write_text("")
    code = main(["compare", "--out", str(tmp_path / "a-file" / "out"), "--cache-dir", str(tmp_path / "cache")])
    assert code == 2 and f"--out {tmp_path / 'a-file' / 'out'}: cannot create the folder" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a mode-0500 folder; the file-path case above covers root")
def test_read_only_out_is_refused_before_training(tmp_path, capsys, no_training):
    read_only = tmp_path / "ro"
    read_only.mkdir(mode=0o500)
    code = main(["compare", "--out", str(read_only), "--cache-dir", str(tmp_path / "cache")])
    assert code == 2 and f"--out {read_only}: cannot write files in it" in capsys.readouterr().err


def test_cache_dir_naming_a_file_is_refused_before_training(tmp_path, capsys, no_training):
    (tmp_path / "cache").write_text("")
    code = main(["compare", "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")])
    assert code == 2 and f"--cache-dir {tmp_path / 'cache'}: is a file, expected a folder" in capsys.readouterr().err


def test_results_are_printed_before_a_failing_write(tmp_path, capsys, monkeypatch, dataset, trained, cache_dir):
    from dataclasses import replace

    from model import data, report
    from model.data import Split

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device", str(tmp_path / "out" / "comparison.json"))

    monkeypatch.setattr(report, "write", full_disk)
    # The session's dataset with a short held-out split: the same cached model, measured quickly.
    short = replace(dataset, holdout=Split(dataset.holdout.x[:100], dataset.holdout.y[:100]))
    monkeypatch.setattr(data, "load", lambda *a, **k: short)
    code = main(["compare", "--backends", "pytorch-cpu", "--batch-sizes", "1", "--runs", "1",
                 "--out", str(tmp_path / "out"), "--cache-dir", str(cache_dir)])
    out, err = capsys.readouterr()
    assert code == 2 and "No space left on device" in err
    assert "| pytorch-cpu | fp32 |" in out and ">>> Accuracy:" in out  # on screen, not lost


@pytest.mark.parametrize("content, message", [
    (None, "cannot read it (No such file or directory)"),
    ("garbage", "not JSON (Expecting value: line 1 column 1 (char 0))"),
    ("[1, 2]", "holds a JSON list"),
    ("{}", "is not a pytest-benchmark JSON file"),
])
def test_report_names_the_bad_input_file(tmp_path, capsys, content, message):
    path = tmp_path / "garbage.json"
    if content is not None:
        path.write_text(content)
    assert main(["report", str(path), "--out", str(tmp_path / "report")]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and message in err


def test_pytest_options_are_checked_like_the_cli():
    """`pytest --batch-sizes ,` once passed green with every per-batch test skipped: now a bad
    option stops pytest with a usage error naming it, as the CLI does (one real run; the checks
    themselves are options.run_settings, below)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           "--model=vgg", "tests/test_compare.py"],
                          capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 4, done.stdout + done.stderr  # pytest's usage error
    assert "unknown model 'vgg'; shipped models:" in done.stderr


@pytest.mark.parametrize("argv, message", [
    (["--batch-sizes=,"], "--batch-sizes: batch sizes must be positive integers (at least one), received ','"),
    (["--batch-sizes=abc"], "--batch-sizes: expected comma-separated integers like 1,32,256, received 'abc'"),
    (["--batch-sizes=1,64", "--profile=1,8/32,32"], "--batch-sizes [64] lie outside simplecnn's profile (min=1 opt=8/32 max=32)"),
    (["--profile=1,32"], "--profile: a batch profile is MIN,OPT,MAX"),
    ([f"--cache-dir={__file__}"], f"--cache-dir {__file__}: is a file, expected a folder"),
    (["--model=vgg"], "unknown model 'vgg'; shipped models:"),
])
def test_each_bad_pytest_option_is_named(argv, message):
    import argparse

    with pytest.raises((argparse.ArgumentError, ValueError)) as info:
        _pytest_settings(argv)
    assert message in str(info.value)


def _pytest_settings(argv):
    """The pytest options' declarations and checks, run as pytest_configure runs them."""
    import argparse

    from model import options

    parser = argparse.ArgumentParser(exit_on_error=False)
    group = parser.add_argument_group("models")
    group.addoption = group.add_argument  # pytest's group API over argparse's, as pytest itself builds it
    options.add_to_pytest(group)
    parsed = vars(parser.parse_args(["--model=simplecnn", *argv]))
    return options.run_settings(lambda flag: parsed[flag.lstrip("-").replace("-", "_")], default=["simplecnn"])


def test_a_bad_build_slot_count_stops_the_cli_and_pytest_before_any_work(monkeypatch, tmp_path, capsys):
    """$MODEL_TRT_BUILDS_PER_GPU is checked at the start: a main job would otherwise train and export
    for minutes before its first TensorRT build read it."""
    from model.backends.tensorrt import build_slots

    monkeypatch.setenv(build_slots.ENV, "many")
    assert main(["compare", "--model", "simplecnn", "--cache-dir", str(tmp_path)]) == 2
    assert f"{build_slots.ENV}='many'" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
    with pytest.raises(ValueError, match=f"{build_slots.ENV}='many'"):
        _pytest_settings([])
