"""The runbooks on the docker target: real playbooks, the real engine, real images.

Test releases 0.90.1 -> 0.90.2 (a breaking migration) and a broken 0.90.3 are the
wheels of tests/playbooks/conftest.py, each built into an image (tests/support/docker.py,
the code `make image` runs) under a repository unique to this session. One deployment
(inventories/docker-local, deploy_docker.yml: SQLite bind-mounted, two containers behind haproxy on free
ports, its own root and container names) goes through the runbooks in file order.
A missing engine fails these tests; they never skip.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.playbooks.conftest import (
    NEVER_READY_TIMEOUT,
    PLAYBOOKS,
    RELEASE_BROKEN,
    RELEASE_V1,
    RELEASE_V2,
    Deployment,
    Releases,
    _build_release,
    instance_versions,
    sqlite_connect,
    sqlite_tables,
)
from tests.playbooks.loadgen import LoadGenerator
from tests.support.docker import build_gateway_image, docker, ensure_engine
from tests.support.processes import REPO

pytestmark = pytest.mark.slow

DOCKER_INVENTORY = PLAYBOOKS / "inventories" / "docker-local"
KEYS = "SELECT name, revoked_at IS NULL FROM api_keys ORDER BY id"


# Images are reused across sessions: the wheels are reproducible (SOURCE_DATE_EPOCH), so
# build_gateway_image finds the tag built from the same inputs; one repository per worktree
# (the engine's naming rule), never removed while another session may run on it.
REPOSITORY = f"dockertarget-test-{hashlib.sha256(str(REPO).encode()).hexdigest()[:8]}"


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory, monkeypatch_module: pytest.MonkeyPatch) -> str:
    """The three test releases as images <REPOSITORY>:<version>."""
    ensure_engine()  # raises with the reason when no engine answers: a failure, not a skip
    monkeypatch_module.setenv("SOURCE_DATE_EPOCH", "1767225600")
    work = tmp_path_factory.mktemp("docker-releases")
    wheels = work / "wheels"
    wheels.mkdir()
    for version, migration, broken in (
        (RELEASE_V1, False, False),
        (RELEASE_V2, True, False),
        (RELEASE_BROKEN, True, True),
    ):
        wheel = _build_release(work, version, wheels, migration=migration, broken=broken)
        build_gateway_image(wheel=wheel, tag=f"{REPOSITORY}:{version}")
    return REPOSITORY


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


class DockerDeployment(Deployment):
    inventory = DOCKER_INVENTORY

    def __init__(self, root: Path, releases: Releases, repository: str):
        self.prefix = f"dockertarget-test-{secrets.token_hex(4)}"
        super().__init__(
            root,
            releases,
            {"docker_image_repository": repository, "docker_container_prefix": self.prefix},
        )

    def containers(self) -> list[dict]:
        names = [f"{self.prefix}-{i['name']}" for i in self.instances]
        return json.loads(docker("inspect", *names).stdout)

    def secrets(self) -> dict[str, str]:
        lines = (self.root / "etc" / "secrets.env").read_text().splitlines()
        return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))

    def gateway(self, *args: str, release: str = "current") -> subprocess.CompletedProcess:
        """bin/gateway: a one-off container (minutes on a busy vfs engine, hence the bound)."""
        env = {**os.environ, "GATEWAY_RELEASE": release}
        return subprocess.run(
            [str(self.root / "bin" / "gateway"), *args], capture_output=True, text=True, env=env, timeout=600
        )

    def stop(self) -> None:
        listed = docker("ps", "-aq", "--filter", f"label=org.llm-gateway.root={self.root}", check=False)
        if listed.stdout.split():
            docker("rm", "--force", *listed.stdout.split(), check=False)
        super().stop()


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, images: str) -> Iterator[DockerDeployment]:
    root = tmp_path_factory.mktemp("docker") / "root"
    deployment = DockerDeployment(root, Releases(wheelhouse=root.parent), images)
    try:
        deployment.ok("deploy_docker.yml", gateway_version=RELEASE_V1)
        yield deployment
    finally:
        deployment.stop()


def _status(deployment: Deployment, key: str) -> int:
    return httpx.get(
        f"{deployment.url}/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=5
    ).status_code


def test_deploy_runs_hardened_containers_without_secrets_in_them(deployment: DockerDeployment) -> None:
    assert instance_versions(deployment) == {RELEASE_V1}
    assert _status(deployment, deployment.secrets()["GATEWAY_SEED_KEY"]) == 200
    secret_values = [v for v in deployment.secrets().values() if len(v) >= 8]
    for container in deployment.containers():
        host = container["HostConfig"]
        assert container["State"]["Running"]
        assert container["Config"]["Image"] == f"{deployment.vars['docker_image_repository']}:{RELEASE_V1}"
        assert host["NetworkMode"] == "host" and host["ReadonlyRootfs"] is True
        assert host["CapDrop"] == ["ALL"] and "no-new-privileges" in host["SecurityOpt"]
        assert container["Config"]["User"] == "10001:10001"
        # No secret in what `docker inspect` shows (env, args, entrypoint, labels).
        shown = json.dumps(container)
        assert not [value for value in secret_values if value in shown]
    secrets_file = deployment.root / "etc" / "secrets.env"
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600 and secrets_file.stat().st_uid == 10001


def test_the_release_dashboard_is_installed_as_a_file(deployment: DockerDeployment) -> None:
    """grafana_dashboards_dir/gateway.json is the package data of the running image, byte for byte."""
    installed = deployment.root / "grafana" / "gateway.json"
    assert installed.is_file() and stat.S_IMODE(installed.stat().st_mode) == 0o644
    image = f"{deployment.vars['docker_image_repository']}:{RELEASE_V1}"
    reader = (
        "import importlib.resources, sys; sys.stdout.buffer.write("
        "importlib.resources.files('gateway_app').joinpath('dashboards', 'gateway.json').read_bytes())"
    )
    packaged = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "--entrypoint", "python", image, "-c", reader],
        capture_output=True,
        check=True,
        timeout=600,
    ).stdout
    assert (
        installed.read_bytes()
        == packaged
        == (REPO / "gateway_app" / "dashboards" / "gateway.json").read_bytes()
    )


def test_run_command_keeps_the_cli_exit_status(deployment: DockerDeployment) -> None:
    """bin/gateway (what run_command runs) returns the CLI's rc: migrate --check of v2 is 1 (pending)."""
    done = deployment.gateway("migrate", "--check", release=RELEASE_V2)
    assert done.returncode == 1, done.stdout + done.stderr
    assert deployment.gateway("migrate", "--check").returncode == 0


def test_upgrade_under_load_fails_no_request(deployment: DockerDeployment) -> None:
    key = deployment.secrets()["GATEWAY_SEED_KEY"]
    with LoadGenerator(deployment.url, key) as load:
        deployment.ok("upgrade.yml", gateway_version=RELEASE_V2)
    print(f"\ndocker target upgrade {RELEASE_V1} -> {RELEASE_V2}: sent={load.sent} failed={load.failed}")
    assert load.sent > 50
    assert load.failed == 0, dict(load.failures)
    assert instance_versions(deployment) == {RELEASE_V2}
    assert {c["Config"]["Image"].rsplit(":", 1)[1] for c in deployment.containers()} == {RELEASE_V2}
    assert "runbook_upgrade_marker" in sqlite_tables(deployment)
    assert (deployment.root / "current-release").read_text().strip() == RELEASE_V2
    backups = list((deployment.root / "backups").glob(f"pre-upgrade-{RELEASE_V1}-to-{RELEASE_V2}-*.json"))
    assert len(backups) == 1


def test_broken_image_is_rolled_back_automatically(deployment: DockerDeployment) -> None:
    result = deployment.run(
        "upgrade.yml", gateway_version=RELEASE_BROKEN, gateway_ready_timeout=NEVER_READY_TIMEOUT
    )
    assert result.rc != 0
    rolled_back = f"Upgrade {RELEASE_V2} -> {RELEASE_BROKEN} FAILED and was rolled back to {RELEASE_V2}"
    assert rolled_back in result.output
    assert "broken release (test)" in result.output
    assert instance_versions(deployment) == {RELEASE_V2}
    assert {c["Config"]["Image"].rsplit(":", 1)[1] for c in deployment.containers()} == {RELEASE_V2}
    assert _status(deployment, deployment.secrets()["GATEWAY_SEED_KEY"]) == 200


def test_rollback_across_the_breaking_schema_change_is_refused(deployment: DockerDeployment) -> None:
    result = deployment.run("rollback.yml", rollback_to=RELEASE_V1)
    assert result.rc != 0
    assert "A code rollback is not a database rollback" in result.output
    assert instance_versions(deployment) == {RELEASE_V2}
    assert "runbook_upgrade_marker" in sqlite_tables(deployment)


def test_rollback_with_the_pre_upgrade_backup(deployment: DockerDeployment) -> None:
    backup = next((deployment.root / "backups").glob(f"pre-upgrade-{RELEASE_V1}-to-{RELEASE_V2}-*.json")).stem
    deployment.ok("rollback.yml", rollback_to=RELEASE_V1, restore_backup=backup)
    assert instance_versions(deployment) == {RELEASE_V1}
    assert "runbook_upgrade_marker" not in sqlite_tables(deployment)


def test_backup_restore_round_trip(deployment: DockerDeployment) -> None:
    kept = deployment.gateway("keys", "create", "--service-account", "ci", "--name", "kept")
    assert kept.returncode == 0, kept.stderr
    deployment.ok("backup.yml", backup_name="round-trip")
    manifest = json.loads((deployment.root / "backups" / "round-trip.json").read_text())
    assert manifest["backend"] == "sqlite" and int(manifest["tables"]["api_keys"]) == 2
    backup_file = deployment.root / "backups" / "round-trip.sqlite"
    assert stat.S_IMODE(backup_file.stat().st_mode) == 0o600
    with sqlite_connect(deployment) as db:
        keys_before = db.execute(KEYS).fetchall()
    lost = deployment.gateway("keys", "create", "--service-account", "ci", "--name", "lost")
    assert lost.returncode == 0, lost.stderr
    result = deployment.ok("restore.yml", restore_backup="round-trip")
    assert "checksum and row counts match its manifest" in result.output
    with sqlite_connect(deployment) as db:
        assert db.execute(KEYS).fetchall() == keys_before
    assert _status(deployment, deployment.secrets()["GATEWAY_SEED_KEY"]) == 200


def test_rotate_gateway_key_old_key_fails(deployment: DockerDeployment) -> None:
    old = deployment.secrets()["GATEWAY_SEED_KEY"]
    result = deployment.ok("rotate_gateway_key.yml")
    new = deployment.secrets()["GATEWAY_SEED_KEY"]
    assert new != old and old not in result.output and new not in result.output
    assert _status(deployment, new) == 200
    assert _status(deployment, old) == 401


def test_migration_recovery_reset_only_with_confirmation(deployment: DockerDeployment) -> None:
    key = deployment.secrets()["GATEWAY_SEED_KEY"]
    with sqlite_connect(deployment) as db:
        db.execute("UPDATE schema_migrations SET checksum = 'tampered' WHERE version = 1")
    refused = deployment.run("migration_recovery.yml")
    assert refused.rc != 0 and "database reset required" in refused.output
    assert "confirm_reset=true" in refused.output
    deployment.ok("migration_recovery.yml", confirm_reset=True)
    with sqlite_connect(deployment) as db:
        checksum = db.execute("SELECT checksum FROM schema_migrations WHERE version = 1").fetchone()[0]
        assert checksum != "tampered"
        assert db.execute("SELECT count(*) FROM api_keys WHERE name = 'kept'").fetchone()[0] == 0
    assert _status(deployment, key) == 200
    assert list((deployment.root / "backups").glob("pre-reset-*.json"))
