# Everything is installed into .venv by this file; nothing is assumed but
# Python 3.10+ and make.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install run test check clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## run: migrate an embedded SQLite file and let a worker process real jobs
run: $(STAMP)
	$(BIN)/python examples/quickstart.py

## test: the whole test suite (the command CI runs)
test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## check: lint + strict type check
check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
