"""The TensorRT engines a run needs, listed one plan at a time, so parallel workers (pytest-xdist)
can build them before the tests do, each plan once, the longest first.

Built by whole engine sets, one set per worker, a worker with SimpleCNN's set built its three
plans in a row while others idled; built by the tests themselves, every worker reached the same
backend's tests together and waited on one build at a time. Here every plan is a job; the jobs are
dealt longest first round the workers (a greedy longest-processing-time schedule), and the cache's
per-plan lock keeps each built once: the plans are the very ones the tests, the benchmarks and the
main job then load.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from model.backends.tensorrt.build import DEFAULT_OPTIMIZATION_LEVEL, engine_for_onnx, runner_test_spec
from model.profile import BatchProfile

RUNNER_TESTS = "runner-tests"  # the job of the runner tests' own engine (build.runner_test_spec)


@dataclass(frozen=True)
class Job:
    model: str
    precision: str             # or RUNNER_TESTS
    typed_graph: bool
    profile: BatchProfile
    level: int = DEFAULT_OPTIMIZATION_LEVEL

    def cost(self) -> float:
        """A relative guess of the build's minutes: TensorRT times its tactics at each profile's opt
        shape, longer for larger ones and at higher optimization levels; INT8 also calibrates."""
        shapes = sum(1 + math.log2(opt) for opt in self.profile.opts)
        return shapes * (1 + self.level) * (1.5 if self.precision == "int8" else 1.0)


def jobs_for(model: str, precision: str, typed_graph: bool, profile: BatchProfile) -> list[Job]:
    """One job per plan of an engine set (model/artifacts.py `engine_set`)."""
    return [Job(model, precision, typed_graph or precision == "int8", p) for p in profile.engine_profiles()]


def runner_tests_job(model: str, profile: BatchProfile) -> Job:
    """The runner tests' engine: the deployed FP32 plan where the set is one engine, else its own."""
    if profile.engine_profiles() == [profile]:
        return Job(model, "fp32", False, profile)
    return Job(model, RUNNER_TESTS, False, profile, level=0)


def share(jobs: list[Job], worker: int, workers: int) -> list[Job]:
    """Worker `worker`'s jobs (0-based, of `workers`): distinct jobs dealt longest first, round the
    workers; every worker computes the same order."""
    if not 0 <= worker < workers:
        raise ValueError(f"worker {worker} of {workers}: expected 0 <= worker < workers")
    ordered = sorted(set(jobs), key=lambda j: (-j.cost(), j.model, j.precision, j.typed_graph, str(j.profile)))
    return ordered[worker::workers]


def build(job: Job, arts) -> None:
    """Builds (or finds cached and sound) the job's plan; `arts` is the model's ModelArtifacts."""
    if job.precision == RUNNER_TESTS:
        engine_for_onnx(arts.onnx, runner_test_spec(arts.spec, job.profile, arts.workspace), arts.cache_dir)
    else:
        arts.engine(job.precision, job.typed_graph, job.profile)

