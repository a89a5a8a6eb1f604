"""`python -m model compare`: the main job's table, files and errors."""
import json
import os
from pathlib import Path

import pytest

from model.cli import main


@pytest.fixture(scope="module")
def run(tmp_path_factory, trained, cache_dir):
    out = tmp_path_factory.mktemp("compare")
    args = ["compare", "--backends", "onnxruntime-cpu,tensorrt-fp32", "--batch-sizes", "1,7",
            "--runs", "3", "--out", str(out), "--cache-dir", str(cache_dir)]
    return main(args), out


def test_exit_code_and_files(run):
    code, out = run
    assert code == 0
    assert (out / "comparison.json").exists() and (out / "comparison.md").exists()


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
    (["compare", "--batch-sizes", "0"], "batch sizes must be positive integers"),
    (["compare", "--batch-sizes", "a,b"], "comma-separated integers"),
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
    assert main(["compare", "--data", str(tmp_path / "none"), "--cache-dir", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "CIFAR-100 not found" in capsys.readouterr().err


def test_batch_outside_the_profile_is_refused_before_any_work(capsys, tmp_path):
    assert main(["compare", "--profile", "1,8,16", "--batch-sizes", "1,32", "--cache-dir", str(tmp_path)]) == 2
    assert "batch sizes [32] lie outside the profile (min=1 opt=8 max=16)" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing trained or exported


def test_profile_reaches_every_runner(trained, dataset, tmp_path):
    """A narrower profile is what each runner declares, so feeds past it fail the same way everywhere."""
    from model.backends import BACKENDS, ModelArtifacts
    from model.profile import BatchProfile

    arts = ModelArtifacts(trained, tmp_path, profile=BatchProfile(2, (8,), 16), calib_images=dataset.calib.x)
    for name in ("pytorch-cpu", "onnxruntime-cpu"):
        with BACKENDS[name].make(arts) as runner:
            meta = runner.input_metadata()["input"]
            assert (meta.min_batch, meta.max_batch) == (2, 16)


def test_evaluation_chunks_stay_inside_the_profile(trained, dataset, tmp_path):
    """The accuracy pass feeds chunks the runner accepts: at least the profile's min (a short last
    chunk is topped up and the extra predictions dropped), at most its max."""
    from model.backends import BACKENDS, ModelArtifacts
    from model.data import Split
    from model.evaluate import predict
    from model.profile import BatchProfile

    split = Split(dataset.holdout.x[:20], dataset.holdout.y[:20])  # chunks of 16, then 4 < min 7
    narrow = ModelArtifacts(trained, tmp_path, profile=BatchProfile(7, (8,), 16), calib_images=dataset.calib.x)
    wide = ModelArtifacts(trained, tmp_path, calib_images=dataset.calib.x)
    with BACKENDS["onnxruntime-cpu"].make(narrow) as runner:
        got = predict(runner, split, 500)
    with BACKENDS["onnxruntime-cpu"].make(wide) as runner:
        expected = predict(runner, split, 500)
    assert got.shape == (20,) and (got == expected).all()


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


def test_pytest_refuses_empty_batch_sizes_naming_the_option():
    """`pytest --batch-sizes ,` once passed green with every per-batch test skipped."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           "--batch-sizes=,", "tests/test_data.py"],
                          capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 4  # pytest's usage error
    assert "--batch-sizes: batch sizes must be positive integers (at least one), received ','" in done.stderr


@pytest.mark.parametrize("options, message", [
    ({"--batch-sizes": "abc"}, "--batch-sizes: expected comma-separated integers like 1,32,256, received 'abc'"),
    ({"--batch-sizes": "0"}, "--batch-sizes: batch sizes must be positive integers (at least one), received '0'"),
    ({"--batch-sizes": "1,64"}, "--batch-sizes: batch sizes [64] lie outside the profile (min=1 opt=8/32 max=32)"),
    ({"--profile": "1,32"}, "--profile: a batch profile is MIN,OPT,MAX"),
    ({"--cache-dir": __file__}, f"--cache-dir {__file__}: is a file, expected a folder"),
])
def test_pytest_options_are_checked_like_the_cli(options, message):
    """The suite's own pytest_configure, on options as pytest would hand them over."""
    import sys

    conftest = sys.modules["conftest"]
    given = {"--profile": "1,8/32,32", "--batch-sizes": None, "--cache-dir": str(Path(__file__).parent), **options}

    class Config:
        def getoption(self, name):
            return given[name]

    with pytest.raises(pytest.UsageError) as info:
        conftest.pytest_configure(Config())
    assert message in str(info.value)
