"""tools/e2e-timeline.py on the CPU: its arguments, the breakdown maths on synthetic stamps, and its
hooks on the fake GPU's runner (on for the traced calls, all off after). The timings themselves
need the GPU (the tool's own run)."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from model.backends.tensorrt import staging

TOOL = Path(__file__).parent.parent / "tools" / "e2e-timeline.py"
_spec = importlib.util.spec_from_file_location("e2e_timeline", TOOL)
timeline = sys.modules["e2e_timeline"] = importlib.util.module_from_spec(_spec)  # dataclasses look it up
_spec.loader.exec_module(timeline)
Span = timeline.Span


def test_the_tool_imports_without_tensorrt_or_cuda():
    code = (f"import importlib.util, sys; s = importlib.util.spec_from_file_location('t', {str(TOOL)!r}); "
            "m = sys.modules['t'] = importlib.util.module_from_spec(s); s.loader.exec_module(m); "
            "print(sorted(n for n in sys.modules if n == 'tensorrt' or n.startswith('cuda')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_arguments_default_to_the_lease_command_and_refuse_nonsense():
    args = timeline.parse_args(["--budget", "100", "--json", "/tmp/x.json"])
    assert (args.budget, str(args.json), args.batch_list, args.calls) == (100, "/tmp/x.json", [4096, 256, 32, 1024], 30)
    assert args.feed_list == list(timeline.FEEDS) and args.section_list == ["host", "alone", "timeline", "shape", "switch"]
    assert timeline.parse_args(["--batches", "32", "--feeds", "pinned", "--sections", "timeline"]).batch_list == [32]
    for bad in (["--feeds", "pinned,mapped"], ["--sections", "timeline,gpu"], ["--budget", "0"], ["--batches", "0"]):
        with pytest.raises(SystemExit):
            timeline.parse_args(bad)


def test_every_section_the_fake_gpu_can_run_runs_without_error(tmp_path, capsys):
    """The host staging and the timelines on the fake GPU, every feed, both paths: no section fails."""
    timeline.RESULTS.clear()
    out = tmp_path / "t.json"
    timeline.main(["--fake", "--budget", "60", "--batches", "4096,32", "--calls", "2", "--json", str(out)])
    printed = capsys.readouterr().out
    assert "FAILED" not in printed and "errors" not in json.loads(out.read_text())
    assert "host staging alone, batch 4096" in printed
    assert all(f"batch 4096, {feed}," in printed and f"batch 32, {feed}," in printed for feed in timeline.FEEDS)


def test_busy_counts_overlaps_once():
    spans = [Span("a", "gpu-copy", 0, 2), Span("b", "gpu-copy", 1, 3), Span("c", "gpu-copy", 5, 6)]
    assert timeline.busy(spans) == 4
    assert timeline.busy([]) == 0


# Two sub-batches on a pipelined call of 10 ms: uploads on the copy stream, engine runs behind them.
CALL = [Span("stage#0", "host", 0.0, 1.0), Span("stage#0", "worker", 0.2, 1.5), Span("stage#0", "worker", 0.1, 1.2),
        Span("upload issue#0", "host", 1.5, 1.6), Span("upload#0", "gpu-copy", 1.7, 2.7),
        Span("engine issue#0", "host", 1.7, 1.8), Span("engine#0", "gpu-engine", 2.7, 4.7),
        Span("upload issue#1", "host", 3.0, 3.1), Span("upload#1", "gpu-copy", 3.1, 4.1),
        Span("engine issue#1", "host", 3.2, 3.3), Span("engine#1", "gpu-engine", 5.0, 7.0),
        Span("event sync#0", "host", 3.4, 8.0)]


def test_a_calls_figures_are_its_busy_times_and_gaps():
    f = timeline.call_figures(CALL, 10.0)
    assert f["total"] == 10.0 and f["head"] == pytest.approx(1.7) and f["tail"] == pytest.approx(3.0)
    assert f["gpu_copy_busy"] == pytest.approx(2.0) and f["gpu_engine_busy"] == pytest.approx(4.0)
    assert f["gpu_busy"] == pytest.approx(5.0) and f["gpu_idle"] == pytest.approx(0.3)  # 4.7 -> 5.0: nothing ran
    assert f["worker_span"] == pytest.approx(1.4) and f["worker_busy_sum"] == pytest.approx(2.4)
    assert f["host_busy"] == pytest.approx(1.0 + 0.1 + 0.1 + 0.1 + 0.1 + 4.6)
    assert f["host_unaccounted"] == pytest.approx(10.0 - f["host_busy"])
    delays = timeline.queue_delays(CALL)
    assert delays == pytest.approx({"upload#0": 0.1, "engine#0": 0.9, "upload#1": 0.0, "engine#1": 1.7})


def test_the_summary_takes_medians_over_calls_and_merges_a_step_run_by_several_workers():
    later = [Span(s.name, s.where, s.start + 1, s.end + 1) for s in CALL]  # the same call, 1 ms later in every step
    slow = [Span(s.name, s.where, s.start + 3, s.end + 3) for s in CALL[:4]]  # a call with only its first steps
    summary = timeline.summarize([(CALL, 10.0), (later, 11.0), (slow, 20.0)])
    steps = {(r["step"], r["where"]): r for r in summary["steps"]}
    assert steps[("stage#0", "worker")] == {"step": "stage#0", "where": "worker", "start": 1.1, "end": 2.5, "ms": 1.4, "calls": 3}
    assert steps[("engine#1", "gpu-engine")]["calls"] == 2 and steps[("engine#1", "gpu-engine")]["start"] == 5.5
    assert summary["figures"]["total"] == 11.0 and summary["calls"] == 3
    assert [r["start"] for r in summary["steps"]] == sorted(r["start"] for r in summary["steps"])
    text = timeline.format_summary("batch 2", summary, untraced_ms=10.5)
    assert "untraced 10.500 ms (tracing adds +0.500)" in text and "engine#1" in text and "(in 2 calls)" in text


def test_the_hooks_trace_the_real_runner_code_and_are_all_taken_off(monkeypatch):
    kit = timeline.FakeGpu()
    try:
        runner = kit.runner(4096, finite_check="dot")  # the host check: its stage and check spans
        feed = runner.pinned_inputs(4096)
        feed[kit.input_name][:] = timeline.images(4096)
        for _ in range(2):
            runner.infer(feed)
        plain = {"runner": set(vars(runner)), "stream": set(vars(runner.stream)),  # no attribute left behind
                 "staging": (staging.plan, staging.stage_rows, staging.all_finite, staging.Latch.wait)}
        tracer = timeline.Tracer(runner)  # host spans only: the fake GPU has no timing events
        with timeline.trace(runner, tracer):
            spans = tracer.call(lambda: runner.infer(feed))
        names = {(s.name, s.where) for s in spans}
        steps = {s.name for s in spans}  # pieces go to whichever thread claims them: host or worker
        subs = range(4)  # 48 MiB in sub-batches of 12 MiB
        assert {f"upload issue#{i}" for i in subs} | {f"stage#{i}" for i in subs} | {f"check#{i}" for i in subs} <= steps
        assert {(f"engine issue#{i}", "host") for i in subs} <= names and ("stage#0", "host") in names
        if runner._stager.workers:
            assert ("stager start (submits)", "host") in names
        assert not any(n.startswith(("set_input_shape", "profile switch", "graph capture")) for n, _ in names)
        assert all(0 <= s.start <= s.end <= tracer.calls[0][1] for s in spans)
        assert set(vars(runner)) == plain["runner"] and set(vars(runner.stream)) == plain["stream"]
        assert (staging.plan, staging.stage_rows, staging.all_finite, staging.Latch.wait) == plain["staging"]
        assert not any("copy_from_host_async" in vars(b) for b in runner.device.values())
        assert not any("synchronize" in vars(e) for e in runner._events)
    finally:
        kit.close()


def test_the_default_runner_traces_its_gpu_checks_and_stages_copies_only():
    kit = timeline.FakeGpu()
    try:
        runner = kit.runner(4096)
        assert runner._gpu_checked == {kit.input_name}
        feed = {kit.input_name: timeline.images(4096)}
        runner.infer(feed)
        plain_enqueue = runner._finite_gpu.enqueue
        tracer = timeline.Tracer(runner)
        with timeline.trace(runner, tracer):
            spans = tracer.call(lambda: runner.infer(feed))
        names = {(s.name, s.where) for s in spans}
        subs = range(4)
        assert {(f"nan check issue#{i}", "host") for i in subs} <= names  # one queued check per uploaded sub-batch
        assert {f"stage#{i}" for i in subs} <= {s.name for s in spans}  # copies (by any thread), no host check
        assert not any(n.startswith("check#") for n, _ in names)
        assert runner._finite_gpu.enqueue == plain_enqueue and "enqueue" not in vars(runner._finite_gpu)
    finally:
        kit.close()


