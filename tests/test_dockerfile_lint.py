"""hadolint over gateway_app/Dockerfile with the repository's .hadolint.yaml: zero findings."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support.processes import REPO

HADOLINT = REPO / ".venv" / "bin" / "hadolint"


def _hadolint(dockerfile: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(HADOLINT), "--no-color", "--config", str(REPO / ".hadolint.yaml"), str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_gateway_dockerfile_has_no_findings() -> None:
    linted = _hadolint(REPO / "gateway_app" / "Dockerfile")
    assert linted.returncode == 0, linted.stdout + linted.stderr
    assert linted.stdout == ""


def test_the_config_still_reports_findings(tmp_path: Path) -> None:
    # The repository's config must not silence the rules: an unpinned base image and an
    # apt-get without -y / --no-install-recommends are reported, down to "info".
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian\nRUN apt-get install curl\n")
    linted = _hadolint(bad)
    assert linted.returncode == 1
    assert {"DL3006", "DL3014", "DL3015"} <= {word for word in linted.stdout.split() if word.startswith("DL")}
