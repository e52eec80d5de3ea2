"""deploy.yml: first deploy on the local inventory, idempotence, --check --diff, host state."""

from __future__ import annotations

import json
import os
import subprocess

import httpx
import pytest
import testinfra

from tests.playbooks.conftest import ANSIBLE_PLAYBOOK, LOCAL_INVENTORY, RELEASE_V1, Deployment
from tests.support.processes import REPO

DASHBOARD = REPO / "gateway_app" / "dashboards" / "gateway.json"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def deployed(local_deployment: Deployment) -> Deployment:
    return local_deployment


def test_deploy_serves_through_the_load_balancer(deployed: Deployment) -> None:
    key = deployed.secrets()["GATEWAY_SEED_KEY"]
    ready = httpx.get(f"{deployed.url}/readyz", timeout=5)
    assert ready.status_code == 200 and ready.json()["version"] == RELEASE_V1
    models = httpx.get(f"{deployed.url}/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=5)
    assert [m["id"] for m in models.json()["data"]] == ["echo-1"]
    for instance in deployed.instances:
        assert httpx.get(f"http://127.0.0.1:{instance['port']}/readyz", timeout=5).status_code == 200
    admin = httpx.post(
        f"{deployed.url}/admin/api/session",
        json={"email": "admin@localhost", "password": deployed.secrets()["GATEWAY_BOOTSTRAP_ADMIN_PASSWORD"]},
        timeout=5,
    )
    assert admin.status_code == 200


def test_the_offline_release_is_installed_by_uv(deployed: Deployment) -> None:
    # The local inventory names the controller's uv; uv writes its version into the venv's
    # pyvenv.cfg, `python -m venv` (pip's path, test_postgres.py) does not.
    pyvenv = deployed.root / "releases" / RELEASE_V1 / "venv" / "pyvenv.cfg"
    assert "\nuv = " in pyvenv.read_text()


def test_the_services_may_run_on_every_cpu(deployed: Deployment) -> None:
    """supervisord and the instances it runs are not pinned to the CPUs the deploying
    ansible-playbook ran on (test_strategy.py: Mitogen's pinning is off)."""
    programs = ["", *(f"gateway-{instance['name']}" for instance in deployed.instances)]
    for program in programs:  # "" asks supervisorctl for supervisord's own pid
        answer = deployed.supervisorctl("pid", *([program] if program else []))
        assert answer.returncode == 0, answer.stdout + answer.stderr
        pid = int(answer.stdout.strip())
        assert os.sched_getaffinity(pid) == os.sched_getaffinity(0), program or "supervisord"


def test_second_run_changes_nothing(deployed: Deployment) -> None:
    again = deployed.ok("deploy.yml", gateway_wheel=str(deployed.releases.wheels[RELEASE_V1]))
    assert again.recap["changed"] == 0, again.output[-4000:]


def test_check_diff_runs_clean(deployed: Deployment) -> None:
    checked = deployed.ok(
        "deploy.yml", "--check", "--diff", gateway_wheel=str(deployed.releases.wheels[RELEASE_V1])
    )
    assert checked.recap["changed"] == 0 and checked.recap["failed"] == 0


def test_host_state_through_the_inventory(deployed: Deployment, monkeypatch: pytest.MonkeyPatch) -> None:
    # testinfra's ansible backend calls ansible-inventory from PATH: the venv's.
    monkeypatch.setenv("PATH", f"{ANSIBLE_PLAYBOOK.parent}:{os.environ['PATH']}")
    host = testinfra.get_host(f"ansible://local?ansible_inventory={LOCAL_INVENTORY}")
    root = deployed.root
    secrets = host.file(str(root / "etc" / "secrets.env"))
    assert secrets.is_file and secrets.mode == 0o600
    assert "GATEWAY_SEED_KEY=gwk_" in secrets.content_string
    current = host.file(str(root / "current"))
    assert current.is_symlink and current.linked_to == str(root / "releases" / RELEASE_V1)
    assert host.file(str(root / "releases" / RELEASE_V1 / "venv" / "bin" / "gateway")).is_file
    for instance in deployed.instances:
        assert host.file(str(root / "etc" / "instances" / f"{instance['name']}.yaml")).mode == 0o640
        assert host.socket(f"tcp://127.0.0.1:{instance['port']}").is_listening
    assert host.socket(f"tcp://127.0.0.1:{deployed.lb_port}").is_listening
    # haproxy binds its admin socket under a temporary name (what ss reports): ask it instead.
    admin_socket = root / "run" / "haproxy.sock"
    assert host.file(str(admin_socket)).is_socket and host.file(str(admin_socket)).mode == 0o600
    info = host.run(f"echo 'show info' | socat stdio unix-connect:{admin_socket}")
    assert info.rc == 0 and "Name: HAProxy" in info.stdout
    supervisord = [p for p in host.process.filter(comm="supervisord") if str(root) in p.args]
    assert len(supervisord) == 1
    gateways = [
        p for p in host.process.filter() if f"{root}/etc/instances/" in p.args and " serve " in p.args
    ]
    assert len(gateways) == 2


def test_the_release_dashboard_is_installed_as_a_file(deployed: Deployment) -> None:
    """grafana_dashboards_dir/gateway.json is the running release's package data, byte for byte."""
    installed = deployed.root / "grafana" / "gateway.json"
    assert installed.is_file() and installed.stat().st_mode & 0o777 == 0o644
    release_python = deployed.root / "releases" / RELEASE_V1 / "venv" / "bin" / "python"
    packaged = subprocess.run(
        [
            str(release_python),
            "-c",
            "import importlib.resources, sys; sys.stdout.buffer.write("
            "importlib.resources.files('gateway_app').joinpath('dashboards', 'gateway.json').read_bytes())",
        ],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    assert installed.read_bytes() == packaged == DASHBOARD.read_bytes()
    assert json.loads(installed.read_text())["panels"]
