"""The parity tests are collected for the batches that matter, per model and backend: the profile's
min and max, the batches TensorRT tunes for (its opt batches) and an odd one (7). A batch matrix
collapsed to one size collects fewer tests and every one of them passes: the unset-shape bug shows
only when the batch changes, so only the collected matrix itself can say it is gone."""
import sys
from pathlib import Path

from tests import background

PARITY = "test_outputs_match_the_reference"
ODD = 7  # not a power of two, not an end of any shipped profile


def _default_collection(config, scratch: Path) -> background.Command:
    """A default run's collection (`pytest tests/test_parity.py`, no options): a run of its own, so
    neither this session's options nor its -k/--lf selection changes what is checked."""
    return background.Command([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                               f"tests/test_parity.py::{PARITY}"], str(Path(__file__).resolve().parent.parent))


def _collected_parity_batches(done) -> dict[tuple[str, str], set[int]]:
    """(model, backend) -> the batch sizes the parity test is collected for, read from the ids
    (`MODEL-BACKEND-bsN`)."""
    from model.backends.registry import BACKENDS

    assert done.returncode == 0, done.stdout + done.stderr
    found: dict[tuple[str, str], set[int]] = {}
    for line in done.stdout.splitlines():
        if f"::{PARITY}[" not in line:
            continue
        case, _, batch = line.split("[", 1)[1].rstrip("]").rpartition("-bs")
        backend = max((b for b in BACKENDS if case.endswith("-" + b)), key=len)  # onnxruntime-cpu-fp16, not -cpu
        found.setdefault((case[: -len(backend) - 1], backend), set()).add(int(batch))
    return found


@background.register(_default_collection)
def test_default_batch_matrix_is_collected_for_every_model_and_backend(request):
    from model import zoo

    found, specs = _collected_parity_batches(background.result(request)[0]), zoo.shipped()
    assert {model for model, _ in found} == set(specs), f"parity tests collected for {sorted(found)}"
    for (model, backend), batches in found.items():
        profile = specs[model].profile
        expected = {profile.min, *profile.opts, profile.max} | ({ODD} if profile.min < ODD < profile.max else set())
        assert expected <= batches, (f"{model} on {backend}: parity collected for batches {sorted(batches)}, "
                                     f"missing {sorted(expected - batches)} (profile {profile})")
