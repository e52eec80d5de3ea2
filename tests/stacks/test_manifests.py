"""Rendered manifests: Kubernetes schema (strict), checkov, redaction and determinism."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from stacks.offline import OfflineRun
from stacks.render import write_render
from stacks.settings import REPO_ROOT
from tests.stacks.conftest import STACKS, secret_values

# The Kubernetes version the manifests are validated against (EKS and kind both ship it).
KUBERNETES_VERSION = "1.33.0"
# Kinds from operators' CRDs: the bundled schemas cannot know them; the program tests cover them.
CRD_KINDS = {"Cluster", "ExternalSecret", "ServiceMonitor", "PrometheusRule"}


def manifests(render_root: Path, stack: str) -> list[tuple[Path, dict[str, Any]]]:
    paths = sorted((render_root / stack / "manifests").glob("*.yaml"))
    return [(path, yaml.safe_load(path.read_text())) for path in paths]


@pytest.mark.parametrize("stack", STACKS)
def test_manifests_match_the_kubernetes_schema(render_root: Path, stack: str) -> None:
    unchecked = set()
    for path, document in manifests(render_root, stack):
        if document["kind"] in CRD_KINDS:
            unchecked.add(document["kind"])
            continue
        try:
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{stack}/{path.name}: {error.message} at {list(error.path)}")
    assert unchecked <= CRD_KINDS


@pytest.mark.parametrize("stack", STACKS)
def test_one_manifest_per_kubernetes_resource(
    runs: dict[str, OfflineRun], render_root: Path, stack: str
) -> None:
    assert len(manifests(render_root, stack)) == len(runs[stack].kubernetes())


@pytest.mark.parametrize("stack", STACKS)
def test_render_redacts_every_secret(runs: dict[str, OfflineRun], render_root: Path, stack: str) -> None:
    run = runs[stack]
    secrets = list(secret_values(run).values())
    text = "".join(path.read_text() for path in sorted((render_root / stack).rglob("*.*")))
    assert len(secrets) >= 4 and not [s for s in secrets if s in text]
    for path, document in manifests(render_root, stack):
        if document["kind"] == "Secret":
            assert set(document["stringData"].values()) == {"[secret]"}, path.name


def test_render_is_deterministic(runs: dict[str, OfflineRun], render_root: Path, tmp_path: Path) -> None:
    again = write_render(runs["prod"], tmp_path / "prod")
    for path in sorted((render_root / "prod").rglob("*.*")):
        assert (again / path.relative_to(render_root / "prod")).read_bytes() == path.read_bytes(), path.name


@pytest.fixture(scope="session")
def checkov_report(render_root: Path) -> dict[str, Any]:
    checkov = REPO_ROOT / ".venv-checkov" / "bin" / "checkov"
    binary = str(checkov) if checkov.exists() else shutil.which("checkov")
    if binary is None:
        pytest.fail("checkov is not installed: run `make checkov` (it installs into .venv-checkov)")
    result = subprocess.run(
        [binary, "-d", str(render_root), "--framework", "kubernetes", "--skip-download", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = json.loads(result.stdout)
    return report[0] if isinstance(report, list) else report


@pytest.mark.parametrize("stack", STACKS)
def test_checkov_finds_nothing(checkov_report: dict[str, Any], stack: str) -> None:
    def of_stack(kind: str) -> list[dict[str, Any]]:
        return [c for c in checkov_report["results"][kind] if c["file_path"].startswith(f"/{stack}/")]

    assert of_stack("passed_checks")
    failed = [f"{c['check_id']} {c['resource']}: {c['check_name']}" for c in of_stack("failed_checks")]
    assert failed == []
    assert all(c["check_result"]["suppress_comment"].strip() for c in of_stack("skipped_checks"))
