"""Models nobody here wrote (tests/models/: a torchvision classifier, a transformers encoder and
decoder, a model of several outputs whose sizes follow its input's, a GRU tagger) through the suite's parity,
shape, precision and export tests, as `--model FILE:factory` and as `--onnx` of their exports.

Each run is a pytest subprocess, as a user runs it, over the tests that judge a conversion, at small
batches; every skip it reports must be the machine's (no GPU, no TensorRT)."""
import re
import subprocess
import sys
from pathlib import Path

from tests import background

ROOT = Path(__file__).resolve().parent.parent
ZOO = ["torchvision_classifier", "hf_encoder", "hf_decoder", "multi_output", "recurrent_tagger"]
FACTORIES = [f"tests/models/{name}.py:factory" for name in ZOO]
JUDGING = ["tests/test_parity.py", "tests/test_precision.py", "tests/test_export.py"]
MACHINE = re.compile(r"no NVIDIA GPU or driver found|no usable CUDA device|TensorRT is not installed|CUDA")
# Skips that say a test does not apply to a model, each named: a fixed-size classifier has no axis
# but the batch; a zoo model that offers no INT8 says why in its spec. Anything else skipped fails the run.
NOT_APPLICABLE = re.compile(r"has no dynamic axis besides the batch|"
                            r"(tv-mobilenet-v3-small|hf-bert-encoder|multi-output) is not offered in int8: no INT8: ")
# A bare ONNX file has no module to export again or compare with, no declared classifier output, and
# its opset and INT8 are its author's.
NOT_APPLICABLE_TO_A_FILE = re.compile(r"is the user's own ONNX file|no INT8 for a bare ONNX file|has no PyTorch source|"
                                      r"no PyTorch module for .* here to export again|has no classifier output")


def _argv(cache_dir: Path, *argv: str) -> list[str]:
    return [sys.executable, "-m", "pytest", *JUDGING, "-q", "-rfEs", "-p", "no:cacheprovider",
            "--batch-sizes=1,7", f"--cache-dir={cache_dir}", "-k", "not hypothesis", *argv]


def _check(done: subprocess.CompletedProcess, *allowed: re.Pattern) -> None:
    report = done.stdout + done.stderr
    failed = [line for line in report.splitlines() if line.startswith(("FAILED", "ERROR"))]
    assert done.returncode == 0, "\n".join(failed) + "\n" + report[-4000:]
    assert re.search(r"\d+ passed", report), report[-2000:]
    skips = [line for line in report.splitlines() if line.startswith("SKIPPED")]
    others = [line for line in skips if not any(p.search(line) for p in (MACHINE, NOT_APPLICABLE, *allowed))]
    assert not others, "\n".join(others)


def _exports(cache_dir: Path) -> tuple[list[Path], list[str]]:
    """The zoo's FP32 exports (made on first use, then cached) and the --axis ranges they need."""
    import torch

    from model.artifacts import ModelArtifacts
    from model.sources import from_factory

    paths, axes = [], {}
    with torch.random.fork_rng():  # the factories seed torch: the suite's own random state stays as it was
        for factory in FACTORIES:
            spec = from_factory(factory)
            paths.append(ModelArtifacts(spec, cache_dir, progress=False).onnx)
            axes.update({a.name: f"{a.name}={a.min},{a.opt},{a.max}" for a in spec.axes})
    return paths, sorted(axes.values())


def _factories_run(config, scratch: Path) -> background.Command:
    return background.Command(_argv(Path(config.getoption("--cache-dir")).resolve(), f"--model={','.join(FACTORIES)}"), str(ROOT))


@background.register(_factories_run)
def test_the_zoo_passes_as_factories(request):
    _check(background.result(request)[0])


def _onnx_files_run(config, scratch: Path) -> background.Command:
    cache_dir = Path(config.getoption("--cache-dir")).resolve()
    paths, axes = _exports(cache_dir)
    return background.Command(_argv(cache_dir, *[f"--onnx={p}" for p in paths], *[f"--axis={a}" for a in axes]), str(ROOT))


@background.register(_onnx_files_run)
def test_the_zoo_passes_as_onnx_files(request):
    _check(background.result(request)[0], NOT_APPLICABLE_TO_A_FILE)
