"""scripts/docker_engine.sh against the shared engine: reuse, never restart; without root, the command."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support import docker as d

DOCKERD_PIDFILE = Path("/var/run/docker.pid")


def test_reuses_the_running_engine_and_the_base_image(docker_engine: None) -> None:
    pid_before = DOCKERD_PIDFILE.read_text().strip()
    base_before = d.image_build.image_id(d.BASE_IMAGE)
    run = subprocess.run(["bash", str(d.ENGINE_SCRIPT)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "engine answers docker info: reusing it" in run.stderr
    assert f"base image {d.BASE_IMAGE} present: reusing it" in run.stderr
    assert DOCKERD_PIDFILE.read_text().strip() == pid_before
    assert d.image_build.image_id(d.BASE_IMAGE) == base_before


def test_without_root_it_prints_the_command_to_run_and_fails() -> None:
    # An unprivileged user cannot reach the engine's socket: to it, no engine answers.
    # The script goes in on stdin: the user cannot read this worktree.
    run = subprocess.run(
        ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", "bash", "-s"],
        input=d.ENGINE_SCRIPT.read_text(),
        capture_output=True,
        text=True,
        timeout=120,
        cwd="/",
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/nonexistent"},
    )
    assert run.returncode == 2
    assert "no Docker engine answers docker info; start one as root with:" in run.stderr
    assert "dockerd --iptables=false --bridge=none --storage-driver=overlay2" in run.stderr
    assert "--storage-driver=vfs where the kernel refuses overlay mounts" in run.stderr
