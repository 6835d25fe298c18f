# The two commands a user needs: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-mqm

# Run the PostgreSQL half of the store tests when a server answers on loopback.
MQM_TEST_POSTGRES_URL ?= $(shell pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null && \
	echo postgresql+psycopg://postgres@127.0.0.1:5432/postgres)
export MQM_TEST_POSTGRES_URL

.PHONY: demo test lint setup clean dashboard screenshots

setup: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else \
		"mqm needs Python 3.11 or newer; set PYTHON=python3.11")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

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

test: lint
	$(VENV)/bin/pytest

clean:
	rm -rf $(VENV) mqm.db mqm.db-wal mqm.db-shm .pytest_cache .ruff_cache
