"""Fixtures on the real Docker engine: the engine itself, the gateway image, containers.

No engine is a failure with scripts/docker_engine.sh's reason, never a skip.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import docker as d


@pytest.fixture(scope="session")
def docker_engine() -> None:
    try:
        d.ensure_engine()
        d.ensure_base_image()
    except d.DockerUnavailable as exc:
        pytest.fail(f"Docker engine unavailable: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def gateway_image(docker_engine: None) -> str:
    """This checkout's image, built from the local base image (once per inputs, under a lock)."""
    return d.build_gateway_image()


class Containers:
    """Runs containers named with the test prefix and removes every one of them at the end."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.names: list[str] = []

    def data_dir(self) -> Path:
        """A host directory the container user (uid 10001) can write: the SQLite database lives here."""
        path = self.workdir / f"data-{len(self.names)}-{os.urandom(3).hex()}"
        path.mkdir()
        os.chown(path, 10001, 10001)
        return path

    def config_file(self, config: dict[str, Any]) -> Path:
        path = self.workdir / f"config-{os.urandom(3).hex()}.yaml"
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o644)
        return path

    def hardened_args(self, name: str, config: Path, data: Path, env: dict[str, str]) -> list[str]:
        """`docker run` options: read-only, uid 10001, no capabilities, no privilege gain, host network.

        Secrets are passed as `--env NAME` (the value comes from the docker CLI's environment),
        so they never appear in a process's arguments.
        """
        args = ["--name", name, "--read-only", "--user", "10001:10001", "--cap-drop", "ALL"]
        args += ["--security-opt", "no-new-privileges", "--network", "host", "--tmpfs", "/tmp"]
        args += ["--volume", f"{config}:/etc/gateway/config.yaml:ro", "--volume", f"{data}:/var/lib/gateway"]
        for key in env:
            args += ["--env", key]
        return args

    def run(
        self, image: str, config: Path, data: Path, env: dict[str, str], *command: str, detach: bool
    ) -> subprocess.CompletedProcess:
        name = d.unique_name("run" if detach else "oneoff")
        self.names.append(name)
        args = ["run", "--detach"] if detach else ["run"]
        args += self.hardened_args(name, config, data, env)
        return subprocess.run(
            ["docker", *args, image, *command],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, **env},
        )

    def remove_all(self) -> None:
        for name in self.names:
            d.remove_container(name)


@pytest.fixture
def containers(tmp_path: Path) -> Iterator[Containers]:
    running = Containers(tmp_path)
    yield running
    running.remove_all()
