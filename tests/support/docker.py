"""The real Docker engine for tests: the engine, the local base image, gateway images, containers.

A missing engine is a failure with the reason (scripts/docker_engine.sh's message), never a skip.
Image builds go through scripts/image.py (the same code as `make image`): one build per tag and
inputs, serialized across pytest-xdist workers by its file lock.
"""

from __future__ import annotations

import importlib.util
import json
import secrets
import subprocess
from pathlib import Path
from typing import Any

from tests.support.processes import REPO

# scripts/ is not a package: load the builder `make image` runs, by path.
_spec = importlib.util.spec_from_file_location("gateway_image_build", REPO / "scripts" / "image.py")
image_build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(image_build)

ENGINE_SCRIPT = REPO / "scripts" / "docker_engine.sh"
BASE_IMAGE = image_build.LOCAL_BASE_IMAGE
# Containers and test images carry this prefix (the shared engine's naming rule).
NAME_PREFIX = "image-test"


class DockerUnavailable(RuntimeError):
    pass


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    """Run the docker CLI; with ``check``, a non-zero exit raises with its stderr."""
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args[:3])} ... exited {done.returncode}: {done.stderr.strip()}")
    return done


def _engine_script() -> None:
    try:
        done = subprocess.run(["bash", str(ENGINE_SCRIPT)], capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired as exc:
        raise DockerUnavailable(f"{ENGINE_SCRIPT} did not finish within 900s") from exc
    if done.returncode != 0:
        raise DockerUnavailable(f"{ENGINE_SCRIPT} exited {done.returncode}:\n{done.stderr.strip()}")


def ensure_engine() -> None:
    """An engine answers `docker info`, or this raises DockerUnavailable with the reason."""
    try:
        if docker("info", timeout=30, check=False).returncode == 0:
            return
    except (FileNotFoundError, subprocess.TimeoutExpired):
        pass
    _engine_script()


def ensure_base_image() -> str:
    """The local base image (built once by scripts/docker_engine.sh, reused when present)."""
    ensure_engine()
    if image_build.image_id(BASE_IMAGE) is None:
        _engine_script()
    return BASE_IMAGE


def build_gateway_image(wheel: Path | None = None, tag: str | None = None) -> str:
    """The gateway image for ``wheel`` (default: this checkout) under ``tag``; returns the tag.

    Default tag: ``llm-gateway:<version>``. Built once per tag and inputs; concurrent callers
    wait on the build lock and then reuse the image.
    """
    base = ensure_base_image()
    try:
        return image_build.build_image(wheel, tag, base, log=lambda _msg: None)
    except image_build.ImageBuildError as exc:
        raise RuntimeError(str(exc)) from exc


def unique_name(what: str) -> str:
    return f"{NAME_PREFIX}-{what}-{secrets.token_hex(4)}"


def inspect(container: str) -> dict[str, Any]:
    return json.loads(docker("inspect", container).stdout)[0]


def remove_container(container: str) -> None:
    docker("rm", "--force", "--volumes", container, check=False)
