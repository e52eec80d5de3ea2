"""The target interface, read from the files (no deployment needed).

Every target role declares the same entry points with the same options in its
meta/argument_specs.yml and has a task file for each; every runbook includes its
target only through those entry points; the runbooks that docs/runbooks/README.md
marks as supported on more than the hosts target touch nothing hosts-only; and
every task that sends the admin token, a key or a password hides itself (no_log).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.ansible_yaml import PLAYBOOKS, ROLES, role_specs, tasks, yaml_files
from tests.support.processes import REPO

TARGET_ROLES = sorted(path.name for path in ROLES.glob("target_*") if path.is_dir())
RUNBOOK_TABLE = REPO / "docs" / "runbooks" / "README.md"
TARGETS = ("hosts", "docker", "kubernetes")
# What only the hosts target may touch: its secrets file, its instance list, its load balancer.
HOSTS_ONLY = (
    "secrets.env",
    "gateway_instances",
    "gateway_root",
    "gateway_bind_host",
    "gateway_backup_dir",
    "lb_socket",
    "lb_servers",
    "tasks_from: secrets",
    "name: loadbalancer",
    "gateway_target ==",
)


def _options(entry: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The contract of each option: what a caller may pass, not how it is described."""
    keys = ("type", "required", "elements", "default", "choices")
    return {name: {k: spec.get(k) for k in keys} for name, spec in (entry.get("options") or {}).items()}


def test_the_known_targets_are_there() -> None:
    assert {"target_hosts", "target_kubernetes"} <= set(TARGET_ROLES)


@pytest.mark.parametrize("role", TARGET_ROLES)
def test_every_target_declares_the_same_entry_points_and_options(role: str) -> None:
    reference = role_specs("target_hosts")
    specs = role_specs(role)
    assert sorted(specs) == sorted(reference), (
        f"{role} entry points differ from target_hosts: missing {sorted(set(reference) - set(specs))}, "
        f"extra {sorted(set(specs) - set(reference))}"
    )
    for entry, declared in reference.items():
        assert _options(specs[entry]) == _options(declared), (
            f"{role}.{entry} options differ from target_hosts"
        )


@pytest.mark.parametrize("role", TARGET_ROLES)
def test_every_entry_point_has_its_tasks(role: str) -> None:
    missing = [entry for entry in role_specs(role) if not (ROLES / role / "tasks" / f"{entry}.yml").is_file()]
    assert not missing, f"{role} declares {missing} without tasks/<entry>.yml"


def _runbooks() -> list[Path]:
    return sorted(p for p in PLAYBOOKS.glob("*.yml")) + sorted((PLAYBOOKS / "tasks").glob("*.yml"))


def test_runbooks_include_their_target_only_through_declared_entry_points() -> None:
    entries = set(role_specs("target_hosts"))
    wrong = []
    for path in yaml_files():
        for task in tasks(yaml.safe_load(path.read_text()) or []):
            include = task.get("ansible.builtin.include_role") or task.get("ansible.builtin.import_role")
            if isinstance(include, dict) and "gateway_target" in str(include.get("name", "")):
                entry = str(include.get("tasks_from", "main")).removesuffix(".yml")
                if entry not in entries:
                    wrong.append(f"{path.relative_to(REPO)}: {task.get('name')} -> {entry}")
    assert not wrong, f"target entry points that are not declared: {wrong}"


def _runbook_table() -> dict[str, dict[str, str]]:
    """runbook file stem -> {target: cell} from the README's table."""
    rows: dict[str, dict[str, str]] = {}
    lines = RUNBOOK_TABLE.read_text().splitlines()
    header = next(line for line in lines if line.startswith("| runbook |"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    for line in lines[lines.index(header) + 2 :]:
        if not line.startswith("|"):
            break
        cells = dict(zip(columns, (c.strip() for c in line.strip("|").split("|")), strict=True))
        page = re.search(r"\]\(([a-z_]+)\.md\)", cells["page"])
        assert page, f"row without a page link: {line}"
        rows[page.group(1)] = {target: cells[target] for target in TARGETS}
    return rows


def test_the_runbook_table_has_one_verdict_per_target() -> None:
    table = _runbook_table()
    runbooks = {p.stem for p in PLAYBOOKS.glob("*.yml")}
    assert set(table) == runbooks, f"table vs playbooks: {set(table) ^ runbooks}"
    for runbook, cells in table.items():
        for target, cell in cells.items():
            assert re.fullmatch(
                r"tested here( \(.+\))?|contract-tested( \(.+\))?|not supported \(.+\)", cell
            ), (
                f"{runbook}/{target}: '{cell}' is not 'tested here', 'contract-tested' "
                "or 'not supported (why)'"
            )


def _code_lines(path: Path) -> str:
    return "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#"))


def test_runbooks_supported_beyond_hosts_touch_nothing_hosts_only() -> None:
    table = _runbook_table()
    shared = [PLAYBOOKS / "tasks" / p.name for p in (PLAYBOOKS / "tasks").glob("*.yml")]
    shared += list((ROLES / "checks").rglob("*.yml"))
    neutral = [
        PLAYBOOKS / f"{runbook}.yml"
        for runbook, cells in table.items()
        if any(not cells[t].startswith("not supported") for t in ("docker", "kubernetes"))
    ]
    found = [
        f"{path.relative_to(REPO)}: {token}"
        for path in neutral + shared
        for token in HOSTS_ONLY
        if token in _code_lines(path)
    ]
    assert not found, f"hosts-only names in target-neutral runbooks (ask the target instead): {found}"


def _sends_a_secret(task: dict[str, Any]) -> bool:
    uri = task.get("ansible.builtin.uri")
    if not isinstance(uri, dict):
        return False
    headers = {str(k).lower() for k in (uri.get("headers") or {})}
    body = str(uri.get("body", ""))
    return "authorization" in headers or "password" in body or "token" in body


def test_every_task_that_sends_a_token_or_password_hides_itself() -> None:
    exposed = [
        f"{path.relative_to(REPO)}: {task.get('name')}"
        for path in yaml_files()
        for task in tasks(yaml.safe_load(path.read_text()) or [])
        if _sends_a_secret(task) and task.get("no_log") is not True
    ]
    assert not exposed, (
        f"tasks that send the admin token, a key or a password without no_log: true: {exposed}"
    )


def test_no_database_url_on_a_command_line() -> None:
    """pg_dump/psql/pg_restore get the URL without its password; PGPASSWORD carries it."""
    exposed = []
    for path in yaml_files():
        for task in tasks(yaml.safe_load(path.read_text()) or []):
            command = task.get("ansible.builtin.command") or task.get("ansible.builtin.shell")
            text = str(command)
            if (
                command
                and "database_url" in text.lower()
                and (
                    re.search(r"database_url\s*}}", text, re.IGNORECASE)
                    or "pg_url_without_password" not in text
                )
            ):
                exposed.append(f"{path.relative_to(REPO)}: {task.get('name')}")
    assert not exposed, f"a database URL (with its password) in argv: {exposed}"
