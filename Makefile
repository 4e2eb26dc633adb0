# Two commands for a fresh machine:  make demo  (set up + main job on the synthetic default)
#                                    make test  (set up + lint + the whole test suite)
# While editing:                     make test-quick  (lint + the tests not marked slow, slurm,
#                                    ddp or browser; see README "Tests")
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo_outputs
QUICK ?= not slow and not slurm and not ddp and not browser
# one xdist worker per core: the quick tests do not wait on Slurm/DDP jobs, and every worker
# pays ~15 s of CPU importing torch & co. to collect the tests
QUICK_WORKERS ?= $(shell nproc 2>/dev/null || sysctl -n hw.ncpu)

.PHONY: setup test test-quick lint demo bench clean

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

test-quick: setup lint
	$(BIN)/python -m pytest -m "$(QUICK)" -n $(QUICK_WORKERS)

demo: setup
	DEMO_DIR=$(DEMO_DIR) $(BIN)/python scripts/demo.py

clean:
	rm -rf outputs multirun $(DEMO_DIR) .pytest_cache
