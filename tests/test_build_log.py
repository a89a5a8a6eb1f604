"""The build log (model/backends/tensorrt/build_log.py): a run cut by its time limit still says
which builds it was waiting for, and every build's seconds and slot wait add up per engine set."""
from __future__ import annotations

import json
import os

from model.backends.tensorrt import build_log

FP16 = {"model": "resnet18", "precision": "fp16", "typed_graph": False, "profile": "min=1 opt=16 max=64",
        "optimization_level": 5}
INT8 = {**FP16, "model": "simplecnn", "precision": "int8", "typed_graph": True, "profile": "min=1 opt=4096 max=4096"}


def test_finished_failed_and_unfinished_builds_are_told_apart(tmp_path):
    build_log.record(tmp_path, "started", "a.plan", FP16, waited=3.0)
    build_log.record(tmp_path, "built", "a.plan", FP16, waited=3.0, seconds=58.04)
    build_log.record(tmp_path, "started", "b.plan", INT8, waited=40.0)
    build_log.record(tmp_path, "started", "c.plan", {**FP16, "precision": "fp32"}, waited=0.0)
    build_log.record(tmp_path, "failed", "c.plan", {**FP16, "precision": "fp32"}, waited=0.0, seconds=7.0)
    rows = build_log.read(tmp_path / build_log.NAME)
    assert {r["pid"] for r in rows} == {os.getpid()}
    started_b = next(r["at"] for r in rows if r["plan"] == "b.plan")
    lines = build_log.summary(rows, now=started_b + 120)
    assert lines[0] == "1 plans built, 58 s of building in all, 3 s waiting for a build slot"
    assert lines[1] == "  resnet18 fp16 level 5: 1 plans, 58 s (min=1 opt=16 max=64: 58 s (waited 3))"
    assert "  FAILED after 7 s: resnet18 fp32 level 5 min=1 opt=16 max=64" in lines
    assert lines[-2].startswith("1 builds started and not ended")
    assert lines[-1] == "  simplecnn int8 typed level 5 min=1 opt=4096 max=4096: started 120 s before this report, after waiting 40 s"


def test_a_plan_built_again_by_another_process_is_not_taken_for_the_first_ones_end(tmp_path):
    """Ends pair with starts by plan and process: a killed builder's start stays unfinished even
    when another process later builds the same plan."""
    rows = [{"event": "started", "plan": "a.plan", **FP16, "waited": 0, "pid": 1, "at": 100.0},
            {"event": "started", "plan": "a.plan", **FP16, "waited": 0, "pid": 2, "at": 200.0},
            {"event": "built", "plan": "a.plan", **FP16, "waited": 0, "pid": 2, "at": 260.0, "seconds": 60.0}]
    lines = build_log.summary(rows, now=300.0)
    assert lines[-1].endswith("started 200 s before this report, after waiting 0 s")


def test_logs_from_before_start_lines_read_as_builds_and_a_cut_line_is_skipped(tmp_path, capsys):
    path = tmp_path / build_log.NAME
    old = {"plan": "a.plan", **FP16, "seconds": 32.0, "pid": 9, "finished": 1.0}  # no event, no wait
    path.write_text(json.dumps(old) + "\n" + '{"event": "sta')
    lines = build_log.summary(build_log.read(path))
    assert lines == ["1 plans built, 32 s of building in all, 0 s waiting for a build slot",
                     "  resnet18 fp16 level 5: 1 plans, 32 s (min=1 opt=16 max=64: 32 s (waited 0))"]
    assert f"{path}:2: not JSON, skipped" in capsys.readouterr().err


def test_the_command_reads_a_log_and_says_when_there_is_none(tmp_path, capsys):
    assert build_log.main([str(tmp_path / "missing.jsonl")]) == 0
    assert "no builds logged" in capsys.readouterr().out
    build_log.record(tmp_path, "built", "a.plan", FP16, waited=0.0, seconds=1.0)
    assert build_log.main([str(tmp_path / build_log.NAME)]) == 0
    assert capsys.readouterr().out.startswith("1 plans built, 1 s of building")
