"""Real runs of the runbook playbooks against the local inventory.

Releases are wheels built once per session from a copy of this checkout with a
test version (a second one with an extra breaking migration, a third one with the
same migration that never gets ready, a fourth with an additive migration that never
gets ready), plus one shared wheelhouse of their dependencies, so that a deployment
installs releases offline in seconds. Each test module gets its own deployment
(root directory, free ports, supervisord, haproxy) and stops it at the end.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from filelock import FileLock

from tests.support.ansible_yaml import PLAYBOOKS, ROLES
from tests.support.processes import REPO, free_port

ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
LOCAL_INVENTORY = PLAYBOOKS / "inventories" / "local"
# The load balancer's runtime socket and supervisord's config, as their roles name them (one owner).
_LB_DEFAULTS = yaml.safe_load((ROLES / "loadbalancer" / "defaults" / "main.yml").read_text())
_SERVICE_DEFAULTS = yaml.safe_load((ROLES / "service" / "defaults" / "main.yml").read_text())
# What every ansible-playbook run of the tests adds to the environment: the project's config.
_ANSIBLE_ENV = {"ANSIBLE_CONFIG": str(PLAYBOOKS / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
_RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)

RELEASE_V1, RELEASE_V2, RELEASE_BROKEN = "0.90.1", "0.90.2", "0.90.3"
# Never ready either, with an additive migration: the failed upgrade must not restore.
RELEASE_BROKEN_ADDITIVE = "0.90.4"
# gateway_ready_timeout for an upgrade to a never-ready release: the rollback starts after this
# wait, so it is short. Every other run keeps the role's default: a gateway that starts while the
# machine is loaded (the suite's first deployments, all at once) can take 20 s to listen.
NEVER_READY_TIMEOUT = 12
# The tables the test migrations create (breaking in v2 and v3, additive in the fourth).
BREAKING_TABLE, ADDITIVE_TABLE = "runbook_upgrade_marker", "runbook_additive_marker"
# Appended to gateway_app/app.py in the broken release: it starts but never gets ready.
_NEVER_READY = """

async def _never_ready(self):  # test release: fails its readiness check on purpose
    return "not_ready", {"version": __version__, "database": "ok", "schema": "broken release (test)"}


Gateway.readiness = _never_ready
"""


@dataclass
class Releases:
    wheelhouse: Path
    wheels: dict[str, Path] = field(default_factory=dict)


def _build_release(
    work: Path, version: str, wheelhouse: Path, migration: bool, broken: bool, additive: bool = False
) -> Path:
    src = work / f"src-{version}"
    shutil.copytree(REPO / "gateway_app", src / "gateway_app", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", src / "pyproject.toml")
    init = src / "gateway_app" / "__init__.py"
    init.write_text(re.sub(r'__version__ = "[^"]+"', f'__version__ = "{version}"', init.read_text()))
    if migration:
        for backend in ("sqlite", "postgres"):
            folder = src / "gateway_app" / "migrations" / backend
            number = len(list(folder.glob("[0-9][0-9][0-9][0-9]_*.sql"))) + 1
            # Marked breaking: the previous release must refuse this schema, which is what
            # the rollback refusal and the restore-to-roll-back tests exercise. Additive: the
            # previous release runs on it, so a failed upgrade keeps the database.
            name, table = ("runbook_test", BREAKING_TABLE)
            if additive:
                name, table = ("runbook_additive", ADDITIVE_TABLE)
            (folder / f"{number:04d}_{name}.sql").write_text(
                f"-- compatibility: {'additive' if additive else 'breaking'}\n"
                f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, note TEXT NOT NULL);\n"
            )
    if broken:
        app = src / "gateway_app" / "app.py"
        app.write_text(app.read_text() + _NEVER_READY)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheelhouse), str(src)],
        check=True,
        capture_output=True,
    )
    return wheelhouse / f"llm_gateway-{version}-py3-none-any.whl"


def _build_releases(work: Path) -> Releases:
    built = Releases(work / "wheelhouse")
    built.wheelhouse.mkdir()
    v1 = _build_release(work, RELEASE_V1, built.wheelhouse, migration=False, broken=False)
    v2 = _build_release(work, RELEASE_V2, built.wheelhouse, migration=True, broken=False)
    v3 = _build_release(work, RELEASE_BROKEN, built.wheelhouse, migration=True, broken=True)
    v4 = _build_release(
        work, RELEASE_BROKEN_ADDITIVE, built.wheelhouse, migration=True, broken=True, additive=True
    )
    # The dependencies once, so that every release installs with --no-index.
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "-w", str(built.wheelhouse), str(v1)],
        check=True,
        capture_output=True,
    )
    built.wheels = {RELEASE_V1: v1, RELEASE_V2: v2, RELEASE_BROKEN: v3, RELEASE_BROKEN_ADDITIVE: v4}
    return built


@pytest.fixture(scope="session")
def releases(tmp_path_factory: pytest.TempPathFactory) -> Releases:
    """Four test releases and one wheelhouse with all their dependencies.

    Under pytest-xdist the workers' temp dirs share one parent: the first worker builds there,
    the others wait on the lock and read the same files.
    """
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return _build_releases(tmp_path_factory.mktemp("releases"))
    work = tmp_path_factory.getbasetemp().parent / "releases"
    with FileLock(f"{work}.lock"):
        done = work / "built.json"
        if not done.exists():
            work.mkdir(exist_ok=True)
            built = _build_releases(work)
            done.write_text(json.dumps({v: str(w) for v, w in built.wheels.items()}))
        wheels = {version: Path(wheel) for version, wheel in json.loads(done.read_text()).items()}
    return Releases(work / "wheelhouse", wheels)


def run_on_localhost(
    playbook: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """A throwaway play (written by the test) on localhost over the local connection, under the
    project's ansible.cfg, from the play's directory."""
    return subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "-i", "localhost,", "-c", "local", *args, str(playbook)],
        env={**os.environ, **_ANSIBLE_ENV, **(env or {})},
        cwd=playbook.parent,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@dataclass
class PlaybookRun:
    rc: int
    output: str

    @property
    def recap(self) -> dict[str, int]:
        match = _RECAP.findall(self.output)
        assert match, f"no PLAY RECAP in output:\n{self.output[-3000:]}"
        _host, ok, changed, unreachable, failed = match[-1]
        return {
            "ok": int(ok),
            "changed": int(changed),
            "unreachable": int(unreachable),
            "failed": int(failed),
        }


# An httplog line's timers then a status other than 200: "... 0/0/0/1/1 503 ..."
_NOT_200 = re.compile(r" -?\d+/-?\d+/-?\d+/-?\d+/\d+ (?!200 )\d{3} ")


class Deployment:
    """One local-inventory deployment under its own root, on free ports."""

    inventory = LOCAL_INVENTORY
    # Seconds one ansible-playbook run may take (a module with long runs raises it).
    run_timeout = 600

    def __init__(self, root: Path, releases: Releases, extra: dict[str, Any] | None = None):
        self.root = root
        self.releases = releases
        self.lb_port = free_port()
        self.instances = [{"name": "a", "port": free_port()}, {"name": "b", "port": free_port()}]
        self.vars = {
            "gateway_root": str(root),
            "gateway_lb_port": self.lb_port,
            "gateway_instances": self.instances,
            "gateway_wheelhouse": str(releases.wheelhouse),
            "gateway_pip_offline": True,
            "gateway_shutdown_grace_seconds": 5,
            "gateway_key_cache_refresh_seconds": 0.5,
            **(extra or {}),
        }
        root.mkdir(parents=True, exist_ok=True)
        self.vars_file = root.parent / f"{root.name}-vars.json"
        self.vars_file.write_text(json.dumps(self.vars))
        self._runs = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.lb_port}"

    def run(self, playbook: str, *args: str, **extra: Any) -> PlaybookRun:
        """ansible-playbook playbooks/<playbook> against the deployment's inventory, as an operator would."""
        cmd = [str(ANSIBLE_PLAYBOOK), "-i", str(self.inventory), playbook, "-e", f"@{self.vars_file}"]
        for key, value in extra.items():
            cmd += ["-e", json.dumps({key: value})]
        cmd += list(args)
        env = {**os.environ, **_ANSIBLE_ENV}
        done = subprocess.run(
            cmd, cwd=PLAYBOOKS, env=env, capture_output=True, text=True, timeout=self.run_timeout
        )
        self._runs += 1
        # Kept next to the root for reading a failure: pytest's tmp dirs outlive the run.
        log = self.root.parent / f"{self._runs:02d}-{Path(playbook).stem}.log"
        log.write_text(" ".join(cmd) + "\n" + done.stdout + done.stderr)
        return PlaybookRun(done.returncode, done.stdout + done.stderr)

    def ok(self, playbook: str, *args: str, **extra: Any) -> PlaybookRun:
        result = self.run(playbook, *args, **extra)
        assert result.rc == 0, f"{playbook} failed:\n{result.output[-6000:]}"
        return result

    def secrets(self) -> dict[str, str]:
        lines = (self.root / "etc" / "secrets.env").read_text().splitlines()
        return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))

    def gateway(self, *args: str, release: str = "current") -> subprocess.CompletedProcess:
        """The deployment's own CLI wrapper (secrets loaded), as the runbooks call it."""
        env = {**os.environ, "GATEWAY_RELEASE": release}
        return subprocess.run(
            [str(self.root / "bin" / "gateway"), *args], capture_output=True, text=True, env=env, timeout=60
        )

    def _under_root(self, role_default: str) -> str:
        """A role default written under {{ gateway_root }}, for this deployment."""
        return role_default.replace("{{ gateway_root }}", str(self.root))

    @property
    def lb_socket(self) -> str:
        return self._under_root(_LB_DEFAULTS["lb_socket"])

    @property
    def supervisor_conf(self) -> Path:
        return Path(self._under_root(_SERVICE_DEFAULTS["service_supervisor_conf"]))

    def supervisorctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """supervisorctl against the deployment's supervisord (not checked: callers read the result)."""
        return subprocess.run(
            ["supervisorctl", "-c", str(self.supervisor_conf), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def lb_servers(self) -> dict[str, str]:
        """haproxy backend server -> status (UP, DOWN, MAINT, ...), from its runtime API."""
        done = subprocess.run(
            ["socat", "stdio", f"unix-connect:{self.lb_socket}"],
            input="show stat\n",
            capture_output=True,
            text=True,
            timeout=30,
        )
        rows = [line.split(",") for line in done.stdout.splitlines() if line and not line.startswith("#")]
        return {
            row[1]: row[17] for row in rows if row[0] == "gateway" and row[1] not in ("BACKEND", "FRONTEND")
        }

    def wait_in_rotation(self, timeout: float = 60) -> None:
        """Until haproxy has every instance UP: a test that made them unready (a schema from the
        future, a stopped instance) hands the shared deployment on serving, and a load test
        starts from a deployment that serves rather than from the last test's leftovers."""
        wanted = {i["name"]: "UP" for i in self.instances}
        deadline = time.monotonic() + timeout
        while (servers := self.lb_servers()) != wanted:
            assert time.monotonic() < deadline, (f"haproxy servers {servers}, not {wanted}", self.lb_events())
            time.sleep(0.2)

    def lb_events(self, limit: int = 40) -> list[str]:
        """haproxy's server state changes and its answers other than 200, from its log: what
        a load test's failure message shows, so a failure in CI names its cause."""
        log = self.root / "logs" / "haproxy.log"
        lines = log.read_text(errors="replace").splitlines() if log.exists() else []
        events = [ln for ln in lines if ln.startswith(("[WARNING]", "[ALERT]")) or _NOT_200.search(ln)]
        return events[-limit:]

    def stop(self) -> None:
        if self.supervisor_conf.exists():
            self.supervisorctl("shutdown")


@pytest.fixture(scope="session")
def local_deployment(tmp_path_factory: pytest.TempPathFactory, releases: Releases) -> Iterator[Deployment]:
    """The local inventory deployed once per worker (SQLite, release v1), shared by the runbook
    modules: each test leaves it serving release v1 for the next."""
    deployment = Deployment(tmp_path_factory.mktemp("local") / "root", releases)
    try:
        first = deployment.ok("deploy.yml", gateway_wheel=str(releases.wheels[RELEASE_V1]))
        assert first.recap["changed"] > 0
        yield deployment
    finally:
        deployment.stop()


@pytest.fixture(scope="module")
def deployment_factory(tmp_path_factory: pytest.TempPathFactory, releases: Releases) -> Iterator[Any]:
    created: list[Deployment] = []

    def make(**extra: Any) -> Deployment:
        deployment = Deployment(tmp_path_factory.mktemp("deploy") / "root", releases, extra)
        created.append(deployment)
        return deployment

    yield make
    for deployment in created:
        deployment.stop()


def instance_versions(deployment: Any) -> set[str]:
    """The release each instance of a deployment (hosts or docker target) reports on /readyz."""
    return {
        httpx.get(f"http://127.0.0.1:{i['port']}/readyz", timeout=5).json()["version"]
        for i in deployment.instances
    }


def sqlite_connect(deployment: Any) -> sqlite3.Connection:
    """The deployment's SQLite database (gateway_root/data/gateway.db)."""
    return sqlite3.connect(deployment.root / "data" / "gateway.db", timeout=10)


def sqlite_tables(deployment: Any) -> set[str]:
    with sqlite_connect(deployment) as db:
        return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
