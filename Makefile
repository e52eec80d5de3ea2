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

## up: install, then playbooks/deploy.yml on the local inventory (SQLite, echo provider) + checks
up: $(STAMP)
	@$(PY) scripts/local.py up --root $(RUN_DIR)/local

## down: stop the local gateway (data stays in .run/local)
down:
	@test -x $(PY) && $(PY) scripts/local.py down --root $(RUN_DIR)/local || true

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
	$(PY) -m bench.failover

clean: down
	rm -rf $(RUN_DIR) build dist *.egg-info

-include mk/*.mk
