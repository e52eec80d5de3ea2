"""deploy/compose.yaml brought up for real with Debian's docker-compose (1.29), then taken down.

The test copies deploy/ as a user would, writes a .env with fresh secrets, and moves the
gateway to a free port (host networking); the database is SQLite in the Compose volume, or a
throwaway database on the PostgreSQL server at 127.0.0.1:5432.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml

from gateway_app import __version__
from gateway_app.keys import generate_key
from tests.support import docker as d
from tests.support.processes import REPO, free_port, wait_http

DEPLOY = REPO / "deploy"


def _env_example() -> dict[str, str]:
    lines = (DEPLOY / ".env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if re.match(r"^[A-Z_]+=", line))


def test_env_example_names_the_image_make_image_builds() -> None:
    assert _env_example()["GATEWAY_IMAGE"] == f"{d.image_build.IMAGE_NAME}:{__version__}"


# docker-compose 1.29 gives up on an engine call after 60 s by default; on the vfs driver of
# a loaded machine creating one container can take longer (it then appears after `down`).
COMPOSE_HTTP_TIMEOUT_SECONDS = "600"


def _compose(project_dir: Path, project: str, *args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["docker-compose", "--project-name", project, "--file", str(project_dir / "compose.yaml"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=project_dir,
        env={**os.environ, "COMPOSE_HTTP_TIMEOUT": COMPOSE_HTTP_TIMEOUT_SECONDS},
    )


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_compose_up_serves_the_seeded_key_and_down_removes_it(
    backend: str, gateway_image: str, databases, tmp_path: Path
) -> None:
    project_dir = tmp_path / "deploy"
    project_dir.mkdir()
    shutil.copy(DEPLOY / "compose.yaml", project_dir)
    port = free_port()
    config = yaml.safe_load((DEPLOY / "config.yaml").read_text())
    config["server"].update(host="127.0.0.1", port=port)
    (project_dir / "config.yaml").write_text(yaml.safe_dump(config))
    seed_key = generate_key()
    env = {
        **_env_example(),
        "GATEWAY_IMAGE": gateway_image,
        "GATEWAY_SEED_KEY": seed_key,
        "GATEWAY_BOOTSTRAP_ADMIN_PASSWORD": os.urandom(12).hex(),
        "GATEWAY_HEALTHCHECK_URL": f"http://127.0.0.1:{port}/healthz",
    }
    if backend == "postgres":
        env["GATEWAY_DATABASE_URL"] = databases.new("postgres")
    dotenv = project_dir / ".env"
    dotenv.write_text("".join(f"{key}={value}\n" for key, value in env.items()))
    dotenv.chmod(0o600)
    (project_dir / "config.yaml").chmod(0o644)

    project = d.unique_name("compose")
    try:
        up = _compose(project_dir, project, "up", "--detach", timeout=900)
        assert up.returncode == 0, up.stdout + up.stderr
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/readyz", timeout=120)
        models = httpx.get(url + "/v1/models", headers={"Authorization": f"Bearer {seed_key}"}, timeout=10)
        assert models.status_code == 200, models.text
        assert [m["id"] for m in models.json()["data"]] == ["echo-1"]
        wrong = httpx.get(
            url + "/v1/models", headers={"Authorization": f"Bearer {generate_key()}"}, timeout=10
        )
        assert wrong.status_code == 401
        # The one-off services ran to completion, and the gateway runs hardened.
        for service, expected in (("migrate", "exited"), ("seed-config", "exited"), ("gateway", "running")):
            ids = _compose(project_dir, project, "ps", "--quiet", service, timeout=60).stdout.split()
            assert len(ids) == 1, (service, ids)
            state = d.inspect(ids[0])
            assert state["State"]["Status"] == expected, (service, state["State"])
            if expected == "exited":
                assert state["State"]["ExitCode"] == 0, (service, state["State"])
            assert state["HostConfig"]["ReadonlyRootfs"] is True and state["HostConfig"]["CapDrop"] == ["ALL"]
    finally:
        down = _compose(project_dir, project, "down", "--volumes", "--timeout", "30", timeout=300)
    assert down.returncode == 0, down.stderr
    leftover = d.docker("ps", "--all", "--quiet", "--filter", f"label=com.docker.compose.project={project}")
    assert leftover.stdout.strip() == ""
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
