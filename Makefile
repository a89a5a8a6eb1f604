# The two commands of the README, each installing what it needs into .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: compare test mutate mutate-ci bench bench-gate gpu-gate clean
# --no-compile: byte-compiling all of torch, transformers and sympy up front doubled the install's CPU
# time (134 s against 67 s of user time, measured here); Python compiles what is imported, once, instead.
$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q --no-compile -r requirements.txt
	touch $@

compare: $(VENV)/.installed   ## the main job: PyTorch vs ONNX Runtime vs TensorRT
	$(PY) -m model compare $(ARGS)

test: $(VENV)/.installed      ## the correctness suite
	$(PY) -m pytest tests $(ARGS)

mutate: $(VENV)/.installed    ## mutation run (tools/mutants.py): does the suite catch faults in verdicts and keys?
	$(PY) tools/mutate.py $(ARGS)

mutate-ci: $(VENV)/.installed ## its CI subset, a few minutes
	$(PY) tools/mutate.py --ci $(ARGS)

bench: $(VENV)/.installed     ## latency benchmarks (pytest-benchmark)
	$(PY) -m pytest benchmarks $(ARGS)

bench-gate: $(VENV)/.installed  ## regression gate (.ci/bench-gate): BENCH_BASE=DIR compares with that checkout, else the stored baseline
	bash .ci/bench-gate $(ARGS)

gpu-gate:                      ## GPU CI: tests with --require-gpu, then the bench gate (builds its own venv)
	bash .ci/gpu-gate

clean:
	rm -rf out .pytest_cache
