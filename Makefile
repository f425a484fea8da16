# Two commands do all the set-up: `make demo` and `make test`. Each creates .venv when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint format bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first: the PyPI builds run on CPU and carry the torchvision operators sam2 needs.
	$(PY) -m pip install --quiet torch==2.15.0 torchvision==0.29.2
	# sam2 builds against the installed torch; its CUDA extension (hole filling only) is skipped.
	SAM2_BUILD_CUDA=0 $(PY) -m pip install --quiet --no-build-isolation sam2==1.1.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/vrsjax demo

# Two processes: in one process of ~1,100 tests, XLA's CPU compiler segfaulted at the same SFT test twice
# (2026-12-04; each half passes alone). The second half is the training loop, rollout, server and services.
TEST_LATER := tests/rl tests/rollout tests/serve tests/services
test: $(STAMP)
	$(PY) -m pytest tests -q $(addprefix --ignore=,$(TEST_LATER))
	$(PY) -m pytest $(TEST_LATER) -q

lint: $(STAMP)
	$(VENV)/bin/ruff check vrsjax converters tests benchmarks
	$(VENV)/bin/ruff format --check vrsjax converters tests benchmarks

format: $(STAMP)
	$(VENV)/bin/ruff format vrsjax converters tests benchmarks
	$(VENV)/bin/ruff check --fix vrsjax converters tests benchmarks

# every benchmark side by side, regenerating BENCHMARKS.md; e.g. make bench BENCH_ARGS="--quick --only metrics"
bench: $(STAMP)
	$(VENV)/bin/vrsjax bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
