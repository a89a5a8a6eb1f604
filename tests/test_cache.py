"""The cache layer: every artifact kind is verified on load; same-size damage, junk, missing or
edited sidecars and other inputs are rebuilt with a warning, never used; files follow the umask."""
import json
import logging
import os
import shutil
import stat

import pytest
import torch

from model import cache, data, quantize, report, training
from model.network import SimpleCNN


def simplecnn_onnx(trained, folder):
    """SimpleCNN's cached FP32 export, keyed by its weights as the suite keys it."""
    from model import export, zoo

    key_inputs = {"model": "simplecnn", "weights": cache.sha256_file(trained.checkpoint)}
    return export.onnx_for_module(zoo.get("simplecnn"), trained.model, key_inputs, folder)


def simplecnn_variant(fp32, precision: str, calib_x=None):
    from model import zoo

    feeds = None if calib_x is None else [{"input": calib_x[i : i + 50]} for i in range(0, len(calib_x), 50)]
    return quantize.variant(fp32, precision, zoo.get("simplecnn"), feeds)


TINY_DATA = data.SyntheticSpec(train_per_class=2, calib_per_class=1, holdout_per_class=1)
TINY_TRAIN = training.TrainConfig(epochs=1, batch_size=50)
MiB = 1 << 20


def zero_middle(path, n: int) -> None:
    """Same-size damage: `n` bytes in the middle zeroed (what a bad sector or a stray write does)."""
    blob = path.read_bytes()
    n = min(n, len(blob) // 2)
    start = (len(blob) - n) // 2
    path.write_bytes(blob[:start] + bytes(n) + blob[start + n:])
    assert path.stat().st_size == len(blob)


class Generic:
    """A stand-in artifact (an engine plan, a new model's file): counts its builds."""

    def __init__(self, folder, content: bytes = b"plan-bytes " * 1000, name: str = "thing-0123.plan"):
        self.folder, self.content, self.name, self.builds = folder, content, name, 0
        self.key = {"source_sha256": "ab" * 32, "precision": "fp16", "profile": [1, 32, 4096]}

    def build(self, tmp):
        self.builds += 1
        tmp.write_bytes(self.content)
        return {"size_mb": len(self.content) / MiB}

    def get(self, **kw):
        return cache.get_or_build(self.folder, self.name, self.key, self.build, **kw)

    @property
    def path(self):
        return self.folder / self.name


def _rewrite_sidecar(path, edit):
    side = cache.sidecar_path(path)
    side.write_text(json.dumps(edit(json.loads(side.read_text()))))


SIDECAR_FAULTS = {
    "junk_list": lambda p: cache.sidecar_path(p).write_text("[]"),
    "junk_text": lambda p: cache.sidecar_path(p).write_text("{not json"),
    "empty": lambda p: cache.sidecar_path(p).write_text(""),
    "missing": lambda p: cache.sidecar_path(p).unlink(),
    "key_not_a_dict": lambda p: cache.sidecar_path(p).write_text('{"key": 1}'),
    "edited_figure": lambda p: _rewrite_sidecar(p, lambda r: {**r, "figures": {"size_mb": 99.0}}),
    "edited_sha256": lambda p: _rewrite_sidecar(p, lambda r: {**r, "sha256": "0" * 64}),
    "other_inputs_resealed": lambda p: _rewrite_sidecar(p, lambda r: cache.seal({**r, "key": {**r["key"], "precision": "int8"}})),
    "other_artifact_resealed": lambda p: _rewrite_sidecar(p, lambda r: cache.seal({**r, "artifact": "other.plan"})),
}
FILE_FAULTS = {
    "same_size_damage": lambda p: zero_middle(p, 4096),
    "truncated": lambda p: p.write_bytes(p.read_bytes()[:100]),
    "missing_file": lambda p: p.unlink(),
}


@pytest.mark.parametrize("fault", list(SIDECAR_FAULTS) + list(FILE_FAULTS))
def test_generic_artifact_fault_warns_and_rebuilds(tmp_path, caplog, fault):
    art = Generic(tmp_path)
    first = art.get()
    assert first.built and first.figures == {"size_mb": len(art.content) / MiB}
    {**SIDECAR_FAULTS, **FILE_FAULTS}[fault](art.path)
    assert cache.load(tmp_path, art.name, art.key) is None  # nothing usable is offered
    again = art.get()
    assert art.builds == 2 and again.built
    assert f"not using cached {art.path}" in caplog.text
    assert art.path.read_bytes() == art.content and again.sidecar == first.sidecar
    assert not art.get().built and art.builds == 2  # and the rebuilt one is used from then on


def test_sound_artifact_is_used_without_building(tmp_path, caplog):
    art = Generic(tmp_path)
    art.get()
    with caplog.at_level(logging.INFO):
        hit = art.get()
    assert not hit.built and art.builds == 1 and not caplog.records
    assert hit.key_inputs == art.key and hit.sidecar["sha256"] == cache.sha256_file(art.path)


def test_other_key_inputs_rebuild(tmp_path, caplog):
    art = Generic(tmp_path)
    art.get()
    art.key = {**art.key, "precision": "int8"}
    assert art.get().built and "built from other inputs: precision: cached 'fp16' vs now 'int8'" in caplog.text


def test_failing_content_check_rebuilds(tmp_path, caplog):
    art = Generic(tmp_path)
    art.get()

    def verify(path):
        if art.builds == 1:
            raise ValueError("stale layout")

    assert art.get(verify=verify).built and "fails its content check (ValueError: stale layout)" in caplog.text


def test_failed_build_leaves_nothing(tmp_path):
    def build(tmp):
        tmp.write_bytes(b"half")
        (tmp.with_suffix(".prep" + tmp.suffix)).write_bytes(b"scratch")
        raise RuntimeError("builder crashed")

    with pytest.raises(RuntimeError, match="builder crashed"):
        cache.get_or_build(tmp_path, "thing.plan", {"k": 1}, build)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".thing.plan.lock"]


def test_retrain_style_rebuild_replaces_a_sound_artifact(tmp_path):
    art = Generic(tmp_path)
    art.get()
    assert art.get(rebuild=True).built and art.builds == 2


def test_files_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        art = Generic(tmp_path).get()
        paths = report.write(tmp_path / "out", {"data": "d", "holdout_size": 1, "machine": "m",
                                                "batch_sizes": [], "results": []})
    finally:
        os.umask(old)
    for path in [art.path, cache.sidecar_path(art.path), *paths.values()]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o640, path


# -- the real artifact kinds --------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny():
    return data.synthetic(TINY_DATA)


WEIGHTS_FAULTS = {
    "same_size_damage": lambda p: zero_middle(p, 4096),
    "junk_sidecar": SIDECAR_FAULTS["junk_list"],
    "missing_sidecar": SIDECAR_FAULTS["missing"],
    "edited_holdout_accuracy": lambda p: _rewrite_sidecar(
        p, lambda r: {**r, "figures": {**r["figures"], "holdout_accuracy": 0.99}}),
}


@pytest.fixture(scope="module")
def tiny_model():
    """What `train` hands back in these tests: what is cached matters here, not what it learned."""
    torch.manual_seed(0)
    return SimpleCNN().eval()


@pytest.mark.parametrize("fault", WEIGHTS_FAULTS)
def test_weights_fault_warns_and_retrains(tiny, tiny_model, tmp_path, caplog, monkeypatch, fault):
    runs = []  # training is what a retrain costs; the model it returns is the module's tiny one
    monkeypatch.setattr(training, "train", lambda *a, **k: runs.append(1) or tiny_model)
    first = training.load_or_train(tiny, TINY_TRAIN, tmp_path, progress=False)
    WEIGHTS_FAULTS[fault](first.checkpoint)
    again = training.load_or_train(tiny, TINY_TRAIN, tmp_path, progress=False)
    assert runs == [1, 1] and f"not using cached {first.checkpoint}" in caplog.text
    # What is reported is measured again, never the edited figure.
    assert again.sidecar["figures"]["holdout_accuracy"] == first.sidecar["figures"]["holdout_accuracy"]
    assert again.sidecar["sha256"] == cache.sha256_file(again.checkpoint)
    loaded = training.load_or_train(tiny, TINY_TRAIN, tmp_path, progress=False)  # and from then on, loaded
    assert runs == [1, 1] and all(torch.equal(a, b) for a, b in zip(
        tiny_model.state_dict().values(), loaded.model.state_dict().values()))


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory, trained, dataset):
    """FP32, FP16 and INT8 ONNX of the session's SimpleCNN, built once into a private cache."""
    folder = tmp_path_factory.mktemp("onnx-cache")
    fp32 = simplecnn_onnx(trained, folder)
    paths = {"fp32": fp32, "fp16": simplecnn_variant(fp32, "fp16"),
             "int8": simplecnn_variant(fp32, "int8", dataset.calib.x)}
    return folder, {k: p.read_bytes() for k, p in paths.items()}, {k: p.relative_to(folder) for k, p in paths.items()}


def _variants(folder, trained, dataset):
    fp32 = simplecnn_onnx(trained, folder)
    return {"fp32": fp32, "fp16": simplecnn_variant(fp32, "fp16"), "int8": simplecnn_variant(fp32, "int8", dataset.calib.x)}


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_onnx_same_size_damage_is_rebuilt_with_a_warning(onnx_cache, trained, dataset, tmp_path, caplog, precision):
    source, good, names = onnx_cache
    folder = tmp_path / "cache"
    shutil.copytree(source, folder)
    damaged = folder / names[precision]
    zero_middle(damaged, MiB)  # what the issue did: 1 MiB zeroed, same size
    paths = _variants(folder, trained, dataset)
    assert f"not using cached {damaged}" in caplog.text
    # Rebuilt in place, byte for byte the original; the damage spread nowhere (same INT8 key).
    assert {k: p.relative_to(folder) for k, p in paths.items()} == names
    assert {k: p.read_bytes() for k, p in paths.items()} == good


def test_written_json_has_no_bare_nan_or_infinity(tmp_path):
    path = tmp_path / "summary.json"
    cache.atomic_write_json(path, {"error": float("nan"), "rows": [1.5, float("inf"), (float("-inf"),)], "n": 2})

    def refuse(token):
        raise ValueError(f"bare {token}")
    assert json.loads(path.read_text(), parse_constant=refuse) == {
        "error": "NaN", "rows": [1.5, "Infinity", ["-Infinity"]], "n": 2}
