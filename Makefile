# The two commands: `make up` (run the gateway locally) and `make test` (everything).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
RUN_DIR := .run
STAMP := $(VENV)/.installed

.PHONY: up down test lint bench clean

$(STAMP): requirements.txt pyproject.toml $(wildcard requirements-*.txt)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

## up: install, then start the gateway on the embedded default (SQLite, echo provider)
up: $(STAMP)
	@$(PY) scripts/local.py up --run-dir $(RUN_DIR)

## down: stop the local gateway (data stays in .run/)
down:
	@test -x $(PY) && $(PY) scripts/local.py down --run-dir $(RUN_DIR) || true

## lint: ruff over the whole tree
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

## test: lint, then the whole pytest suite (PostgreSQL at 127.0.0.1:5432 required)
test: lint
	$(PY) -m pytest

## bench: gateway vs direct upstream, printed (needs nginx and wrk: see bench/README.md)
bench: $(STAMP)
	$(PY) -m bench

clean: down
	rm -rf $(RUN_DIR) build dist *.egg-info

-include mk/*.mk
