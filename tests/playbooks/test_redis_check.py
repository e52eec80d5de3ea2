"""redis_check.yml against two real redis-server processes started on their own ports:
replication reported, split brain detected, failover only when confirmed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.playbooks.conftest import Deployment, Releases
from tests.support.processes import RedisNode, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[tuple[RedisNode, RedisNode]]:
    primary, replica = RedisNode(tmp_path), RedisNode(tmp_path)
    replica.client.replicaof("127.0.0.1", primary.port)
    wait_until(lambda: replica.client.info("replication")["master_link_status"] == "up")
    yield primary, replica
    for node in (primary, replica):
        node.stop()


@pytest.fixture
def runner(tmp_path: Path) -> Deployment:
    """Runs playbooks with the local inventory; redis_check needs no gateway deployed, so no
    release either (the session's release wheels are not built for this file)."""
    return Deployment(tmp_path / "root", Releases(wheelhouse=tmp_path / "wheelhouse"))


def test_healthy_replication_is_reported(runner: Deployment, nodes) -> None:
    primary, replica = nodes
    result = runner.ok("redis_check.yml", redis_nodes=[primary.name, replica.name])
    assert f"{primary.name}: role=master replicas=1" in result.output
    assert f"{replica.name}: role=slave replicating from 127.0.0.1:{primary.port} link=up" in result.output
    assert f"One master: {primary.name}" in result.output


def test_split_brain_is_detected_and_failover_needs_confirmation(runner: Deployment, nodes) -> None:
    primary, replica = nodes
    replica.client.replicaof("NO", "ONE")
    assert (primary.role(), replica.role()) == ("master", "master")
    names = [primary.name, replica.name]

    split = runner.run("redis_check.yml", redis_nodes=names)
    assert split.rc != 0 and f"Split brain: {primary.name} and {replica.name} are all masters" in split.output

    unconfirmed = runner.run("redis_check.yml", redis_nodes=names, failover_to=replica.name)
    assert unconfirmed.rc != 0 and "rerun with -e confirm_failover=true" in unconfirmed.output
    assert (primary.role(), replica.role()) == ("master", "master"), "an unconfirmed failover changed a node"

    runner.ok("redis_check.yml", redis_nodes=names, failover_to=replica.name, confirm_failover=True)
    assert (primary.role(), replica.role()) == ("slave", "master")
    wait_until(lambda: primary.client.info("replication")["master_link_status"] == "up")
    replica.client.set("written-after-failover", "1")
    wait_until(lambda: primary.client.get("written-after-failover") == b"1")
    assert f"One master: {replica.name}" in runner.ok("redis_check.yml", redis_nodes=names).output
