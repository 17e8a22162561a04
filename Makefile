# Everything is installed into .venv by this file; nothing is assumed but
# Python 3.10+ and make.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install run test check clean bench bench-peers web-test-deps postgresql-server

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## run: migrate an embedded SQLite file and let a worker process real jobs
run: $(STAMP)
	$(BIN)/python examples/quickstart.py

# -- what the web tests need beyond .venv (tests/web) ----------------------------
# The @coji/durably-react client, pinned by tests/web/client/package-lock.json,
# runs in Node; the dashboard tests drive Debian's chromium through Playwright
# (no browser download). Both are installed here, never assumed.
SUDO        := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
NODE_CLIENT := tests/web/client/node_modules/.package-lock.json
CHROMIUM    := /usr/bin/chromium

$(NODE_CLIENT): tests/web/client/package-lock.json
	command -v npm >/dev/null || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq nodejs npm; }
	cd tests/web/client && npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(CHROMIUM):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium

web-test-deps: $(NODE_CLIENT) $(CHROMIUM)

# -- the PostgreSQL suite's server (tests/postgres) -------------------------------
# The tests start a throwaway server of their own (initdb + pg_ctl in a temporary
# directory); they need only its binaries: Debian's postgresql, installed here if
# no initdb is found on PATH or in /usr/lib/postgresql/*/bin.
postgresql-server:
	@command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq postgresql; }

## test: the whole test suite (the command CI runs)
test: $(STAMP) web-test-deps postgresql-server
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## check: lint + strict type check
check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) $(PEERS_VENV) tests/web/client/node_modules build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache

# -- benchmark (docs/performance.md) ------------------------------------------
# Peers (DBOS, huey) live in their own venv so they never leak into .venv.
PEERS_VENV  := .venv-peers
PEERS_BIN   := $(PEERS_VENV)/bin
PEERS_STAMP := $(PEERS_VENV)/.installed-stamp
PEERS       ?= dbos==3.4.0 huey==3.5.4

$(PEERS_STAMP): pyproject.toml
	$(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_BIN)/python -m pip install --quiet --upgrade pip
	$(PEERS_BIN)/python -m pip install --quiet -e . $(PEERS)
	touch $(PEERS_STAMP)

## bench: durably against the stdlib sqlite3 floor, a markdown table (BENCH_ARGS=--quick)
bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

## bench-peers: the same, plus DBOS and huey, from .venv-peers
bench-peers: $(PEERS_STAMP)
	$(PEERS_BIN)/python -m bench $(BENCH_ARGS)
