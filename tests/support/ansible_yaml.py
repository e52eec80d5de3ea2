"""The runbooks' YAML walked the way Ansible reads it: shared by the static playbook tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from tests.support.processes import REPO

PLAYBOOKS = REPO / "playbooks"
ROLES = PLAYBOOKS / "roles"


def role_specs(role: str) -> dict[str, Any]:
    """The role's argument specs by entry point (meta/argument_specs.yml must exist)."""
    path = ROLES / role / "meta" / "argument_specs.yml"
    assert path.is_file(), f"{role} declares no interface: {path.relative_to(REPO)} is missing"
    return yaml.safe_load(path.read_text())["argument_specs"]


def tasks(node: Any) -> Iterator[dict[str, Any]]:
    """Every task of a playbook or task file, blocks, rescues and handlers included."""
    if isinstance(node, list):
        for item in node:
            yield from tasks(item)
    elif isinstance(node, dict):
        if "hosts" in node:
            for key in ("pre_tasks", "roles", "tasks", "post_tasks", "handlers"):
                yield from tasks(node.get(key) or [])
            return
        yield node
        for key in ("block", "rescue", "always"):
            yield from tasks(node.get(key) or [])


def yaml_files() -> list[Path]:
    """Every playbook, task file and role file under playbooks/ (inventories aside)."""
    return sorted(p for p in PLAYBOOKS.rglob("*.yml") if "inventories" not in p.parts)
