"""The gateway image on the real Docker engine, run the way production runs it.

Read-only root filesystem, uid 10001, every capability dropped, no-new-privileges, host network
on a free port; SQLite in a bind-mounted data directory; the echo provider and a real fake
upstream process for the slow stream.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest

from gateway_app import __version__
from tests.conftest import ADMIN_PASSWORD, SEED_KEY, base_config
from tests.docker.conftest import Containers
from tests.support import docker as d
from tests.support.admin import login
from tests.support.processes import (
    REPO,
    BackgroundStream,
    FakeUpstreamProcess,
    free_port,
    wait_http,
    wait_until,
)

pytestmark = pytest.mark.slow

CONTAINER_DB = "sqlite:////var/lib/gateway/gateway.db"


def _env(port: int) -> dict[str, str]:
    return {
        "GATEWAY_SEED_KEY": SEED_KEY,
        "GATEWAY_BOOTSTRAP_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "GATEWAY_HEALTHCHECK_URL": f"http://127.0.0.1:{port}/healthz",
    }


def _config(port: int, upstream_url: str | None = None) -> dict:
    config = base_config(CONTAINER_DB, port)
    if upstream_url:
        config["providers"].append(
            {
                "name": "fake",
                "type": "openai_compat",
                "base_url": upstream_url,
                "pricing_provider_id": "openai",
            }
        )
        config["models"].append({"name": "slow", "routes": [{"provider": "fake", "upstream_model": "slow"}]})
    return config


def _serve(containers: Containers, image: str, config: dict) -> tuple[str, str]:
    """A detached, hardened gateway container, seeded; returns (name, base URL) once /readyz is 200."""
    port = config["server"]["port"]
    started = containers.run(
        image, containers.config_file(config), containers.data_dir(), _env(port), detach=True
    )
    assert started.returncode == 0, started.stderr
    name = containers.names[-1]
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/readyz", timeout=60)
    except TimeoutError:
        logs = d.docker("logs", "--tail", "40", name, check=False)
        raise AssertionError(f"container {name} not ready:\n{logs.stdout}{logs.stderr}") from None
    # Keys come from config through seed-config (the server does not seed them itself).
    d.docker("exec", name, "gateway", "seed-config")
    return name, url


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {SEED_KEY}"}


def test_image_is_labelled_with_version_and_revision_and_runs_as_10001(gateway_image: str) -> None:
    config = d.inspect(gateway_image)["Config"]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == __version__
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout
    assert labels["org.opencontainers.image.revision"].removesuffix("-dirty") == head.strip()
    assert config["User"] == "10001:10001"
    assert gateway_image == f"llm-gateway:{__version__}"
    version = d.docker("run", "--rm", "--network", "none", gateway_image, "version")
    assert version.stdout.strip() == __version__


def test_a_given_wheel_and_tag_make_an_image_of_that_release(gateway_image: str, tmp_path: Path) -> None:
    # What upgrade tests do: package a test release; the dependency layer comes from the cache.
    wheel = d.release_wheel("0.90.1", tmp_path)
    tag = f"{d.unique_name('release')}:0.90.1"
    try:
        assert d.build_gateway_image(wheel, tag) == tag
        labels = d.inspect(tag)["Config"]["Labels"]
        assert labels["org.opencontainers.image.version"] == "0.90.1"
        assert d.docker("run", "--rm", "--network", "none", tag, "version").stdout.strip() == "0.90.1"
        # Same dependency venv layer as this checkout's image: only the gateway differs.
        layers = {image: d.inspect(image)["RootFS"]["Layers"] for image in (gateway_image, tag)}
        assert layers[tag][:-1] == layers[gateway_image][:-1]
        assert layers[tag][-1] != layers[gateway_image][-1]
    finally:
        d.docker("image", "rm", "--force", tag, check=False)


def test_hardened_container_serves_chat_and_stream_and_turns_healthy(
    gateway_image: str, containers: Containers
) -> None:
    name, url = _serve(containers, gateway_image, _config(free_port()))
    state = d.inspect(name)
    host_config = state["HostConfig"]
    assert host_config["ReadonlyRootfs"] is True
    assert host_config["CapDrop"] == ["ALL"]
    assert "no-new-privileges" in host_config["SecurityOpt"]
    # The serving process itself, seen from the host: uid 10001, no effective capabilities.
    status = Path(f"/proc/{state['State']['Pid']}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines())
    assert fields["Uid"].split()[:2] == ["10001", "10001"]
    assert int(fields["CapEff"].strip(), 16) == 0
    assert fields["NoNewPrivs"].strip() == "1"

    chat = httpx.post(
        url + "/v1/chat/completions",
        headers=_auth(),
        json={"model": "echo-1", "messages": [{"role": "user", "content": "hello container"}]},
        timeout=10,
    )
    assert chat.status_code == 200, chat.text
    assert "hello container" in chat.json()["choices"][0]["message"]["content"]

    with httpx.stream(
        "POST",
        url + "/v1/chat/completions",
        headers=_auth(),
        json={"model": "echo-1", "stream": True, "messages": [{"role": "user", "content": "streamed"}]},
        timeout=10,
    ) as response:
        assert response.status_code == 200
        body = b"".join(response.iter_bytes())
    assert body.rstrip().endswith(b"data: [DONE]") and b"streamed" in body

    # Nothing outside the mounts is writable.
    write = d.docker("exec", name, "sh", "-c", "touch /opt/gateway/x", check=False)
    assert write.returncode != 0 and "Read-only file system" in write.stderr

    health = wait_until(
        lambda: (s := d.inspect(name)["State"]["Health"]["Status"]) != "starting" and s, timeout=60
    )
    assert health == "healthy", d.inspect(name)["State"]["Health"]["Log"][-3:]


def test_docker_stop_during_a_stream_lets_it_finish_and_exits_0(
    gateway_image: str, containers: Containers, tmp_path: Path
) -> None:
    upstream = FakeUpstreamProcess(tmp_path, mode="ok")
    try:
        upstream.control(mode="slow_stream", delay=0.4)
        name, url = _serve(containers, gateway_image, _config(free_port(), upstream.url))
        stream = BackgroundStream(url, SEED_KEY)
        assert stream.first_chunk.wait(15), "no first chunk"
        d.docker("stop", "--time", "30", name, timeout=60)
        body = stream.body()
        assert body.rstrip().endswith(b"data: [DONE]"), body[-300:]
        assert b"hi" in body
        state = d.inspect(name)["State"]
        assert state["Status"] == "exited"
        assert state["ExitCode"] == 0, d.docker("logs", "--tail", "30", name, check=False).stderr
    finally:
        upstream.stop()


def test_operator_commands_run_as_one_off_containers_of_the_same_image(
    gateway_image: str, containers: Containers
) -> None:
    port = free_port()
    config = _config(port)
    config["database"]["migrations"] = "check"
    config["auth"]["bootstrap_admin"]["run_on_start"] = False
    config_file, data, env = containers.config_file(config), containers.data_dir(), _env(port)

    def one_off(*command: str) -> subprocess.CompletedProcess:
        return containers.run(gateway_image, config_file, data, env, *command, detach=False)

    pending = one_off("migrate", "--check")
    assert pending.returncode == 1, pending.stderr
    applied = one_off("migrate", "--apply")
    assert applied.returncode == 0, applied.stderr
    assert "applied 0001_" in applied.stdout
    assert one_off("migrate", "--check").returncode == 0
    admin = one_off("bootstrap-admin")
    assert admin.returncode == 0, admin.stderr
    assert "bootstrap admin admin@example.com: created" in admin.stdout
    seeded = one_off("seed-config")
    assert seeded.returncode == 0, seeded.stderr
    assert "created" in seeded.stdout
    # The database the one-off containers wrote is the one the server then serves from.
    assert (data / "gateway.db").stat().st_uid == 10001

    started = containers.run(gateway_image, config_file, data, env, detach=True)
    assert started.returncode == 0, started.stderr
    wait_http(f"http://127.0.0.1:{port}/readyz", timeout=60)
    models = httpx.get(f"http://127.0.0.1:{port}/v1/models", headers=_auth(), timeout=10)
    assert models.status_code == 200 and [m["id"] for m in models.json()["data"]] == ["echo-1"]
    session = login(f"http://127.0.0.1:{port}")
    assert session.status_code == 200, session.text
