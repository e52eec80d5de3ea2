# The two commands: `make up` (run the gateway locally) and `make test` (everything);
# `make check` is the everyday loop (under a minute). Debian packages come from
# scripts/system-deps.sh, Python packages from the hashed lock files (`make lock`).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
RUN_DIR := .run
STAMP := $(VENV)/.installed
# make test's pytest-xdist workers; tests/README.md says how tests are grouped onto them.
TEST_WORKERS ?= 4
PYTEST_ARGS ?=

.PHONY: up down check test lint bench clean lock lock-upgrade system-deps-up system-deps-bench system-deps-test

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

# Debian packages per profile: installed as root, named (with the apt-get line) otherwise.
system-deps-up system-deps-bench system-deps-test: system-deps-%:
	@scripts/system-deps.sh $*

## up: haproxy/supervisor (as root), .venv, then deploy.yml on the local inventory (SQLite, echo provider) + checks
##     GATEWAY_PORT=18080 GATEWAY_ROOT=/tmp/gw make up: another load balancer port (instances on the next two) and root
up: system-deps-up $(STAMP)
	@$(PY) scripts/local.py up --root $(or $(GATEWAY_ROOT),$(RUN_DIR)/local) $(if $(GATEWAY_PORT),--port $(GATEWAY_PORT))

## down: stop the local gateway (data stays in .run/local)
down:
	@test -x $(PY) && $(PY) scripts/local.py down --root $(or $(GATEWAY_ROOT),$(RUN_DIR)/local) || true

## lint: ruff over the whole tree
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

## check: the everyday loop, under a minute: ruff, then the in-process tests (tests/unit)
check: lint
	$(PY) -m pytest tests/unit -q

## test: Debian packages (as root), lint, then the whole suite on $(TEST_WORKERS) workers (PostgreSQL at 127.0.0.1:5432);
##       the 30 slowest tests are printed at the end (where the time goes)
test: system-deps-test lint
	$(PY) -m pytest -n $(TEST_WORKERS) --durations=30 $(PYTEST_ARGS)

## bench: gateway vs direct upstream, printed (needs nginx and wrk: see bench/README.md)
bench: system-deps-bench $(STAMP)
	$(PY) -m bench
	$(PY) -m bench.failover

clean: down
	rm -rf $(RUN_DIR) build dist *.egg-info

-include mk/*.mk
