"""Cache faults whose verdict another check would reach anyway, judged on what they must say and
when: a truncated file is named as truncated (before its bytes are hashed), and a build that fails
its content check is never published."""
import logging

import pytest

from model import cache


def _build(content: bytes):
    return lambda tmp: tmp.write_bytes(content) and None


def test_a_truncated_artifact_is_named_as_truncated(tmp_path, caplog):
    key = {"k": 1}
    art = cache.get_or_build(tmp_path, "thing.plan", key, _build(b"plan" * 1000))
    art.path.write_bytes(art.path.read_bytes()[:100])
    with caplog.at_level(logging.WARNING):
        assert cache.load(tmp_path, "thing.plan", key) is None
    assert "it is truncated or padded (100 bytes, its sidecar says 4000)" in caplog.text


def test_a_build_failing_its_content_check_is_not_published(tmp_path):
    def verify(path):
        if path.read_bytes().startswith(b"bad"):
            raise ValueError("not a plan")

    with pytest.raises(ValueError, match="not a plan"):
        cache.get_or_build(tmp_path, "thing.plan", {"k": 1}, _build(b"bad plan"), verify=verify)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".thing.plan.lock"]
