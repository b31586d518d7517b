# The two set-up commands of the README: `make demo` and `make test`. Both create .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LINT_STAMP := $(VENV)/.lint-installed

.PHONY: setup demo test test-fast bench lint clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first: with 2.13.0 present pip keeps the local CPU wheel instead of fetching CUDA builds.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test,ray,wandb]"
	# The real openpi client for tests/test_serve.py: its numpy<2 pin is stale (see docs/serving.md).
	$(BIN)/pip install -q --no-deps openpi-client==0.1.2
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m cotrain.demo

test: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider

test-fast: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider -m "not slow and not ray"

bench: $(STAMP)
	$(BIN)/python benchmarks/convert_bench.py
	$(BIN)/python benchmarks/loader_bench.py
	$(BIN)/python benchmarks/train_bench.py

$(LINT_STAMP): $(STAMP)
	$(BIN)/pip install -q -e ".[lint]"
	touch $(LINT_STAMP)

# ruff (rules in pyproject.toml) and mypy (strict on mix/ and the dataset contract). The tree is not
# ruff-formatted, so `ruff format --check` is not run. mypy sees `converters/` under its package name
# `cotrain_converters` through a link in .venv (see mypy_path in pyproject.toml).
lint: $(LINT_STAMP)
	mkdir -p $(VENV)/mypy-path
	ln -sfn $(CURDIR)/converters $(VENV)/mypy-path/cotrain_converters
	status=0; $(BIN)/ruff check . || status=1; $(BIN)/mypy || status=1; exit $$status

clean:
	rm -rf $(VENV) demo-out .pytest_cache
