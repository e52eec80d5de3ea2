# Pulumi program: offline render of every stack and the checkov scan of the manifests.
# Included by the main Makefile (include mk/*.mk).

VENV ?= .venv
CHECKOV_VENV ?= .venv-checkov
PULUMI_STACKS ?= local staging prod
RENDER_DIR ?= out/render

.PHONY: render checkov pulumi-test

## render: write out/render/<stack>/{manifests/,resources.json} for every stack (no CLI, no cloud)
render:
	for stack in $(PULUMI_STACKS); do \
		$(VENV)/bin/python -m stacks render --stack $$stack --out $(RENDER_DIR)/$$stack || exit 1; \
	done

# checkov pins its own dependency versions (packaging, boto3, ...): it lives in its own venv.
$(CHECKOV_VENV)/bin/checkov:
	python3 -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet 'checkov>=3,<4'

## checkov: scan the rendered manifests (zero failed checks expected; skips carry their reason)
checkov: $(CHECKOV_VENV)/bin/checkov render
	$(CHECKOV_VENV)/bin/checkov -d $(RENDER_DIR) --framework kubernetes --skip-download --compact

# `make test` runs tests/stacks, whose checkov test needs the scanner installed first.
test: $(CHECKOV_VENV)/bin/checkov

## pulumi-test: the Pulumi program's tests alone (mocks, schema, checkov, policy validators)
pulumi-test: $(CHECKOV_VENV)/bin/checkov
	$(VENV)/bin/python -m pytest tests/stacks -q
