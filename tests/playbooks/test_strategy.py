"""The runbooks' strategy (playbooks/strategy_plugins/mitogen_linear.py, named by ansible.cfg):
modules run in Mitogen's interpreter when Mitogen is installed, and in Ansible's own way, with a
warning, when it is not; either way, what a task starts may run on every CPU. Real
ansible-playbook runs of a two-task probe on localhost."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.playbooks.conftest import run_on_localhost

pytestmark = pytest.mark.slow

# The module's parent process: Mitogen's interpreter titles itself "...(mitogen:user@host:pid)".
_PROBE = """
- name: Which process runs the modules
  hosts: localhost
  gather_facts: false
  tasks:
    - name: The command module's parent
      ansible.builtin.shell: "tr '\\\\0' ' ' < /proc/$PPID/cmdline"
      changed_when: false
    - name: The CPUs a process started by a task may run on
      ansible.builtin.command: grep Cpus_allowed_list /proc/self/status
      changed_when: false
"""


def _probe(tmp_path: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    playbook = tmp_path / "probe.yml"
    playbook.write_text(_PROBE)
    # No ansible_python_interpreter: the one in ansible.cfg is what an inventory gets by default.
    return run_on_localhost(playbook, "-v", env=env)


@pytest.fixture(scope="module")
def mitogen_run(tmp_path_factory: pytest.TempPathFactory) -> subprocess.CompletedProcess:
    """One probe run with Mitogen, read by the tests that do not change its environment."""
    return _probe(tmp_path_factory.mktemp("probe"))


def test_modules_run_in_mitogens_interpreter(mitogen_run: subprocess.CompletedProcess) -> None:
    done = mitogen_run
    assert done.returncode == 0, done.stdout + done.stderr
    assert "(mitogen:" in done.stdout
    assert "Mitogen is not installed" not in done.stdout + done.stderr


def test_without_mitogen_the_run_is_ansibles_linear_with_a_warning(tmp_path: Path) -> None:
    # An ansible_mitogen that cannot be imported, first on the path: as if it were not installed.
    hidden = tmp_path / "hidden" / "ansible_mitogen"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    done = _probe(tmp_path, {"PYTHONPATH": str(hidden.parent)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Mitogen is not installed" in done.stdout + done.stderr
    assert "(mitogen:" not in done.stdout


def test_what_a_task_starts_may_run_on_every_cpu(mitogen_run: subprocess.CompletedProcess) -> None:
    """Mitogen pins its processes to CPUs, and children inherit the mask: on a 2-CPU host every
    service a runbook started (supervisord, the gateways, haproxy) shared one CPU."""
    done = mitogen_run
    assert done.returncode == 0, done.stdout + done.stderr
    # -v shows the task's stdout quoted: the tab after the colon is written "\\t".
    allowed = re.search(r"Cpus_allowed_list:(?:\\t|\s)*([0-9][0-9,-]*)", done.stdout)
    assert allowed, done.stdout
    assert _cpu_set(allowed.group(1)) == os.sched_getaffinity(0)


def _cpu_set(listed: str) -> set[int]:
    """'0-3,6' -> {0, 1, 2, 3, 6} (the kernel's list format)."""
    cpus: set[int] = set()
    for part in listed.split(","):
        first, _, last = part.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return cpus
