# Two commands for a fresh machine:  make demo  (set up + main job on the synthetic default)
#                                    make test  (set up + lint + the whole test suite)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo_outputs

.PHONY: setup test lint demo bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -e ".[fast,dev]"
	touch $(STAMP)

setup: $(STAMP)

lint: setup
	$(BIN)/ruff check .

test: setup lint
	$(BIN)/python -m pytest

demo: setup
	DEMO_DIR=$(DEMO_DIR) PY=$(BIN)/python bash scripts/demo.sh

clean:
	rm -rf outputs multirun $(DEMO_DIR) .pytest_cache
