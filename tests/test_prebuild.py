"""Which TensorRT plans a parallel run builds up front, and how they are dealt to the workers
(model/backends/tensorrt/prebuild.py): no GPU needed to decide it."""
import pytest

from model.backends.tensorrt import prebuild
from model.backends.tensorrt.build import DEFAULT_OPTIMIZATION_LEVEL, runner_test_spec
from model.profile import DEFAULT_PROFILE, BatchProfile
from model.zoo import get

NARROW = BatchProfile(1, (16,), 64)


def _jobs():
    jobs = []
    for model, profile in (("simplecnn", DEFAULT_PROFILE), ("resnet18", NARROW)):
        for precision, typed in (("fp32", False), ("fp16", False), ("fp16", True), ("int8", False)):
            jobs += prebuild.jobs_for(model, precision, typed, profile)
        jobs.append(prebuild.runner_tests_job(model, profile))
    return jobs


def test_one_job_per_plan_of_each_engine_set():
    jobs = prebuild.jobs_for("simplecnn", "fp16", False, DEFAULT_PROFILE)
    assert [j.profile for j in jobs] == DEFAULT_PROFILE.engine_profiles()  # opt 32, opt 4096, static 1
    assert all(j.typed_graph for j in prebuild.jobs_for("simplecnn", "int8", False, DEFAULT_PROFILE))  # Q/DQ model


@pytest.mark.parametrize("workers", [1, 3, 4, 7])
def test_every_plan_goes_to_exactly_one_worker_longest_first(workers):
    jobs = _jobs() + _jobs()[:5]  # repeats (several tests, one plan) are one job
    shares = [prebuild.share(jobs, w, workers) for w in range(workers)]
    flat = [j for s in shares for j in s]
    assert sorted(map(str, flat)) == sorted(map(str, set(jobs))) and len(flat) == len(set(flat)) == 12 + 1 + 4  # the narrow model's test engine is its fp32 plan
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    first = [s[0] for s in shares if s]
    # The largest opt batch's plans lead: each worker's first job costs at least as much as any later one.
    assert all(s[0].cost() >= j.cost() for s in shares for j in s[1:])
    assert any(4096 in j.profile.opts for j in first)


def test_a_worker_outside_the_pool_is_refused():
    with pytest.raises(ValueError, match="worker 4 of 4"):
        prebuild.share(_jobs(), 4, 4)


def test_runner_test_engine_is_the_deployed_engine_where_the_set_is_one_engine():
    assert prebuild.runner_tests_job("resnet18", NARROW) == prebuild.jobs_for("resnet18", "fp32", False, NARROW)[0]
    assert prebuild.runner_tests_job("simplecnn", DEFAULT_PROFILE).level == 0
    spec = get("simplecnn")
    assert runner_test_spec(spec, NARROW).optimization_level == DEFAULT_OPTIMIZATION_LEVEL  # = the deployed plan
    assert runner_test_spec(spec, DEFAULT_PROFILE).optimization_level == 0  # two opts in one engine: tests only
    assert runner_test_spec(spec, DEFAULT_PROFILE).profile == DEFAULT_PROFILE
