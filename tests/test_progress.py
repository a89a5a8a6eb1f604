"""Progress written to a log (stderr not a terminal) is whole lines, never carriage-return frames."""
import contextlib
import inspect
import io
import types

import pytest
from tqdm.auto import tqdm

from model import data, progress, training

TINY_DATA = data.SyntheticSpec(train_per_class=1, calib_per_class=1, holdout_per_class=1)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_training_progress_in_a_log_is_lines_not_frames():
    log = io.StringIO()
    with contextlib.redirect_stderr(log):
        training.train(data.synthetic(TINY_DATA), training.TrainConfig(epochs=2, batch_size=10), progress=True)
    text = log.getvalue()
    assert "\r" not in text, f"carriage returns in a non-terminal stderr: {text[:200]!r}"
    lines = [line for line in text.splitlines() if line.startswith("train SimpleCNN:")]
    assert lines, f"no progress line in {text!r}"
    # 100 images, batch 10, 2 epochs: 20 steps, a line per 10% and the last at 100%.
    assert lines[-1].startswith("train SimpleCNN: 20/20 steps (100%)"), lines[-1]
    assert "epoch=2" in lines[-1] and "loss=" in lines[-1], lines[-1]
    assert len(lines) == 10, lines


def test_a_terminal_keeps_tqdm_bar():
    term = Terminal()
    bar = progress.progress(5, "job", file=term)
    for _ in range(5):
        bar.update()
    bar.close()
    assert "\r" in term.getvalue() and "5/5" in term.getvalue()


def test_disabled_progress_writes_nothing():
    log = io.StringIO()
    bar = progress.progress(5, "job", enabled=False, file=log)
    bar.update(5)
    bar.close()
    assert log.getvalue() == ""


def test_lines_every_fraction_and_every_interval(monkeypatch):
    clock = iter([0.0, 1.0, 2.0, 30.0, 31.0, 32.0, 33.0])
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    log = io.StringIO()
    bar = progress.LineProgress(1000, "job", "item", log, every_s=10.0, every_fraction=0.5)  # start: t=0
    bar.update(1)    # t=1: 1 item, 1 s: nothing
    bar.update(1)    # t=2: nothing
    bar.update(1)    # t=30: 28 s since the last line: a line
    bar.update(500)  # t=31: 500 items (half the total) since it: a line
    bar.update(1)    # t=32: nothing
    bar.close()      # t=33: the final count
    bar.close()      # a second close adds nothing
    assert log.getvalue().splitlines() == [
        "job: 3/1000 items (0%), 30 s", "job: 503/1000 items (50%), 31 s", "job: 504/1000 items (50%), 33 s"]


def test_empty_total_is_refused_by_name():
    with pytest.raises(ValueError, match=r"progress total: received 0; expected a positive count of steps"):
        progress.LineProgress(0, "job", "step", io.StringIO())


def _download(module, chunks, length):
    """What torchvision's `_urlretrieve` does with its module's tqdm."""
    with module.tqdm(total=length, unit="B", unit_scale=True) as bar:
        for chunk in chunks:
            bar.update(chunk)


def test_a_librarys_own_bar_writes_lines_in_a_log():
    log = io.StringIO()
    library = types.SimpleNamespace(tqdm=tqdm)
    with progress.lines_in(library, "download CIFAR-100", file=log):
        _download(library, [100] * 20, 2000)
        _download(library, [100] * 3, None)  # no Content-Length: a count without a percentage
    assert library.tqdm is tqdm, "the library's tqdm is put back"
    assert "\r" not in log.getvalue()
    lines = log.getvalue().splitlines()
    assert lines[0] == "download CIFAR-100: 200/2000 B (10%), 0 s" and "2000/2000 B (100%)" in lines[9], lines
    assert lines[-1] == "download CIFAR-100: 300 B, 0 s", lines


def test_a_librarys_bar_stays_a_bar_on_a_terminal():
    term = Terminal()
    library = types.SimpleNamespace(tqdm=tqdm)
    with progress.lines_in(library, "download", file=term):
        assert library.tqdm is tqdm
        with library.tqdm(total=3, file=term) as bar:
            bar.update(3)
    assert "\r" in term.getvalue()


def test_torchvision_downloads_through_the_patched_name():
    """lines_in swaps torchvision.datasets.utils.tqdm: its download must still call that name."""
    from torchvision.datasets import utils

    assert "tqdm(" in inspect.getsource(utils._urlretrieve)
