"""scripts/system-deps.sh: installs what a profile misses as root, names the apt-get line otherwise.

dpkg-query, apt-get and id are fakes on PATH (named so): they record their calls and answer as a
machine without the packages would.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.support.processes import REPO

SCRIPT = REPO / "scripts" / "system-deps.sh"


def _fake_machine(tmp_path: Path, installed: set[str], uid: int) -> dict[str, str]:
    """PATH with fake dpkg-query (knows `installed`), apt-get (logs its arguments), id (uid)."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir(parents=True)
    log = tmp_path / "apt-get.log"
    fakes = {
        "dpkg-query": f"""
pkg="${{@: -1}}"
case " {" ".join(sorted(installed))} " in *" $pkg "*) printf 'install ok installed';; *) exit 1;; esac
""",
        "apt-get": f'echo "$*" >> {log}',
        "id": f"echo {uid}",
    }
    for name, body in fakes.items():
        path = bin_dir / name
        path.write_text("#!/bin/bash\n" + body)
        path.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def _run(profile: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), profile], env=env, capture_output=True, text=True, timeout=30)


_MISSING_LINE = re.compile(r"apt-get install -y --no-install-recommends (.+)$", re.M)


@pytest.mark.parametrize("profile", ["up", "bench", "test"])
def test_without_root_names_the_exact_line_and_fails(tmp_path: Path, profile: str) -> None:
    done = _run(profile, _fake_machine(tmp_path, installed={"socat"}, uid=1000))
    assert done.returncode == 1
    line = _MISSING_LINE.search(done.stderr)
    assert line, done.stderr
    assert "socat" not in line.group(1).split()
    assert not (tmp_path / "apt-get.log").exists()  # nothing attempted


def test_profiles_cover_what_the_local_target_and_the_suite_drive(tmp_path: Path) -> None:
    wanted = {}
    for profile in ("up", "bench", "test"):
        done = _run(profile, _fake_machine(tmp_path / profile, installed=set(), uid=1000))
        wanted[profile] = set(_MISSING_LINE.search(done.stderr).group(1).split())
    assert wanted["up"] == {"haproxy", "supervisor", "socat", "sqlite3"}
    assert wanted["bench"] == {"nginx-light", "wrk"}
    assert wanted["test"] >= wanted["up"] | wanted["bench"] | {
        "prometheus",
        "prometheus-alertmanager",
        "postgresql-client",
        "redis-server",
        "docker.io",
        "docker-compose",
        "debootstrap",
        "chromium",
    }


def test_as_root_updates_once_then_installs_only_the_missing(tmp_path: Path) -> None:
    env = _fake_machine(tmp_path, installed={"haproxy", "sqlite3"}, uid=0)
    done = _run("up", env)
    assert done.returncode == 0, done.stderr
    calls = (tmp_path / "apt-get.log").read_text().splitlines()
    assert calls == ["update -qq", "install -y -qq --no-install-recommends supervisor socat"]


def test_nothing_missing_changes_nothing(tmp_path: Path) -> None:
    env = _fake_machine(tmp_path, installed={"haproxy", "supervisor", "socat", "sqlite3"}, uid=0)
    done = _run("up", env)
    assert done.returncode == 0 and done.stdout == done.stderr == ""
    assert not (tmp_path / "apt-get.log").exists()


def test_unknown_profile_is_a_usage_error(tmp_path: Path) -> None:
    done = _run("everything", os.environ.copy())
    assert done.returncode == 2 and "usage" in done.stderr


def test_ci_and_make_test_read_the_same_profile() -> None:
    ci = (REPO / ".ci" / "run").read_text()
    makefile = (REPO / "Makefile").read_text()
    assert "scripts/system-deps.sh test" in ci and ci.rstrip().endswith("make test")
    assert re.search(r"^test: system-deps-test\b", makefile, re.M)
    assert re.search(r"^up: system-deps-up\b", makefile, re.M)
