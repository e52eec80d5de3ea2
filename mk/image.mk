# The gateway image (docs/docker.md). Included by the main Makefile (include mk/*.mk).

VENV ?= .venv
BASE_IMAGE ?= local/python:3.11-bookworm

.PHONY: image docker-engine hadolint

## docker-engine: make sure a Docker engine answers and the local base image exists (idempotent)
docker-engine:
	scripts/docker_engine.sh

## image: llm-gateway:<version> from a wheelhouse, built with --network none (WHEEL=, TAG= to override)
image: $(STAMP)
	$(VENV)/bin/python scripts/image.py --base-image $(BASE_IMAGE) $(if $(WHEEL),--wheel $(WHEEL)) $(if $(TAG),--tag $(TAG))

## hadolint: lint gateway_app/Dockerfile (.hadolint.yaml holds each ignore and its reason)
hadolint: $(STAMP)
	$(VENV)/bin/hadolint gateway_app/Dockerfile

lint: hadolint
