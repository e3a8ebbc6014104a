# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv when missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SHARED ?= $(abspath ../shared)

# Use the shared test models when they sit beside the project; otherwise models are downloaded.
ifneq ($(wildcard $(SHARED)/models),)
export LASTLAYER_MODELS ?= $(SHARED)/models
endif

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/lastlayer demo --output lastlayer-demo

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/embed.py
	$(BIN)/python benchmarks/softmax.py
	$(BIN)/python benchmarks/imprint.py
	$(BIN)/python benchmarks/accuracy.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .ruff_cache
