"""ansible-lint over playbooks/ with the repository's .ansible-lint (production profile, offline).

It runs here, inside the suite, rather than before it in `make test`: one ansible-lint run is
about half a minute of one core, and on a worker it overlaps the rest of the suite instead of
holding it back.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.playbooks.conftest import ANSIBLE_PLAYBOOK
from tests.support.processes import REPO

# Installed beside ansible-playbook, in the venv that runs the suite.
ANSIBLE_LINT = ANSIBLE_PLAYBOOK.parent / "ansible-lint"


def _ansible_lint(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """ansible-lint with the .ansible-lint in cwd as its config, as `make ansible-lint` finds it."""
    return subprocess.run(
        [str(ANSIBLE_LINT), "--offline", "--nocolor", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_runbooks_pass_the_production_profile() -> None:
    linted = _ansible_lint("playbooks/")
    assert linted.returncode == 0, linted.stdout + linted.stderr
    assert "Profile 'production' was required, and it passed" in linted.stderr


def test_the_config_still_reports_findings(tmp_path: Path) -> None:
    # The repository's config must not silence the rules that matter here: a short module name,
    # an unnamed task and a shell task that always reports a change are findings.
    shutil.copy(REPO / ".ansible-lint", tmp_path)
    bad = tmp_path / "playbooks" / "bad.yml"
    bad.parent.mkdir()
    bad.write_text("---\n- name: Bad\n  hosts: all\n  tasks:\n    - shell: echo hi\n")
    linted = _ansible_lint("playbooks/", cwd=tmp_path)
    assert linted.returncode != 0, linted.stdout + linted.stderr
    found = linted.stdout + linted.stderr
    for rule in ("fqcn[action-core]", "name[missing]", "no-changed-when"):
        assert rule in found, found
