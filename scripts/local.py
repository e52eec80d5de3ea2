"""`make up` / `make down`: the gateway on this machine through the runbooks.

up:   playbooks/deploy.yml against the local inventory (two instances behind
      haproxy, supervised by a per-root supervisord, SQLite, the echo provider),
      which ends with the checks; then print the URL and the seeded key.
      Idempotent: a second run changes nothing and restarts nothing.
down: stop supervisord (and with it haproxy and the instances); data stays.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PLAYBOOKS = REPO / "playbooks"
# The local inventory owns the default ports; --port overrides them for this run only.
LOCAL_VARS = PLAYBOOKS / "inventories" / "local" / "group_vars" / "gateway.yml"


def _secrets(root: Path) -> dict[str, str]:
    lines = (root / "etc" / "secrets.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def up(root: Path, port: int | None) -> None:
    env = {**os.environ, "ANSIBLE_CONFIG": str(PLAYBOOKS / "ansible.cfg")}
    extra = {"gateway_root": str(root)}
    if port is not None:
        # The load balancer on PORT, the two instances on the next two ports.
        extra["gateway_lb_port"] = port
        extra["gateway_instances"] = [{"name": "a", "port": port + 1}, {"name": "b", "port": port + 2}]
    else:
        port = int(yaml.safe_load(LOCAL_VARS.read_text())["gateway_lb_port"])
    cmd = [
        str(Path(sys.executable).parent / "ansible-playbook"),
        "-i",
        "inventories/local",
        "deploy.yml",
        "-e",
        json.dumps(extra),
    ]
    print(f"$ (cd playbooks && ansible-playbook {' '.join(cmd[1:5])} '{cmd[-1]}')", flush=True)
    if subprocess.run(cmd, cwd=PLAYBOOKS, env=env).returncode != 0:
        sys.exit("deploy.yml failed: its last task says what is wrong and what to do next")
    key = _secrets(root)["GATEWAY_SEED_KEY"]
    url = f"http://127.0.0.1:{port}"
    print(f"\ngateway ready at {url}  (two instances behind haproxy; logs: {root / 'logs'}; stop: make down)")
    print(f"API key: {key}")
    print(f"try:     curl -s {url}/v1/chat/completions -H 'Authorization: Bearer {key}' \\")
    print('           -d \'{"model": "echo-1", "messages": [{"role": "user", "content": "hello"}]}\'')


def down(root: Path) -> None:
    conf = root / "etc" / "supervisord.conf"
    if not conf.exists():
        print("gateway is not deployed")
        return
    done = subprocess.run(["supervisorctl", "-c", str(conf), "shutdown"], capture_output=True, text=True)
    print("gateway stopped" if done.returncode == 0 else "gateway is not running")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument("--root", default=".run/local", help="gateway_root of the local inventory")
    parser.add_argument("--port", type=int, help="load balancer port (default: the local inventory's)")
    args = parser.parse_args()
    root = Path(args.root).resolve()
    up(root, args.port) if args.action == "up" else down(root)


if __name__ == "__main__":
    main()
