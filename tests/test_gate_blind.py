"""A gate that cannot go blind quietly (synthetic samples, no load needed): a baseline whose
processes spread so much that a later check could gate almost nothing is refused, not stored, and
a check that gated (almost) nothing exits non-zero and says so in the job summary."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("scipy", reason="the regression gate needs scipy (requirements.txt)")

from model.gate import baseline, cli, report, sampling  # noqa: E402
from model.gate.stats import TOO_NOISY, UNCHANGED, Settings  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
INFO = {"gpu": {}, "libraries": {"numpy": "2"}, "cpu": {"brand_raw": "x"}}
NAMES = [f"benchmarks/test_latency.py::test_end_to_end[b{i}]" for i in range(33)]


def _results(processes: int, sd: float, seed: int, slower: float = 1.0) -> list[dict]:
    """One pytest-benchmark JSON per process: each benchmark's rounds around that process's own
    level, the levels log-normal with `sd` between processes (420% is what a busy loop on the other
    core gave here)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(processes):
        level = np.exp(rng.normal(0.0, np.log1p(sd), len(NAMES)))
        out.append({"machine_info": INFO, "benchmarks": [
            {"fullname": n, "extra_info": {}, "stats": {"data": list(1e-3 * slower * lv * rng.uniform(0.99, 1.01, 20))}}
            for n, lv in zip(NAMES, level)]})
    return out


def _fake_measure(monkeypatch, results: list[dict]) -> None:
    def measure(sides, processes, out_dir, python=None, progress=print, cpus=None, warmup=1):
        assert processes == len(results)
        for result in results:
            sides[0].add(result)
    monkeypatch.setattr(sampling, "measure", measure)


def _side(results) -> sampling.Side:
    side = sampling.Side("baseline", ROOT)
    for r in results:
        side.add(r)
    return side


def test_a_noisy_baseline_projects_a_blind_check_and_a_quiet_one_does_not():
    assert len(baseline.blind_spots(_side(_results(6, 4.2, 1)), 5, Settings())) == len(NAMES)
    assert baseline.blind_spots(_side(_results(6, 0.01, 2)), 5, Settings()) == {}


@pytest.mark.parametrize("sd, stored", [(4.2, False), (0.01, True)], ids=["under-load", "quiet"])
def test_record_refuses_a_baseline_that_would_leave_the_gate_blind(monkeypatch, tmp_path, sd, stored):
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    _fake_measure(monkeypatch, _results(6, sd, 3))
    path = tmp_path / "stored" / "baseline.json"
    code = cli.main(["record", "--baseline", str(path), "--checkout", str(ROOT), "--out", str(tmp_path / "out")])
    assert (code, path.is_file()) == ((0, True) if stored else (report.EXIT_TOO_NOISY, False))
    assert ("baseline REFUSED" in summary.read_text()) is not stored
    assert (tmp_path / "out" / "refused-baseline.json").is_file() is not stored


def _check(monkeypatch, tmp_path, base_sd: float, head_sd: float, slower: float = 1.0):
    stored = tmp_path / "baseline.json"
    baseline.save(_side(_results(6, base_sd, 4)), stored)
    _fake_measure(monkeypatch, _results(5, head_sd, 5, slower))
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    code = cli.main(["check", "--baseline", str(stored), "--checkout", str(ROOT), "--out", str(tmp_path / "out")])
    verdicts = json.loads((tmp_path / "out" / "gate.json").read_text())["verdicts"]
    return code, [v["verdict"] for v in verdicts], summary.read_text()


def test_a_check_that_gated_nothing_fails_and_says_so_in_the_job_summary(monkeypatch, tmp_path):
    # A baseline stored before this rule (or by hand), and a check run beside a busy loop.
    code, verdicts, summary = _check(monkeypatch, tmp_path, base_sd=4.2, head_sd=4.2)
    assert verdicts.count(TOO_NOISY) == len(NAMES)
    assert code == report.EXIT_TOO_NOISY
    assert "BLIND (not a pass): 0 of 33 benchmarks could be gated" in summary and "| benchmark |" in summary


def test_a_quiet_unchanged_check_passes_with_its_table_in_the_job_summary(monkeypatch, tmp_path):
    code, verdicts, summary = _check(monkeypatch, tmp_path, base_sd=0.01, head_sd=0.01)
    assert (code, set(verdicts)) == (report.EXIT_PASS, {UNCHANGED})
    assert "33 unchanged, 0 too noisy" in summary and "BLIND" not in summary


def test_a_quiet_check_still_fails_a_real_slowdown(monkeypatch, tmp_path):
    code, verdicts, _ = _check(monkeypatch, tmp_path, base_sd=0.01, head_sd=0.01, slower=1.3)
    assert code == report.EXIT_REGRESSED and set(verdicts) == {"regressed"}


def test_no_job_summary_outside_ci(tmp_path):
    assert report.to_job_summary("x", environ={}) is False
    assert report.to_job_summary("x", environ={"GITHUB_STEP_SUMMARY": str(tmp_path / "s.md")}) is True
    assert (tmp_path / "s.md").read_text() == "x\n\n"
