"""The CI cache key of the artifact cache: it must miss when TensorRT, the GPU, the driver or the
code that makes the models and engines changes, and hit otherwise."""
import shutil

import pytest

from model.backends.tensorrt import cache_key

ENV = {"tensorrt": "10.3.0", "gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0", "cuda_driver": 12080,
       "cuda_runtime": 12060}


@pytest.fixture
def checkout(tmp_path):
    for rel in cache_key.SOURCES:
        src, dst = cache_key.ROOT / rel, tmp_path / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
    return tmp_path


@pytest.mark.parametrize("field, value", [("tensorrt", "10.4.0"), ("gpu", "NVIDIA H200"),
                                          ("compute_capability", "8.9"), ("cuda_driver", 12090)])
def test_key_misses_on_another_machine_or_stack(field, value):
    digest = cache_key.sources_digest()
    assert cache_key.key({**ENV, field: value}, digest) != cache_key.key(ENV, digest)
    assert not cache_key.key({**ENV, field: value}, digest).startswith(cache_key.prefix(ENV))


@pytest.mark.parametrize("rel", ["model/zoo/resnet18.py", "model/backends/tensorrt/build.py", "requirements-gpu.txt"])
def test_key_misses_when_the_models_or_builder_settings_change_and_keeps_its_restore_prefix(checkout, rel):
    before = cache_key.key(ENV, cache_key.sources_digest(checkout))
    assert cache_key.key(ENV, cache_key.sources_digest(checkout)) == before  # stable
    with open(checkout / rel, "a") as f:
        f.write("\n# changed\n")
    after = cache_key.key(ENV, cache_key.sources_digest(checkout))
    assert after != before and after.startswith(cache_key.prefix(ENV))


def test_key_is_a_valid_cache_key():
    text = cache_key.key(ENV, cache_key.sources_digest())
    assert text.startswith("artifacts-trt10.3.0-nvidia-h100-80gb-hbm3-sm9.0-driver12080-") and " " not in text


def test_a_missing_source_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="model/zoo"):
        cache_key.sources_digest(tmp_path)
