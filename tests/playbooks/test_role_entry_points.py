"""Every role entry point a runbook or role calls has an argument spec Ansible applies.

Ansible (ansible/playbook/role/__init__.py, ``_prepend_validation_task``) looks the
spec up by ``tasks_from`` exactly as written: ``tasks_from: drain.yml`` finds no
``drain`` spec and silently validates nothing. So every call names the entry point
without ``.yml`` and every meta/argument_specs.yml is keyed the same way. The static
tests read every call in playbooks/ (the target roles included, once per target for
``target_{{ gateway_target }}``); the run tests prove with real ansible-playbook runs
that each target role's entry points are validated, and fail with Ansible's message.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.playbooks.conftest import run_on_localhost
from tests.support.ansible_yaml import PLAYBOOKS, ROLES, role_specs, tasks, yaml_files
from tests.support.processes import REPO

ROLE_NAMES = sorted(path.name for path in ROLES.iterdir() if (path / "tasks").is_dir())
TARGET_ROLES = [role for role in ROLE_NAMES if role.startswith("target_")]
INCLUDES = ("ansible.builtin.include_role", "ansible.builtin.import_role")


def _calls() -> list[tuple[str, str, str]]:
    """(file, role, tasks_from) of every include_role/import_role under playbooks/."""
    calls = []
    for path in yaml_files():
        for task in tasks(yaml.safe_load(path.read_text()) or []):
            for key in (*INCLUDES, "include_role", "import_role"):
                include = task.get(key)
                if not isinstance(include, dict):
                    continue
                name = str(include["name"])
                roles = [name]
                if "{{" in name:  # target_{{ gateway_target }}: every target implements the entry point
                    assert name.replace(" ", "") == "target_{{gateway_target}}", f"{path}: {name}"
                    roles = TARGET_ROLES
                for role in roles:
                    calls.append((str(path.relative_to(REPO)), role, str(include.get("tasks_from", "main"))))
    return calls


def test_the_scan_finds_the_calls() -> None:
    calls = {(role, entry) for _, role, entry in _calls()}
    assert {("loadbalancer", "drain"), ("target_hosts", "endpoints"), ("target_docker", "run_command")} <= (
        calls
    )
    assert ("target_kubernetes", "write_secrets") in calls and ("database", "migrate") in calls
    assert len(_calls()) > 100


def test_every_tasks_from_has_a_matching_argument_spec() -> None:
    missing = [
        f"{where}: {role} tasks_from {entry}"
        for where, role, entry in _calls()
        if entry not in role_specs(role)
    ]
    assert not missing, "Ansible validates nothing for these calls:\n" + "\n".join(missing)


def test_no_call_names_an_entry_point_with_its_file_extension() -> None:
    with_extension = [f"{where}: {role} {entry}" for where, role, entry in _calls() if entry.endswith(".yml")]
    assert not with_extension, with_extension


@pytest.mark.parametrize("role", sorted(set(ROLE_NAMES) - set(TARGET_ROLES)))
def test_every_task_file_of_a_role_has_an_argument_spec(role: str) -> None:
    specs = role_specs(role)
    for task_file in (ROLES / role / "tasks").glob("*.yml"):
        assert task_file.stem in specs, f"{role}/tasks/{task_file.name} has no argument spec"
    for entry in specs:
        assert (ROLES / role / "tasks" / f"{entry}.yml").is_file(), f"{role}: spec {entry} without tasks"


@pytest.mark.parametrize("role", ROLE_NAMES)
def test_every_role_has_its_metadata_and_declares_its_dependencies(role: str) -> None:
    """Galaxy metadata; other roles are included explicitly (include_role), never as meta dependencies."""
    meta = yaml.safe_load((ROLES / role / "meta" / "main.yml").read_text())
    assert meta["galaxy_info"]["role_name"] == role
    assert meta["dependencies"] == []


def _readers(name: str) -> tuple[set[str], list[Path]]:
    """(roles whose files read the variable, runbook files that read it)."""
    word = re.compile(rf"\b{name}\b")
    roles = {
        role
        for role in ROLE_NAMES
        if any(word.search(p.read_text()) for p in (ROLES / role).rglob("*") if p.suffix in (".yml", ".j2"))
    }
    files = [*PLAYBOOKS.glob("*.yml"), *(PLAYBOOKS / "tasks").glob("*.yml")]
    runbooks = [p for p in files if word.search(p.read_text())]
    return roles, runbooks


def test_a_variable_only_one_role_reads_is_in_that_roles_defaults() -> None:
    site = yaml.safe_load((PLAYBOOKS / "group_vars" / "all.yml").read_text())
    misplaced = []
    for name in site:
        roles, runbooks = _readers(name)
        if len(roles) == 1 and not runbooks:
            misplaced.append(f"{name}: only {roles.pop()} reads it (move it to its defaults/main.yml)")
    assert not misplaced, misplaced
    for role in ROLE_NAMES:
        defaults = ROLES / role / "defaults" / "main.yml"
        for name in (yaml.safe_load(defaults.read_text()) or {}) if defaults.is_file() else {}:
            assert name not in site, f"{name}: both in group_vars/all.yml and {role}'s defaults"


# --- real runs ------------------------------------------------------------------------

# A value of the right type for each required option of the target interface.
_VALID = {"dict": {"GATEWAY_SEED_KEY": "sk-x"}, "str": "1.0.0", "list": ["version"], "int": 3, "bool": True}


def _play(role: str, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"name": f"Entry points of {role}", "hosts": "localhost", "gather_facts": False, "tasks": tasks}]


def _include(role: str, entry: str, variables: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "name": f"{role} {entry}",
        "ansible.builtin.include_role": {"name": role, "tasks_from": entry},
        "vars": variables,
        "tags": ["always"],
        **extra,
    }


def _run(tmp_path: Path, name: str, play: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    path = tmp_path / f"{name}.yml"
    path.write_text(yaml.safe_dump(play, sort_keys=False))
    # --tags always: the validation task Ansible prepends is tagged always, the role's own
    # tasks are not, so only the validation runs (no deployment needed).
    return run_on_localhost(path, "--tags", "always")


@pytest.mark.slow
@pytest.mark.parametrize("role", TARGET_ROLES)
def test_every_target_entry_point_is_validated_when_called(role: str, tmp_path: Path) -> None:
    specs = role_specs(role)
    tasks = []
    for entry, spec in specs.items():
        required = {
            name: _VALID[option["type"]]
            for name, option in (spec.get("options") or {}).items()
            if option.get("required")
        }
        tasks.append(_include(role, entry, required))
    done = _run(tmp_path, "valid", _play(role, tasks))
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    for entry in specs:
        validated = f"TASK [{role} : Validating arguments against arg spec '{entry}'"
        assert validated in output, (entry, output[-4000:])
    assert re.search(r"^localhost\s+:\s+ok=\d+\s+changed=0\s+unreachable=0\s+failed=0", output, re.M), output


_WRONG = [
    # (entry point, variables, what Ansible's message says)
    ("write_secrets", {}, "missing required arguments: target_secret_updates"),
    ("run_command", {"target_command": {"not": "a list"}}, "target_command"),
    ("logs", {"target_log_lines": "a few"}, "target_log_lines"),
    ("restore_database", {}, "missing required arguments: restore_backup"),
]


@pytest.mark.slow
@pytest.mark.parametrize("role", TARGET_ROLES)
@pytest.mark.parametrize(("entry", "variables", "message"), _WRONG, ids=[w[0] for w in _WRONG])
def test_a_missing_or_mistyped_variable_fails_with_the_argument_spec_message(
    role: str, entry: str, variables: dict[str, Any], message: str, tmp_path: Path
) -> None:
    marker = tmp_path / "ran-past-validation"
    tasks = [
        _include(role, entry, variables),
        {
            "name": "Reached only if the validation let the call through",
            "ansible.builtin.file": {"path": str(marker), "state": "touch", "mode": "0600"},
            "tags": ["always"],
        },
    ]
    done = _run(tmp_path, entry, _play(role, tasks))
    output = done.stdout + done.stderr
    assert done.returncode != 0, output[-4000:]
    assert f"Validating arguments against arg spec '{entry}'" in output, output[-4000:]
    assert "Validation of arguments failed" in output and message in output, output[-4000:]
    if "missing" not in message:
        assert re.search(r"is of type .* and we were unable to convert to (int|list)", output), output[-4000:]
    assert not marker.exists()
