"""`python -m stacks render|diff`: the CLI, the property-level diff and its exit codes."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from stacks import __main__ as cli
from stacks import diff as stack_diff
from stacks.offline import OfflineRun
from stacks.render import inventory
from stacks.settings import REPO_ROOT
from tests.stacks.conftest import secret_values


def test_render_command_in_a_fresh_process(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "stacks", "render", "--stack", "local", "--out", str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    document = json.loads((tmp_path / "resources.json").read_text())
    assert document["stack"] == "local"
    assert (tmp_path / "manifests" / "deployment_llm-gateway.yaml").is_file()


def test_seeded_key_never_appears_in_render_output(runs: dict[str, OfflineRun], tmp_path: Path) -> None:
    seed_key = secret_values(runs["local"])["GATEWAY_SEED_KEY"]
    key_secret = seed_key.split(".", 1)[1]
    result = subprocess.run(
        [sys.executable, "-m", "stacks", "render", "--stack", "local", "--out", str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    written = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert len(written) > 5
    for text in [result.stdout, result.stderr, *(path.read_text() for path in written)]:
        assert seed_key not in text and key_secret not in text
    # The render is of the same deterministic program: the Secret that holds the key is there.
    assert "GATEWAY_SEED_KEY" in (tmp_path / "manifests" / "secret_llm-gateway-env.yaml").read_text()


def test_render_refuses_unknown_stack(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert cli.main(["render", "--stack", "nope", "--out", str(tmp_path)]) == 2
    assert "no stack file stacks/Pulumi.nope.yaml" in capsys.readouterr().err


def test_property_changes_name_paths() -> None:
    before = {"spec": {"replicas": 1, "ports": [{"port": 80}], "gone": True}}
    after = {"spec": {"replicas": 2, "ports": [{"port": 80}, {"port": 443}]}}
    assert stack_diff.property_changes(before, after) == [
        ("spec.gone", True, "<absent>"),
        ("spec.ports[1]", "<absent>", {"port": 443}),
        ("spec.replicas", 1, 2),
    ]


def test_diff_exit_codes(
    runs: dict[str, OfflineRun], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    head = inventory(runs["local"])
    monkeypatch.setattr(stack_diff, "run_stack", lambda stack: runs[stack])
    monkeypatch.setattr(stack_diff, "render_base", lambda ref, stack, workdir: head)
    assert cli.main(["diff", "--stack", "local", "--base", "main"]) == 0
    assert "0 to add, 0 to change, 0 to remove" in capsys.readouterr().out

    base = copy.deepcopy(head)
    deployment = next(r for r in base["resources"] if r["name"] == "llm-gateway-gateway-deployment")
    deployment["inputs"]["spec"]["replicas"] = 3
    base["resources"] = [r for r in base["resources"] if r["name"] != "llm-gateway-gateway-seed-job"]
    base["resources"].append(
        {"type": "kubernetes:core/v1:ConfigMap", "name": "old", "parent": "", "dependsOn": [], "inputs": {}}
    )
    monkeypatch.setattr(stack_diff, "render_base", lambda ref, stack, workdir: base)
    assert cli.main(["diff", "--stack", "local", "--base", "main"]) == 1
    out = capsys.readouterr().out
    assert "1 to add, 1 to change, 1 to remove" in out
    assert "+ kubernetes:batch/v1:Job llm-gateway-gateway-seed-job" in out
    assert "- kubernetes:core/v1:ConfigMap old" in out
    assert (
        "~ kubernetes:apps/v1:Deployment llm-gateway-gateway-deployment\n    ~ inputs.spec.replicas: 3 -> 1"
        in out
    )


def test_base_render_in_a_worktree(tmp_path: Path) -> None:
    """The base tree renders from git in a temporary worktree, which is removed afterwards."""
    document = stack_diff.render_base("HEAD", "local", tmp_path)
    assert document["stack"] == "local"
    assert any(r["type"] == "kubernetes:apps/v1:Deployment" for r in document["resources"])
    worktrees = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "worktree", "list"], capture_output=True, text=True
    )
    assert str(tmp_path) not in worktrees.stdout
