# quijote-embeddings: `make run` trains on Don Quijote, `make test` runs the test suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check --quiet
export PREFECT_SERVER_ANALYTICS_ENABLED := false

.PHONY: install run test lint bench clean serve stop

install: $(VENV)/.installed

# The locked set (requirements.lock) first, then the project itself without dependencies.
$(VENV)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -r requirements.lock
	$(PIP) install --no-deps -e .
	touch $@

run: install
	$(BIN)/quijote run

test: install lint
	$(BIN)/pytest -n 2  # two worker processes (pytest-xdist)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# A local Prefect server (127.0.0.1:$(PORT), database in $$QUIJOTE_HOME/prefect), the
# deployment from prefect.yaml and a process worker; `make stop` stops exactly those.
PORT ?= 4200

serve: install
	$(BIN)/python -m cli.serve start --port $(PORT)

stop:
	$(BIN)/python -m cli.serve stop

clean:
	rm -rf $(VENV) data
