"""Option and location checks that the CLI's own tests cannot reach from every machine: a folder
that refuses files (root writes into a mode-0500 folder, so only a refusing filesystem shows it)
and option values that parse to nothing."""
import argparse

import pytest

from model import options, validate


def test_a_folder_that_takes_no_files_is_refused(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(validate.tempfile, "TemporaryFile", refuse)
    with pytest.raises(ValueError, match=r"^--out .*: cannot write files in it \(Permission denied\); "
                                         r"expected a writable folder$"):
        validate.writable_folder(tmp_path / "out", "--out")


@pytest.mark.parametrize("text", [",", " , ,", ""])
def test_a_name_list_of_nothing_is_refused(text):
    with pytest.raises(argparse.ArgumentTypeError, match="expected one or more comma-separated names"):
        options.name_list(text)


def test_axis_ranges_without_an_onnx_model_are_refused():
    from model.sources import parse_axis

    with pytest.raises(ValueError, match=r"^--axis gives ranges for --onnx models; no --onnx was given$"):
        options.model_specs(["simplecnn"], None, [parse_axis("seq=1,8,16")], default=[])
