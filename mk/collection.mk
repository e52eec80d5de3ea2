# The runbooks as an Ansible collection: playbooks/ assembled into
# build/collection and built into dist/llm_gateway-runbooks-<version>.tar.gz.
# Included by the main Makefile (include mk/*.mk).

VENV ?= .venv

.PHONY: collection

## collection: build the runbooks collection tarball into dist/ (see docs/runbooks/README.md)
collection:
	$(VENV)/bin/python scripts/build_collection.py --staging build/collection --output dist
