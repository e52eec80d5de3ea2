"""scripts/docker_engine.sh against the shared engine: reuse, never restart; without root, the command."""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.support import docker as d

DOCKERD_PIDFILE = Path("/var/run/docker.pid")
# The script's default run lock, read from the script (its one owner).
ENGINE_LOCK = Path(
    re.search(r'ENGINE_LOCK="\$\{ENGINE_LOCK:-([^}]+)\}"', d.ENGINE_SCRIPT.read_text()).group(1)
)


def test_reuses_the_running_engine_and_the_base_image(docker_engine: None) -> None:
    pid_before = DOCKERD_PIDFILE.read_text().strip()
    base_before = d.image_build.image_id(d.BASE_IMAGE)
    run = subprocess.run(["bash", str(d.ENGINE_SCRIPT)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "engine answers docker info: reusing it" in run.stderr
    assert f"base image {d.BASE_IMAGE} present: reusing it" in run.stderr
    assert DOCKERD_PIDFILE.read_text().strip() == pid_before
    assert d.image_build.image_id(d.BASE_IMAGE) == base_before
    # Nothing the script started (the engine above all) keeps its run lock: the next run proceeds.
    with ENGINE_LOCK.open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pytest.fail(
                f"{ENGINE_LOCK} is still held after the script exited (an engine it started inherited it?)"
            )


def test_runs_one_at_a_time_and_a_run_that_waits_too_long_says_why(
    docker_engine: None, tmp_path: Path
) -> None:
    # On a new machine several pytest-xdist workers call the script at once: one builds, the
    # others queue on the lock and then reuse what it built.
    lock = tmp_path / "engine.lock"
    env = {**os.environ, "ENGINE_LOCK": str(lock), "ENGINE_LOCK_WAIT_SECONDS": "1"}
    with lock.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # a first run, still building
        waited = subprocess.run(
            ["bash", str(d.ENGINE_SCRIPT)], capture_output=True, text=True, env=env, timeout=60
        )
    assert waited.returncode == 2, waited.stderr
    assert f"another run of this script has held {lock} for 1s" in waited.stderr
    assert "reusing it" not in waited.stderr  # it did nothing while the first run held the lock
    after = subprocess.run(
        ["bash", str(d.ENGINE_SCRIPT)], capture_output=True, text=True, env=env, timeout=120
    )
    assert after.returncode == 0, after.stderr
    assert f"base image {d.BASE_IMAGE} present: reusing it" in after.stderr


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
