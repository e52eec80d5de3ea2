"""Each stack's program runs once per session under mocks; tests assert on the captured resources."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from stacks.offline import OfflineRun, load_stack_config, run_stack
from stacks.render import write_render
from stacks.settings import PROJECT

STACKS = ("local", "staging", "prod")


@pytest.fixture(scope="session")
def runs() -> dict[str, OfflineRun]:
    return {stack: run_stack(stack) for stack in STACKS}


@pytest.fixture(scope="session")
def render_root(runs: dict[str, OfflineRun], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One directory per stack (ROOT/<stack>/manifests, ROOT/<stack>/resources.json)."""
    root = tmp_path_factory.mktemp("render")
    for stack, run in runs.items():
        write_render(run, root / stack)
    return root


def raw_settings(stack: str) -> dict[str, Any]:
    """A stack file's project config as the raw dict that parse_settings validates."""
    config, _ = load_stack_config(stack)
    prefix = f"{PROJECT}:"
    raw = {}
    for key, value in config.items():
        if key.startswith(prefix):
            name = key.removeprefix(prefix)
            raw[name] = (
                value if name in ("environment", "namespace", "image", "imageTag") else json.loads(value)
            )
    return raw


def gateway_config(run: OfflineRun) -> dict[str, Any]:
    return yaml.safe_load(run.one("ConfigMap", "llm-gateway-gateway-config").values["data"]["config.yaml"])


def secret_values(run: OfflineRun) -> dict[str, str]:
    """The gateway's secret env values as the mocks produced them."""
    if run.by_type("SecretVersion"):
        return json.loads(run.one("SecretVersion").values["secretString"])
    return run.one("Secret", "llm-gateway-secrets-env").values["stringData"]
