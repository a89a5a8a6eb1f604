"""The curated mutants tools/mutate.py applies, one at a time: faults in the code that makes verdicts
(the comparator, feed validation, option checks, the main job's figures) and keys (the artifact
cache, the ONNX, variant and weights keys). Each is a fault someone could plausibly write, and
each says what would go wrong unnoticed if it survived.

`old` must occur exactly once in `file`; when the code changes, the run stops and names the
mutant to update. `ci=True` puts a mutant in the CI subset (`make mutate-ci`): cheap tests, and
the faults that once survived the whole suite. `equivalent` explains a mutant that cannot change
behaviour; it is then expected to survive.
"""
from __future__ import annotations

from dataclasses import dataclass

# Every mutant's tests run with these: the shipped SimpleCNN only (the zoo's other models cost
# minutes of export on 2 cores; the tests of those modules are model-generic), stop at the first failure.
PYTEST_ARGS = ["-q", "-x", "-p", "no:cacheprovider", "--model", "simplecnn"]

CLI_CHECKS = ["tests/test_cli.py::test_bad_arguments_exit_with_a_message",
              "tests/test_cli.py::test_each_bad_pytest_option_is_named",
              "tests/test_cli.py::test_bad_model_options_name_what_was_wrong",
              "tests/test_cli.py::test_out_under_a_file_is_refused_before_training",
              "tests/test_cli.py::test_cache_dir_naming_a_file_is_refused_before_training",
              "tests/test_cli.py::test_report_names_the_bad_input_file"]

# The tests that cover each module (a mutant may name its own instead), cheapest first: the run
# stops at the first failure, and a test that trains SimpleCNN in an empty cache takes minutes.
TESTS = {
    "model/compare.py": ["tests/test_compare.py", "tests/test_compare_outputs.py", "tests/test_tolerance_scale.py",
                         "tests/test_unset_shape_bug.py"],
    "model/backends/base.py": ["tests/test_feed_checks.py", "tests/test_input_validation.py"],
    "model/validate.py": ["tests/test_option_checks.py", *CLI_CHECKS],
    "model/cache.py": ["tests/test_cache_faults.py", "tests/test_artifact_rebuild.py", "tests/test_cache.py"],
    "model/artifacts.py": ["tests/test_artifact_rebuild.py", "tests/test_export.py"],
    "model/export.py": ["tests/test_export_checks.py", "tests/test_artifact_rebuild.py", "tests/test_export.py"],
    "model/quantize.py": ["tests/test_precision.py", "tests/test_artifact_rebuild.py"],
    "model/options.py": ["tests/test_option_checks.py", "tests/test_batch_matrix.py", *CLI_CHECKS],
    "model/evaluate.py": ["tests/test_evaluate.py", "tests/test_cli.py::test_evaluation_chunks_stay_inside_the_profile"],
}


@dataclass(frozen=True)
class Mutant:
    id: str
    file: str
    old: str
    new: str
    why: str
    ci: bool = False
    tests: tuple[str, ...] = ()
    equivalent: str | None = None


def disabled(id: str, file: str, check: str, why: str, after: str = "", **kw) -> Mutant:
    """The `if` of `check` made never true: the check is gone. `after`: the text that follows it,
    where the `if` alone is not unique in its file."""
    indent = check[: len(check) - len(check.lstrip())]
    return Mutant(id, file, check + after, f"{indent}if False:" + check[len(check.rstrip("\n")):] + after, why, **kw)


COMPARE, BASE, VALIDATE, CACHE = "model/compare.py", "model/backends/base.py", "model/validate.py", "model/cache.py"
ARTIFACTS, EXPORT, QUANTIZE = "model/artifacts.py", "model/export.py", "model/quantize.py"
OPTIONS, EVALUATE = "model/options.py", "model/evaluate.py"

MUTANTS = [
    # -- the comparator ------------------------------------------------------------------------------
    Mutant("compare-size-not-shape", COMPARE, "if output.shape != reference.shape:",
           "if output.size != reference.size:",
           "a flat (3200,) output of the unset-shape bug compared as if it were (32, 100)", ci=True),
    Mutant("compare-atol-1000x", COMPARE, "floor = max(tol.atol, tol.scale_tol * spread)",
           "floor = max(tol.atol * 1000, tol.scale_tol * spread)", "FP32 drift of 0.05 passes as equal", ci=True),
    Mutant("compare-rtol-ignored", COMPARE, "diff <= floor + tol.rtol * np.abs(ref)", "diff <= floor",
           "relative tolerance dropped: large FP16 logits fail, absolute-only verdicts"),
    Mutant("compare-spread-1000x", COMPARE, "floor = max(tol.atol, tol.scale_tol * spread)",
           "floor = max(tol.atol, tol.scale_tol * spread * 1000)",
           "the spread-relative floor 1000 times too loose: errors of a third of an output's scale pass"),
    Mutant("compare-degenerate-ignored", COMPARE, "    problem = degenerate(reference)\n",
           "    problem = None\n", "a reference of 1e-10 logits passes every absolute tolerance again", ci=True),
    Mutant("compare-near-zero-1e-12", COMPARE, "NEAR_ZERO = 1e-6", "NEAR_ZERO = 1e-12",
           "a freshly seeded classifier's logits (1e-10) no longer called degenerate"),
    disabled("compare-within-floor-passes", COMPARE,
             "if values_only and np.issubdtype(reference.dtype, np.floating) and ref.size and peak <= floor:",
             "a values-only output that lies wholly within the absolute floor passes whatever the backend returns"),
    Mutant("compare-rank3-logits-unjudged", COMPARE, "values_only = ref.ndim < 2 or tol.min_top1_agreement <= 0",
           "values_only = ref.ndim != 2 or tol.min_top1_agreement <= 0",
           "a decoder's (batch, seq, vocab) logits called degenerate under INT8, their flipped tokens never judged"),
    disabled("compare-nan-passes", COMPARE, "if not np.isfinite(output).all():",
             "a NaN output reported as a value error, or passed where the tolerance is infinite (INT8)"),
    Mutant("compare-agreement-ignored", COMPARE, "passed = close and agreement_ok", "passed = close",
           "argmax flips pass whenever values are within tolerance (INT8's tolerance is infinite)"),
    Mutant("compare-tie-margin-ignored", COMPARE,
           "return agreement, bool(np.all(gap <= tol.tie_margin)) and (tol.min_top1_agreement < 1.0 or agreement == 1.0)",
           "return agreement, tol.min_top1_agreement < 1.0 or agreement == 1.0",
           "a clear decision flipped in a small batch passes as a near-tie"),
    Mutant("compare-small-batch-fraction", COMPARE, "if len(ref) >= MIN_ROWS_FOR_AGREEMENT:", "if len(ref) >= 1:",
           "small batches judged on a fraction that one flip moves by 3%, near-ties no longer told apart"),
    Mutant("compare-fp32-allows-flips", COMPARE,
           '"fp32": Tolerance(atol=1e-4, rtol=1e-3, min_top1_agreement=1.0, tie_margin=0.0, scale_tol=1e-5)',
           '"fp32": Tolerance(atol=1e-4, rtol=1e-3, min_top1_agreement=0.9, tie_margin=0.0, scale_tol=1e-5)',
           "FP32 allowed to change one decision in ten"),
    Mutant("compare-int8-agreement-0.5", COMPARE, "min_top1_agreement=0.90, tie_margin=1.5",
           "min_top1_agreement=0.50, tie_margin=1.5", "INT8 passes when it changes half the decisions"),
    disabled("compare-outputs-first-failure-ignored", COMPARE, "        if not result:\n",
             "a model's failing output hidden behind its passing ones",
             after="            return Comparison(False, f\"output {name}"),
    Mutant("compare-outputs-names-unchecked", COMPARE,
           "if not isinstance(outputs, dict) or set(outputs) != set(reference):", "if not isinstance(outputs, dict):",
           "a backend returning extra or renamed outputs compared on the reference's names only"),
    # -- feed validation -----------------------------------------------------------------------------
    Mutant("feed-dtype-kind-only", BASE, "    if dtype != meta.dtype:\n", "    if dtype.kind != np.dtype(meta.dtype).kind:\n",
           "float64 fed to a float32 model accepted (silently reinterpreted or converted per backend)", ci=True),
    Mutant("feed-fixed-dims-unchecked", BASE,
           "if len(shape) != len(meta.shape) or any(d is not None and d != v for d, v in zip(meta.shape, shape)):",
           "if len(shape) != len(meta.shape):", "a (N, 3, 31, 32) image fed to a 32x32 model reaches the backend"),
    Mutant("feed-range-one-past-max", BASE, "if r is not None and not r[0] <= shape[i] <= r[1]:",
           "if r is not None and not r[0] <= shape[i] <= r[1] + 1:",
           "one past the profile's max accepted: TensorRT fails deep inside, or writes past its buffers", ci=True),
    disabled("feed-range-unchecked", BASE, "if r is not None and not r[0] <= shape[i] <= r[1]:",
             "batches outside the profile reach the backend"),
    Mutant("feed-nonfinite-accepted", BASE,
           'if not allow_nonfinite and value.dtype.kind in "fc" and not np.isfinite(value).all():',
           'if False and not np.isfinite(value).all():', "NaN inputs reach backends that disagree on them", ci=True),
    Mutant("feed-extra-names-accepted", BASE, "if feed.keys() != metadata.keys():",
           "if not feed.keys() >= metadata.keys():", "a misspelt extra input silently ignored"),
    disabled("feed-not-a-dict", BASE, "if not isinstance(feed, dict):",
             "a bare array as the feed crashes with an AttributeError instead of a named InputError"),
    Mutant("feed-other-objects-accepted", BASE,
           "            kinds = \"a numpy array or a GPU array\" if gpu is not None else \"a numpy array\"\n"
           "            raise InputError(",
           "            checked[name] = value\n            continue\n            raise InputError(",
           "a list or a torch tensor handed to a backend unchecked"),
    # -- option checks -------------------------------------------------------------------------------
    Mutant("validate-zero-is-positive", VALIDATE, "    if value < 1:\n", "    if value < 0:\n",
           "--runs 0 accepted: a latency of no runs", ci=True),
    Mutant("validate-empty-batch-list", VALIDATE, "if not values or min(values) < 1:", "if min(values) < 1:",
           "--batch-sizes , crashes with min() of nothing instead of naming the option"),
    disabled("validate-file-as-folder", VALIDATE, "if path.exists() and not path.is_dir():",
             "--cache-dir naming a file reported as an OS error, not as what is wrong"),
    Mutant("validate-unwritable-folder", VALIDATE, "        with tempfile.TemporaryFile(dir=path):\n            pass\n",
           "        pass\n", "an unwritable --out found only after the training and the measurements"),
    disabled("validate-json-list-accepted", VALIDATE, "    if not isinstance(doc, dict):\n",
             "a JSON list given to `report` crashes with a TypeError instead of naming the file"),
    Mutant("options-batch-default-one", OPTIONS,
           "chosen = sizes or sorted({n for n in (spec.profile.min, *PROBE_BATCHES, *spec.profile.opts, spec.profile.max)\n"
           "                                  if n in spec.profile})",
           "chosen = sizes or [1]", "48 parity tests disappear and nothing notices (a survivor of the first run)",
           ci=True),
    Mutant("options-batch-default-no-opts", OPTIONS, "*PROBE_BATCHES, *spec.profile.opts, spec.profile.max",
           "*PROBE_BATCHES, spec.profile.max", "the batches TensorRT tunes for never tested"),
    Mutant("options-odd-probe-even", OPTIONS, "PROBE_BATCHES = (7, 32)", "PROBE_BATCHES = (8, 32)",
           "no odd batch: kernels that assume a multiple of 8 go untested"),
    Mutant("options-batch-outside-profile", OPTIONS, "        bad = [s for s in chosen if s not in spec.profile]\n",
           "        bad = []\n", "--batch-sizes past the profile accepted: tests fail later, far from the cause"),
    disabled("options-axis-without-onnx", OPTIONS, "    if axes and not onnx_paths:\n",
             "--axis without --onnx silently ignored"),
    disabled("options-unknown-backend", OPTIONS, "    if unknown:\n", "--backends tensorflow crashes later with a KeyError",
             after="        raise argparse.ArgumentTypeError(f\"unknown backends"),
    disabled("options-empty-name-list", OPTIONS, "    if not names:\n", "--model , runs nothing and reports success",
             after="        raise argparse.ArgumentTypeError(f\"expected one or more comma-separated names"),
    # -- the artifact cache --------------------------------------------------------------------------
    Mutant("cache-name-ignores-key", CACHE, "    return sha256_bytes(json.dumps(key_inputs, sort_keys=True).encode())[:16]",
           '    return sha256_bytes(b"")[:16]',
           "every artifact of a model under one name: two weights of one model rebuild each other forever"),
    disabled("cache-key-unchecked", CACHE, '    if record["key"] != key_inputs:\n',
             "an artifact built from other inputs served as if current", ci=True),
    disabled("cache-sha256-unchecked", CACHE, '    if sha256_file(path) != record.get("sha256"):\n',
             "a file damaged in place (same size) used", ci=True),
    disabled("cache-size-unchecked", CACHE, '    if size != record.get("size"):\n',
             "a truncated file reported as damaged in place rather than truncated"),
    disabled("cache-seal-unchecked", CACHE, '    if seal(record)["record_sha256"] != record.get("record_sha256"):\n',
             "an edited figure in a sidecar believed"),
    Mutant("cache-verify-on-load-skipped", CACHE, "            verify(path)\n", "            pass\n",
           "a cached ONNX that fails onnx.checker used"),
    Mutant("cache-verify-before-publish-skipped", CACHE, "            verify(tmp)\n", "            pass\n",
           "a build that fails its content check published"),
    disabled("cache-format-unchecked", CACHE, '    if record.get("format") != FORMAT or record.get("artifact") != path.name:\n',
             "a sidecar of another artifact (copied beside this one) vouches for it"),
    Mutant("cache-umask-ignored", CACHE, "    os.fchmod(fd, 0o666 & ~_umask())", "    pass",
           "cache files mode 0600: a CI cache shared between users unreadable"),
    # -- artifact keys -------------------------------------------------------------------------------
    Mutant("artifacts-code-key", ARTIFACTS,
           '"weights": cache.sha256_file(self.checkpoint), "code": self.spec.code}',
           '"weights": cache.sha256_file(self.checkpoint)}',
           "an edited forward() with the same weights is served the stale ONNX", tests=("tests/test_trust_keys.py",)),
    Mutant("artifacts-weights-key", ARTIFACTS, '"weights": cache.sha256_file(self.checkpoint)', '"weights": "constant"',
           "a retrained model served the old ONNX (a survivor of the first run)", ci=True),
    Mutant("artifacts-state-dict-key", ARTIFACTS, '"state_dict_sha256": cache.sha256_bytes(data)',
           '"state_dict_sha256": "constant"', "new weights of a module saved over by the old weights file"),
    Mutant("artifacts-variant-from-fp32", ARTIFACTS,
           "        if precision == \"fp32\":\n            return self.onnx\n",
           "        if precision == \"fp32\":\n            return self.onnx\n        return self.onnx\n",
           "the FP32 file served as FP16 and INT8: every parity and accuracy test passes",
           tests=("tests/test_precision.py",)),
    Mutant("export-key-drops-opset", EXPORT, '    return {**key_inputs, "opset": opset, ', "    return {**key_inputs, ",
           "an export at another opset served from the cache"),
    disabled("export-fixed-axis-accepted", EXPORT, "                if not dims[i].dim_param:\n",
             "an export with a fixed batch passes its check (TensorRT then builds for one batch)"),
    disabled("export-names-unchecked", EXPORT, "        if names != expected:\n",
             "an ONNX file whose inputs are named otherwise accepted"),
    Mutant("quantize-per-tensor", QUANTIZE, "quant_format=QuantFormat.QDQ, per_channel=True,",
           "quant_format=QuantFormat.QDQ, per_channel=False,",
           "per-tensor INT8 weights (a different recipe) under the per-channel recipe's key"),
    Mutant("quantize-key-drops-calibration", QUANTIZE, '        key["calib"] = cache.sha256_bytes(',
           "        _ = cache.sha256_bytes(", "INT8 calibrated on other data served from the cache"),
    Mutant("quantize-key-drops-fp32", QUANTIZE, '    key = {"fp32": cache.sha256_file(fp32_path), ',
           '    key = {"fp32": "constant", ', "the INT8/FP16 file of an old FP32 export served for a new one"),
    Mutant("quantize-fp16-io-types", QUANTIZE, "keep_io_types=True,\n", "keep_io_types=False,\n",
           "the FP16 graph wants float16 inputs: callers' float32 arrays refused or converted per backend"),
    disabled("quantize-no-calibration-accepted", QUANTIZE, "        if not calib_feeds:\n",
             "INT8 without calibration inputs fails inside ONNX Runtime, not with a clear error"),
    # -- the main job's figures ----------------------------------------------------------------------
    Mutant("evaluate-agreement-constant", EVALUATE,
           "result.top1_agreement = float((decide(outputs[logits]) == decide(reference[logits])).mean())",
           "result.top1_agreement = 1.0", "every backend reported in full agreement (a survivor of the first run)",
           ci=True),
    Mutant("evaluate-error-mean", EVALUATE, "reference[n]).max())", "reference[n]).mean())",
           "the mean error reported as the largest"),
    Mutant("evaluate-chunk-below-min", EVALUATE, "rows = np.arange(i, i + max(count, meta.min_batch)) % total",
           "rows = np.arange(i, i + count) % total", "the last chunk below the profile's min: the evaluation crashes"),
    Mutant("evaluate-chunk-past-max", EVALUATE, "batch = min(max(batch, meta.min_batch), meta.max_batch)",
           "batch = max(batch, meta.min_batch)", "chunks past the profile's max: refused by every runner"),
    # -- TensorRT builds taking turns on a GPU ----------------------------------------------------------
    Mutant("build-slots-one-too-many", "model/backends/tensorrt/build_slots.py", "for k in range(count)]",
           "for k in range(count + 1)]", "one more build at once than asked on each GPU (the cold run's contention)",
           tests=("tests/test_build_slots.py",)),
    Mutant("build-slots-per-gpu-ignored", "model/backends/tensorrt/build_slots.py", 'folder / f"{stem}-{k}.lock"',
           'folder / f"any-{k}.lock"', "builds on two GPUs of one host wait for each other",
           tests=("tests/test_build_slots.py",)),
    # -- ONNX Runtime sessions past a native crash -------------------------------------------------------
    Mutant("ort-session-float16-not-probed", "model/backends/ort_session.py", "    if not holds_float16(graph):\n",
           "    if True:\n", "a float16 graph that crashes ONNX Runtime takes the whole run down (SIGSEGV)",
           tests=("tests/test_ort_session.py",)),
    Mutant("ort-session-crash-taken-as-survived", "model/backends/ort_session.py", "        if code >= 0:\n",
           "        if code >= -11:\n", "a setting that crashed the child is the one the session is made with",
           tests=("tests/test_ort_session.py",)),
    Mutant("ort-session-key-drops-runtime", "model/backends/ort_session.py", '"onnxruntime": ort.__version__,',
           '"onnxruntime": "any",', "a setting found on one ONNX Runtime served to another, which may crash on it",
           tests=("tests/test_ort_session.py",)),
    disabled("cli-rows-not-kept-before-each-backend", "model/cli.py", "        if results:\n",
             "a crash in one backend (a runtime's segfault, the OOM killer) loses every row measured before it",
             tests=("tests/test_run_failures.py::test_a_process_killed_mid_run_leaves_the_rows_measured_before_it",)),
    Mutant("compare-class-axis-ignored", COMPARE, "ref, out = np.moveaxis(ref, class_axis, -1), np.moveaxis(out, class_axis, -1)",
           "pass", "a segmentation's (N, classes, H, W) judged by argmax over its width: agreement that means nothing",
           ci=True, tests=("tests/test_compare.py",)),
    Mutant("export-fixed-dims-not-stated", EXPORT, "    _state_fixed_dims(model, spec)\n", "    pass\n",
           "a segmentation's mask exported as (N, ?, H, W) where the spec says 5 classes",
           tests=("tests/test_export_checks.py",)),
    disabled("export-fixed-dims-unchecked", EXPORT, "            if fixed:\n",
             "an ONNX file with 100 classes taken for a spec of 101", tests=("tests/test_export_checks.py",)),
]
