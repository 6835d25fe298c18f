# The two commands a user needs: `make demo` and `make test`. Both set up .venv first,
# from the hash-pinned lock files; `make lock` regenerates those from pyproject.toml.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-mqm

# The locks are for CPython 3.11 on Linux x86_64 (the Docker image's python:3.11-slim is
# Debian, glibc 2.36). uv keeps the pins already in a lock file unless told otherwise:
# `make lock UV_ARGS=--upgrade` (or `UV_ARGS='--upgrade-package numpy'`) moves them.
UV_VERSION ?= 0.13.9
UV_ARGS ?=
LOCK_FLAGS := --quiet --generate-hashes --python-version 3.11 \
	--python-platform x86_64-manylinux_2_28 \
	--custom-compile-command 'make lock  (uv pip compile --generate-hashes for CPython 3.11 on Linux x86_64; see Makefile)'

# Run the PostgreSQL half of the store tests when a server answers on loopback.
MQM_TEST_POSTGRES_URL ?= $(shell pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null && \
	echo postgresql+psycopg://postgres@127.0.0.1:5432/postgres)
export MQM_TEST_POSTGRES_URL

.PHONY: demo test lint typecheck setup lock mutants clean dashboard screenshots

setup: $(STAMP)

# One venv serves the demo and the tests: the test lock is the runtime lock plus the
# [test] extra, at the same versions (it is resolved with requirements.lock as constraints).
# --no-deps: the lock is already the whole resolved set, and without it pip 23.2 (the one
# Python 3.11.7 brings) refuses a locked package that another one asks for with an extra
# (evidently needs pandas[parquet]; pip issue 9644). `pip check` then proves the set whole.
$(STAMP): requirements.lock requirements-test.lock pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else \
		"mqm needs Python 3.11 or newer; set PYTHON=python3.11")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --require-hashes --no-deps -r requirements-test.lock
	$(PY) -m pip install -q --no-deps -e .
	$(PY) -m pip check
	touch $(STAMP)

# Runtime first, then the test set constrained to the runtime pins, so both agree.
lock:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q uv==$(UV_VERSION)
	$(VENV)/bin/uv pip compile $(LOCK_FLAGS) $(UV_ARGS) pyproject.toml -o requirements.lock
	$(VENV)/bin/uv pip compile $(LOCK_FLAGS) $(UV_ARGS) pyproject.toml --extra test \
		-c requirements.lock -o requirements-test.lock

demo: $(STAMP)
	$(VENV)/bin/mqm demo

dashboard: $(STAMP)
	$(VENV)/bin/mqm dashboard

# The README's dashboard screenshots (docs/dashboard-*.png) of a fresh demo store; needs
# /usr/bin/chromium (apt-get install chromium).
screenshots: $(STAMP)
	$(PY) -m dashboards.screenshots

lint: $(STAMP)
	$(VENV)/bin/ruff check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# The suite in TEST_WORKERS processes (pytest-xdist): much of it waits on servers,
# browsers and subprocesses, so two overlap well even on two cores. TEST_WORKERS=0 runs
# it in this process alone.
TEST_WORKERS ?= 2
test: lint typecheck
	$(VENV)/bin/pytest -n $(TEST_WORKERS)

# Planted bugs against the tests that should catch them; by hand, not in CI (minutes).
mutants: $(STAMP)
	$(PY) bench/mutants.py

clean:
	rm -rf $(VENV) mqm.db mqm.db-wal mqm.db-shm .pytest_cache .ruff_cache .mypy_cache
