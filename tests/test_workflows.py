"""The GitHub workflows users run (e2e-kind.yml cannot run here) stay actionlint clean."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.processes import REPO

ACTIONLINT = Path(sys.executable).parent / "actionlint"
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))


def _actionlint(*paths: Path) -> subprocess.CompletedProcess:
    assert ACTIONLINT.is_file(), f"{ACTIONLINT} is missing: pip install -r requirements.txt"
    return subprocess.run([str(ACTIONLINT), "-no-color", *map(str, paths)], capture_output=True, text=True, timeout=120)


def test_the_kind_workflow_exists() -> None:
    assert REPO / ".github" / "workflows" / "e2e-kind.yml" in WORKFLOWS


def test_every_workflow_is_actionlint_clean() -> None:
    result = _actionlint(*WORKFLOWS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    """The check can fail: an unknown expression context and a missing runs-on are reported."""
    broken = tmp_path / ".github" / "workflows" / "broken.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text("on: push\njobs:\n  x:\n    steps:\n      - run: echo ${{ steps.nope.outputs.x }}\n")
    result = _actionlint(broken)
    assert result.returncode == 1 and "runs-on" in result.stdout
