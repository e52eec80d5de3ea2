"""Every role entry point a runbook or role calls has an argument spec Ansible applies.

Ansible looks the spec up by `tasks_from` exactly as written (``drain.yml`` and
``drain`` are different entry points), and silently validates nothing when the
key is missing; this fails instead. The target_* roles are written against the
target interface (test_target_interface.py) and are not checked here.
"""

from __future__ import annotations

import re

import yaml

from tests.support.processes import REPO

ROLES = REPO / "playbooks" / "roles"
CHECKED = ("config", "service", "release", "loadbalancer", "checks", "database", "maintenance")
_INCLUDE = re.compile(
    r"(?:include|import)_role:\s*\n(?P<body>(?:[ \t]+\S.*\n)+)",
)


def _calls() -> set[tuple[str, str]]:
    calls: set[tuple[str, str]] = set()
    files = [
        *(REPO / "playbooks").glob("*.yml"),
        *(REPO / "playbooks" / "tasks").glob("*.yml"),
        *ROLES.rglob("*.yml"),
    ]
    for path in files:
        for match in _INCLUDE.finditer(path.read_text()):
            body = match.group("body")
            name = re.search(r"^\s+name:\s*[\"']?([^\"'\n]+)", body, re.M)
            tasks_from = re.search(r"^\s+tasks_from:\s*(\S+)", body, re.M)
            if name:
                calls.add((name.group(1).strip(), tasks_from.group(1) if tasks_from else "main"))
    return calls


def test_every_called_entry_point_has_an_argument_spec() -> None:
    calls = {(role, entry) for role, entry in _calls() if role in CHECKED}
    assert ("loadbalancer", "drain.yml") in calls and ("release", "main") in calls  # the scan finds calls
    missing = []
    for role, entry in sorted(calls):
        specs = yaml.safe_load((ROLES / role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
        if entry not in specs:
            missing.append(f"{role}: tasks_from {entry}")
    assert not missing, missing


def test_every_task_file_of_a_role_has_an_argument_spec() -> None:
    for role in CHECKED:
        specs = yaml.safe_load((ROLES / role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
        for tasks in (ROLES / role / "tasks").glob("*.yml"):
            entry = "main" if tasks.name == "main.yml" else tasks.name
            assert entry in specs, f"{role}/tasks/{tasks.name} has no argument spec"
