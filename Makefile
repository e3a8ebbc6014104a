# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv when missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SHARED ?= $(abspath ../shared)

# The demo uses the shared models when they sit beside the project, else downloads what it needs (pinned SHA-256).
# The tests use the shared test data (models, photos, datasets) and download nothing: without it they skip, with the reason.
ifneq ($(wildcard $(SHARED)/models),)
export LASTLAYER_MODELS ?= $(SHARED)/models
export LASTLAYER_SHARED ?= $(SHARED)
endif

.PHONY: demo test lint bench fuzz clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The demo needs only the package itself; the tests also need the extras and the test tools.
$(VENV)/.demo-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.test-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.demo-installed

demo: $(VENV)/.demo-installed
	$(BIN)/lastlayer demo --output lastlayer-demo

test: $(VENV)/.test-installed
	@test -d "$${LASTLAYER_SHARED:-$(SHARED)}/models" || echo "make test: no shared test data in $(SHARED) (set SHARED=... or LASTLAYER_SHARED): the tests that need it will be skipped"
	$(BIN)/ruff check src tests benchmarks examples fuzz scripts
	$(BIN)/python -m pytest

# All benchmarks (embed, warm, softmax, imprint, accuracy, live, serve, report, validate) with their durations;
# under 10 minutes on 2 cores. BENCH_ARGS=--quick for fewer rounds.
bench: $(VENV)/.test-installed
	$(BIN)/python benchmarks/run_all.py $(BENCH_ARGS)

fuzz: $(VENV)/.test-installed
	$(BIN)/python fuzz/run.py --count 2000 --seed 0

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .ruff_cache
