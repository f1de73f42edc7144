# Two commands a new user needs: `make run` (the backfill on the defaults) and `make test`.
PY ?= python3
VENV := .venv
ANVIL := tools/anvil/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil

.PHONY: setup run run-headless test test-fast lint bench

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

$(ANVIL): tools/anvil/package.json tools/anvil/package-lock.json
	cd tools/anvil && npm ci --silent --no-audit --no-fund
	test -x $(ANVIL)
	touch $(ANVIL)

setup: $(VENV)/.installed $(ANVIL)

run: setup
	$(VENV)/bin/backfill-console

run-headless: setup
	$(VENV)/bin/backfill-console --no-ui

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest -q -n 2 --dist worksteal

# The tests without real processes (no anvil, console CLI, workers or store), on every core.
test-fast: setup
	$(VENV)/bin/pytest -q -m "not slow" -n auto

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: setup
	$(VENV)/bin/python bench/throughput.py
