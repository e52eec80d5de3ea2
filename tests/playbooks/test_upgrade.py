"""upgrade.yml and rollback.yml between real releases, on one deployment, in order:
v1 -> v2 (new migration) under load with zero failed requests; v2 -> broken v3
rolled back automatically; rollback to v1 refused across the schema change;
rollback to v1 with the pre-upgrade backup restored. Runs on the shared local
deployment (after the runbook tests its worker ran before), and leaves it on v1."""

from __future__ import annotations

import httpx
import pytest

from tests.playbooks.conftest import (
    NEVER_READY_TIMEOUT,
    RELEASE_BROKEN,
    RELEASE_V1,
    RELEASE_V2,
    Deployment,
    instance_versions,
    sqlite_tables,
)
from tests.playbooks.loadgen import LoadGenerator

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def deployment(local_deployment: Deployment) -> Deployment:
    """The shared local deployment, still on release v1 (no other module changes releases)."""
    assert instance_versions(local_deployment) == {RELEASE_V1}
    return local_deployment


def test_upgrade_with_a_migration_under_load_fails_no_request(deployment: Deployment) -> None:
    key = deployment.secrets()["GATEWAY_SEED_KEY"]
    deployment.wait_in_rotation()
    with LoadGenerator(deployment.url, key) as load:
        deployment.ok("upgrade.yml", gateway_wheel=str(deployment.releases.wheels[RELEASE_V2]))
    print(f"\nzero-failure upgrade {RELEASE_V1} -> {RELEASE_V2}: sent={load.sent} failed={load.failed}")
    assert load.sent > 50
    assert load.failed == 0, (dict(load.failures), deployment.lb_events())
    assert instance_versions(deployment) == {RELEASE_V2}
    assert "runbook_upgrade_marker" in sqlite_tables(deployment)
    assert (deployment.root / "current").readlink().name == RELEASE_V2
    backups = sorted((deployment.root / "backups").glob(f"pre-upgrade-{RELEASE_V1}-to-{RELEASE_V2}-*.json"))
    assert len(backups) == 1


def test_broken_release_is_rolled_back_automatically(deployment: Deployment) -> None:
    result = deployment.run(
        "upgrade.yml",
        gateway_wheel=str(deployment.releases.wheels[RELEASE_BROKEN]),
        gateway_ready_timeout=NEVER_READY_TIMEOUT,
    )
    assert result.rc != 0
    assert (
        f"Upgrade {RELEASE_V2} -> {RELEASE_BROKEN} FAILED and was rolled back to {RELEASE_V2}"
        in result.output
    )
    assert "broken release (test)" in result.output  # the failing /readyz answer is in the message
    assert instance_versions(deployment) == {RELEASE_V2}
    assert (deployment.root / "current").readlink().name == RELEASE_V2
    key = deployment.secrets()["GATEWAY_SEED_KEY"]
    models = httpx.get(f"{deployment.url}/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=5)
    assert models.status_code == 200


def test_upgrade_refuses_a_target_the_database_cannot_go_to(deployment: Deployment) -> None:
    result = deployment.run("upgrade.yml", gateway_version=RELEASE_V1)
    assert result.rc != 0
    assert f"Release {RELEASE_V1} cannot use this database; nothing was changed" in result.output
    assert instance_versions(deployment) == {RELEASE_V2}
    assert not list((deployment.root / "backups").glob(f"pre-upgrade-{RELEASE_V2}-to-{RELEASE_V1}-*"))


def test_rollback_across_the_schema_change_is_refused(deployment: Deployment) -> None:
    result = deployment.run("rollback.yml", rollback_to=RELEASE_V1)
    assert result.rc != 0
    assert "A code rollback is not a database rollback" in result.output
    assert "knows versions up to" in result.output
    assert instance_versions(deployment) == {RELEASE_V2}
    assert "runbook_upgrade_marker" in sqlite_tables(deployment)


def test_rollback_with_the_pre_upgrade_backup(deployment: Deployment) -> None:
    backup = next((deployment.root / "backups").glob(f"pre-upgrade-{RELEASE_V1}-to-{RELEASE_V2}-*.json")).stem
    deployment.ok("rollback.yml", rollback_to=RELEASE_V1, restore_backup=backup)
    assert instance_versions(deployment) == {RELEASE_V1}
    assert "runbook_upgrade_marker" not in sqlite_tables(deployment)
    assert (deployment.root / "current").readlink().name == RELEASE_V1
