"""A throwaway PostgreSQL server for outage tests: its own data directory and port.

Tests stop, hang (SIGSTOP) and restart it; the shared server at 5432 is never touched.
initdb refuses to run as root, so when the tests run as root the server runs as the
``postgres`` system user (its data directory is made theirs).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from tests.support.processes import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")
_START_TIMEOUT_SECONDS = 30


def _reachable_tmp() -> str | None:
    """The temp dir, unless the postgres user cannot enter it (a 0700 /tmp): then /var/tmp."""
    tmp = tempfile.gettempdir()
    if os.geteuid() == 0 and not os.stat(tmp).st_mode & 0o001 and os.path.isdir("/var/tmp"):
        return "/var/tmp"
    return None


def _as_postgres() -> dict:
    if os.geteuid() != 0:
        return {}
    user = pwd.getpwnam("postgres")
    return {"user": user.pw_uid, "group": user.pw_gid}


class ThrowawayPostgres:
    def __init__(self) -> None:
        self.port = free_port()
        # Not under pytest's tmp_path: that is private to root, the server runs as postgres.
        self.root = Path(tempfile.mkdtemp(prefix="gw-faults-pg-", dir=_reachable_tmp()))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._run_as = _as_postgres()
        if self._run_as:
            os.chown(self.root, self._run_as["user"], self._run_as["group"])
        self._pg([str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync"])
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"port = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.root}'\nfsync = off\n"
                "max_connections = 50\nshared_buffers = 16MB\n"
            )
        self.start()

    def _pg(self, args: list[str]) -> None:
        done = subprocess.run(args, capture_output=True, text=True, timeout=60, **self._run_as)
        assert done.returncode == 0, f"{args[0]} failed: {done.stdout}{done.stderr}"

    def start(self) -> None:
        self._pg([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w",
                  "-t", str(_START_TIMEOUT_SECONDS), "start"])  # fmt: skip

    def stop(self) -> None:
        self._pg([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"])

    def pids(self) -> list[int]:
        """The postmaster and every process it started (this server's only)."""
        postmaster = int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        children = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                if ppid == postmaster:
                    children.append(int(entry.name))
        return [postmaster, *children]

    def hang(self) -> list[int]:
        pids = self.pids()
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        return pids

    def resume(self, pids: list[int]) -> None:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.resume(self.pids())  # a hung server cannot act on the stop below
            subprocess.run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
                           capture_output=True, timeout=60, **self._run_as)  # fmt: skip
        shutil.rmtree(self.root, ignore_errors=True)
