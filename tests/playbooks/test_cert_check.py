"""cert_check.yml against a real TLS endpoint on loopback with a short-lived certificate."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.playbooks.conftest import ANSIBLE_PLAYBOOK, LOCAL_INVENTORY, PLAYBOOKS
from tests.support.processes import free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tls_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """openssl s_server with a self-signed certificate valid for 10 days."""
    work: Path = tmp_path_factory.mktemp("tls")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "10",
            "-subj",
            "/CN=localhost",
            "-keyout",
            str(work / "key.pem"),
            "-out",
            str(work / "cert.pem"),
        ],
        check=True,
        capture_output=True,
    )
    port = free_port()
    server = subprocess.Popen(
        [
            "openssl",
            "s_server",
            "-quiet",
            "-accept",
            str(port),
            "-cert",
            str(work / "cert.pem"),
            "-key",
            str(work / "key.pem"),
            "-www",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    yield port
    server.terminate()
    server.wait(10)


def _cert_check(port: int, min_days: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            str(ANSIBLE_PLAYBOOK),
            "-i",
            str(LOCAL_INVENTORY),
            "cert_check.yml",
            "-e",
            "cert_host=127.0.0.1",
            "-e",
            f"cert_port={port}",
            "-e",
            f"cert_min_days={min_days}",
            "-e",
            "cert_server_name=localhost",
        ],
        cwd=PLAYBOOKS,
        capture_output=True,
        text=True,
        timeout=300,
        env={
            "ANSIBLE_CONFIG": str(PLAYBOOKS / "ansible.cfg"),
            "ANSIBLE_NOCOLOR": "1",
            "PATH": "/usr/bin:/bin",
        },
    )


def test_certificate_expiring_within_the_threshold_fails(tls_port: int) -> None:
    result = _cert_check(tls_port, 30)
    assert result.returncode != 0
    assert "days left" in result.stdout and "under the 30-day threshold" in result.stdout


def test_certificate_beyond_the_threshold_passes(tls_port: int) -> None:
    result = _cert_check(tls_port, 5)
    assert result.returncode == 0, result.stdout[-3000:]
