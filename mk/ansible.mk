# Runbooks: ansible-lint (production profile, offline) and the playbook tests.
# Included by the main Makefile (include mk/*.mk).

VENV ?= .venv

.PHONY: ansible-lint playbook-test

## ansible-lint: the playbooks under the production profile (.ansible-lint)
ansible-lint:
	$(VENV)/bin/ansible-lint --offline -p playbooks/

# `make test` lints the runbooks inside the suite (tests/playbooks/test_lint.py), where the run
# overlaps the other tests instead of holding them back.

## playbook-test: the runbook playbooks run for real against the local inventory
playbook-test:
	$(VENV)/bin/python -m pytest tests/playbooks -q
