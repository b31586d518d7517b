# The two set-up commands of the README: `make demo` and `make test`. Both create .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LINT_STAMP := $(VENV)/.lint-installed

.PHONY: setup demo test test-fast bench lint clean lerobot-env

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first: with 2.13.0 present pip keeps the local CPU wheel instead of fetching CUDA builds.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test,ray,wandb]"
	# The real openpi client for tests/integration/test_serve.py: its numpy<2 pin is stale (see docs/serving.md).
	$(BIN)/pip install -q --no-deps openpi-client==0.1.2
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m cotrain.lab.demo

test: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider --durations=5

test-fast: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider -m "not slow and not ray"

bench: $(STAMP)
	$(BIN)/python benchmarks/convert_bench.py
	$(BIN)/python benchmarks/loader_bench.py
	$(BIN)/python benchmarks/train_bench.py

# LeRobot 0.4.4 (the newest for Python 3.11, with pi0 / pi05) in its own environment, for the
# equivalence tests in tests/integration/test_pi_compat.py (they find it here or through $$COTRAIN_LEROBOT_PYTHON).
LEROBOT_VENV := .venv-lerobot
PY311 ?= python3.11

lerobot-env: $(LEROBOT_VENV)/.installed

$(LEROBOT_VENV)/.installed:
	test -d $(LEROBOT_VENV) || $(PY311) -m venv $(LEROBOT_VENV)
	$(LEROBOT_VENV)/bin/pip install -q --upgrade pip
	$(LEROBOT_VENV)/bin/pip install -q torch==2.9.1 torchvision==0.24.1
	$(LEROBOT_VENV)/bin/pip install -q 'lerobot[smolvla]==0.4.4'
	touch $@

$(LINT_STAMP): $(STAMP)
	$(BIN)/pip install -q -e ".[lint]"
	touch $(LINT_STAMP)

# ruff (rules in pyproject.toml) and mypy (strict on mix/ and the dataset contract). The tree is not
# ruff-formatted, so `ruff format --check` is not run.
lint: $(LINT_STAMP)
	status=0; $(BIN)/ruff check . || status=1; $(BIN)/mypy || status=1; exit $$status

clean:
	rm -rf $(VENV) demo-out .pytest_cache
