# Everything is installed into .venv by this file; nothing is assumed but
# Python 3.10+ and make.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install run test check clean bench bench-peers web-test-deps django6-venv hrana-test-deps postgresql-server

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

# The real Turso/libSQL clients that tests/hrana/test_conformance_*.py drive against
# the test Hrana server: @libsql/client and @tursodatabase/serverless, pinned by
# tests/hrana/clients/package-lock.json.
HRANA_CLIENTS := tests/hrana/clients/node_modules/.package-lock.json

$(HRANA_CLIENTS): tests/hrana/clients/package-lock.json
	command -v npm >/dev/null || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq nodejs npm; }
	cd tests/hrana/clients && npm ci --no-audit --no-fund --loglevel=error
	touch $@

hrana-test-deps: $(HRANA_CLIENTS)

$(CHROMIUM):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium

web-test-deps: $(NODE_CLIENT) $(CHROMIUM)

# -- Django 6.1 (tests/django, run again by tests/django/test_django6.py) ---------
# .venv runs durably.contrib.django on Django 5.2 and the django-tasks backport;
# Django 6 needs Python 3.12+, so its run has a venv of its own, made with the
# first such interpreter found (PYTHON312=/path/to/python to choose one).
# Without one, its tests are skipped with one line (with CI=true: an error).
DJANGO6_VENV  := .venv-django6
DJANGO6_STAMP := $(DJANGO6_VENV)/.installed-stamp
PYTHON312 ?= $(shell for p in python3.14 python3.13 python3.12 $$HOME/.pyenv/versions/3.1[234]*/bin/python; do \
	$$p -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1 && { command -v $$p; break; }; done)

# The tests' root conftest.py starts PostgreSQL servers too: hence the postgresql extra.
$(DJANGO6_STAMP): pyproject.toml Makefile
	@if [ -z "$(PYTHON312)" ]; then \
		if [ "$$CI" = true ]; then echo "Django 6.1 tests: no Python 3.12+ found (set PYTHON312=...)" >&2; exit 1; fi; \
		echo "Django 6.1 tests skipped: no Python 3.12+ found (set PYTHON312=/path/to/python3.12)"; \
	else \
		$(PYTHON312) -m venv $(DJANGO6_VENV) && \
		$(DJANGO6_VENV)/bin/python -m pip install --quiet --upgrade pip && \
		$(DJANGO6_VENV)/bin/python -m pip install --quiet -e '.[postgresql]' 'django==6.1.*' 'pytest>=8' 'pytest-timeout>=2.3' && \
		touch $@; \
	fi

django6-venv: $(DJANGO6_STAMP)

# -- the PostgreSQL suite's server (tests/postgres) -------------------------------
# The tests start a throwaway server of their own (initdb + pg_ctl in a temporary
# directory); they need only its binaries: Debian's postgresql, installed here if
# no initdb is found on PATH or in /usr/lib/postgresql/*/bin.
postgresql-server:
	@command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq postgresql; }

## test: the whole test suite (the command CI runs)
# The suite runs in TEST_WORKERS processes (pytest-xdist; 0: in this one): most of its time
# is spent waiting on servers, worker processes and lease timings, not on the CPU. Each
# module runs whole, in order, in one of them (--dist loadfile), as it would alone: some
# modules share a server and its state between their tests. The few tests marked `alone`
# measure time (event loop lag, a shutdown deadline) and run afterwards, in one process.
# PYTEST_ARGS go to both runs (e.g. PYTEST_ARGS=-x).
TEST_WORKERS ?= 3

test: $(STAMP) web-test-deps hrana-test-deps django6-venv postgresql-server
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --durations=25 -m "not alone" $(PYTEST_ARGS)
	$(BIN)/python -m pytest -m alone $(PYTEST_ARGS)

## check: lint + strict type check
check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) $(PEERS_VENV) $(DJANGO6_VENV) tests/web/client/node_modules tests/hrana/clients/node_modules build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache

# -- benchmark (docs/performance.md) ------------------------------------------
# Peers (DBOS, huey, procrastinate) live in their own venv so they never leak into .venv.
# It has durably's postgresql extra: DBOS and procrastinate also run on the
# PostgreSQL server the bench starts (--drivers postgresql).
PEERS_VENV  := .venv-peers
PEERS_BIN   := $(PEERS_VENV)/bin
PEERS_STAMP := $(PEERS_VENV)/.installed-stamp
PEERS       ?= dbos==3.4.0 huey==3.5.4 procrastinate==3.10.0

$(PEERS_STAMP): pyproject.toml
	$(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_BIN)/python -m pip install --quiet --upgrade pip
	$(PEERS_BIN)/python -m pip install --quiet -e '.[postgresql]' $(PEERS)
	touch $(PEERS_STAMP)

## bench: durably against the stdlib sqlite3 floor, a markdown table (BENCH_ARGS=--quick)
bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

## bench-peers: the same, plus DBOS and huey, from .venv-peers
bench-peers: $(PEERS_STAMP)
	$(PEERS_BIN)/python -m bench $(BENCH_ARGS)
