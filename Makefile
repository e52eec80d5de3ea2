# The two commands: `make up` (run the gateway locally) and `make test` (everything).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
RUN_DIR := .run
STAMP := $(VENV)/.installed

.PHONY: up down test lint bench clean lock lock-upgrade

# .venv holds exactly requirements.lock (hashes checked), then the project itself, editable.
$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes -r requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

# Both lock files from the ranges in pyproject.toml (runtime) and requirements.txt (tooling,
# tests); the runtime one is the image's, constrained to the same versions. Existing pins are
# kept unless `make lock-upgrade`. uv is the only thing installed without a hash, and only here.
LOCK_FLAGS = --quiet --universal --python-version 3.11 --generate-hashes --custom-compile-command "make lock"
## lock: regenerate requirements.lock and requirements-runtime.lock (after changing a range)
lock:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	test -x $(VENV)/bin/uv || $(PY) -m pip install --quiet 'uv>=0.5'
	$(VENV)/bin/uv pip compile $(LOCK_FLAGS) $(LOCK_UPGRADE) pyproject.toml requirements.txt -o requirements.lock
	$(VENV)/bin/uv pip compile $(LOCK_FLAGS) pyproject.toml -c requirements.lock -o requirements-runtime.lock

## lock-upgrade: the same, moving every pin to the newest version the ranges allow
lock-upgrade: LOCK_UPGRADE = --upgrade
lock-upgrade: lock

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
