"""`make up` / `make down`: the gateway on this machine with the embedded default config.

Secrets are generated once into RUN_DIR/secrets.env (mode 0600) and reused, so
the printed key keeps working across restarts.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "gateway_app" / "examples" / "local.yaml"
URL = "http://127.0.0.1:8080"


def _secrets(run_dir: Path) -> dict[str, str]:
    path = run_dir / "secrets.env"
    if not path.exists():
        from gateway_app.keys import generate_key

        path.touch(mode=0o600)
        path.write_text(
            f"GATEWAY_SEED_KEY={generate_key()}\nGATEWAY_BOOTSTRAP_ADMIN_PASSWORD={secrets.token_urlsafe(18)}\n"
        )
    return dict(line.split("=", 1) for line in path.read_text().split())


def _ready() -> bool:
    try:
        with urllib.request.urlopen(URL + "/readyz", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def _gateway(run_dir: Path, env: dict[str, str], *args: str) -> None:
    cmd = [sys.executable, "-m", "gateway_app", *args, "--config", str(CONFIG)]
    result = subprocess.run(cmd, cwd=run_dir, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"`gateway {' '.join(args)}` failed:\n{result.stderr}")


def up(run_dir: Path) -> None:
    (run_dir / "data").mkdir(parents=True, exist_ok=True)
    values = _secrets(run_dir)
    env = {**os.environ, **values}
    if not _ready():
        _gateway(run_dir, env, "migrate", "--apply")
        _gateway(run_dir, env, "seed-config")
        log = (run_dir / "gateway.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway_app", "serve", "--config", str(CONFIG)],
            cwd=run_dir,
            env=env,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        (run_dir / "gateway.pid").write_text(str(proc.pid))
        deadline = time.monotonic() + 30
        while not _ready():
            if proc.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"gateway did not become ready; see {run_dir / 'gateway.log'}")
            time.sleep(0.1)
    key = values["GATEWAY_SEED_KEY"]
    print(f"gateway ready at {URL}  (logs: {run_dir / 'gateway.log'}, stop: make down)")
    print(f"API key: {key}")
    print(f"try:     curl -s {URL}/v1/chat/completions -H 'Authorization: Bearer {key}' \\")
    print('           -d \'{"model": "echo-1", "messages": [{"role": "user", "content": "hello"}]}\'')


def down(run_dir: Path) -> None:
    pid_file = run_dir / "gateway.pid"
    if not pid_file.exists():
        print("gateway is not running")
        return
    pid = int(pid_file.read_text())
    try:
        os.kill(pid, signal.SIGTERM)
        for _ in range(300):
            os.kill(pid, 0)
            time.sleep(0.1)
    except ProcessLookupError:
        pass
    pid_file.unlink()
    print("gateway stopped")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument("--run-dir", default=".run")
    args = parser.parse_args()
    run_dir = Path(args.run_dir).resolve()
    up(run_dir) if args.action == "up" else down(run_dir)


if __name__ == "__main__":
    main()
