"""examples/two-environments: GatewayEnvironment twice in one stack, under mocks.

Also: the components ship in the project's wheel and run from it, outside the repository
(package data instead of repository files).
"""

from __future__ import annotations

import json
import runpy
import shutil
import subprocess
import sys
import tomllib
from collections import Counter
from pathlib import Path

import pytest
import yaml

from stacks.offline import OfflineRun, run_program
from stacks.settings import REPO_ROOT

EXAMPLE = REPO_ROOT / "examples" / "two-environments"
PROJECT = yaml.safe_load((EXAMPLE / "Pulumi.yaml").read_text())["name"]
NAMESPACES = {"staging": "gateway-staging", "canary": "gateway-canary"}


def run_example(stack: str = "dev") -> OfflineRun:
    return run_program(stack, lambda: runpy.run_path(str(EXAMPLE / "__main__.py")), {}, project=PROJECT)


@pytest.fixture(scope="module")
def example() -> OfflineRun:
    return run_example()


def environment_of(run: OfflineRun, urn: str) -> str:
    """The name of the GatewayEnvironment a resource belongs to (following parents)."""
    by_urn = {r.urn: r for r in run.resources}
    resource = by_urn[urn]
    while not resource.type.endswith(":GatewayEnvironment"):
        resource = by_urn[resource.parent]
    return resource.name


def test_both_environments_exist_in_their_own_namespace(example: OfflineRun) -> None:
    environments = example.by_type(":GatewayEnvironment")
    assert sorted(e.name for e in environments) == ["canary", "staging"]
    kinds_of: dict[str, Counter[str]] = {name: Counter() for name in NAMESPACES}
    for resource in example.resources:
        if resource.type.endswith(":GatewayEnvironment"):
            continue
        environment = environment_of(example, resource.urn)
        # Every child is named after its environment, however deep it is nested.
        assert resource.name.startswith(f"{environment}-"), resource.name
        if resource.kind:
            kinds_of[environment][resource.kind] += 1
            metadata = resource.values["metadata"]
            namespace = metadata["name"] if resource.kind == "Namespace" else metadata["namespace"]
            assert namespace == NAMESPACES[environment], (resource.name, namespace)
    for environment, kinds in kinds_of.items():
        for kind in (
            "Namespace",
            "Deployment",
            "Service",
            "ConfigMap",
            "Secret",
            "NetworkPolicy",
            "StatefulSet",
        ):
            assert kinds[kind] >= 1, (environment, kind)
    # Seed and bootstrap Jobs, alert rules and the dashboard only where the environment asks for them.
    assert (kinds_of["staging"]["Job"], kinds_of["canary"]["Job"]) == (3, 1)
    assert (kinds_of["staging"]["PrometheusRule"], kinds_of["canary"]["PrometheusRule"]) == (1, 0)


def test_no_urn_or_name_collides(example: OfflineRun) -> None:
    urns = [r.urn for r in example.resources]
    assert len(urns) == len(set(urns))
    names = Counter((r.type, r.name) for r in example.resources)
    assert [key for key, count in names.items() if count > 1] == []
    # Kubernetes objects may share a name only in different namespaces.
    objects = Counter(
        (r.kind, r.values["metadata"].get("namespace"), r.metadata_name) for r in example.kubernetes()
    )
    assert [key for key, count in objects.items() if count > 1] == []


def test_each_environment_has_its_own_config_secret_and_database(example: OfflineRun) -> None:
    outputs = {name: out.value for name, out in example.stack_outputs.items()}
    assert outputs["staging"]["service"] == "llm-gateway.gateway-staging.svc.cluster.local"
    assert outputs["canary"]["service"] == "llm-gateway.gateway-canary.svc.cluster.local"
    assert outputs["staging"]["configChecksum"] != outputs["canary"]["configChecksum"]
    for environment, namespace in NAMESPACES.items():
        config = yaml.safe_load(
            example.one("ConfigMap", f"{environment}-gateway-config").values["data"]["config.yaml"]
        )
        assert config["server"]["log_level"] == ("debug" if environment == "canary" else "info")
        secret = example.one("Secret", f"{environment}-secrets-env").values
        assert secret["metadata"]["namespace"] == namespace
        assert secret["stringData"]["GATEWAY_DATABASE_URL"].endswith(
            f"@llm-gateway-postgres.{namespace}.svc.cluster.local:5432/gateway"
        )
        deployment = example.one("Deployment", f"{environment}-gateway-deployment").values
        image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        assert image.endswith("0.1.0" if environment == "staging" else "0.2.0")
    # Generated per environment: no password or key is shared between the two.
    staging, canary = (example.one("Secret", f"{e}-secrets-env").values["stringData"] for e in NAMESPACES)
    assert [env for env in staging.keys() & canary.keys() if staging[env] == canary[env]] == []


def test_the_example_declares_no_aliases(example: OfflineRun) -> None:
    """Aliases to pre-component names belong to the project's own program, not to the component."""
    assert [r.name for r in example.resources if r.alias_names] == []


_FROM_THE_WHEEL = """
import json, runpy, sys
import gateway_app, stacks
from stacks.offline import run_program
run = run_program("dev", lambda: runpy.run_path(sys.argv[1]), {}, project="example")
print(json.dumps({
    "stacks": stacks.__file__,
    "gateway_app": gateway_app.__file__,
    "resources": len(run.resources),
    "rules": [r.values["spec"]["groups"][0]["name"] for r in run.by_type("PrometheusRule")],
    "dashboards": [r.name for r in run.by_type("ConfigMap") if "dashboard" in r.name],
}))
"""


@pytest.mark.slow
def test_the_components_ship_in_the_wheel_and_run_outside_the_repository(tmp_path: Path) -> None:
    wheels, target, source = tmp_path / "wheels", tmp_path / "site", tmp_path / "source"
    # Built from a copy: setuptools writes build/ and *.egg-info next to the sources it builds.
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, source / name)
    for package in ("gateway_app", "stacks"):
        shutil.copytree(REPO_ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", wheels, "."],
        cwd=source,
        check=True,
        timeout=600,
    )
    (wheel,) = wheels.glob("llm_gateway-*.whl")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", target, wheel],
        check=True,
        timeout=600,
    )
    # The example, run from a directory outside the repository with only the installed wheel
    # providing gateway_app and stacks: rules and dashboard must come from package data.
    program = tmp_path / "program.py"
    program.write_text((EXAMPLE / "__main__.py").read_text())
    done = subprocess.run(
        [sys.executable, "-c", _FROM_THE_WHEEL, str(program)],
        cwd=tmp_path,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["stacks"].startswith(str(target)) and report["gateway_app"].startswith(str(target))
    assert report["resources"] > 40
    assert report["rules"] and report["dashboards"] == ["staging-observability-grafana-dashboard"]


def test_the_pulumi_extra_pins_what_requirements_pulumi_pins() -> None:
    extra = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    pinned = (REPO_ROOT / "requirements-pulumi.txt").read_text().splitlines()
    assert extra["pulumi"] and set(extra["pulumi"]) <= set(pinned)
