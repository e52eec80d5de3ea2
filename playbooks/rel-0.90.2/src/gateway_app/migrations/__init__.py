"""Versioned SQL migrations, one directory per backend, checked by name and checksum.

Migrations are additive by default (expand/contract): the previous release keeps
working on the new schema, so during a rolling upgrade old replicas stay ready
after the new release has migrated, and a code rollback needs no restore. A
migration that the previous release cannot run on says so on a line of its own:
``-- compatibility: breaking``; then older releases refuse the database.

The accepted history starts at the baseline (0001). Anything else found in a
database (tables without a history, an unknown or altered migration, a gap)
is refused with "database reset required", because guessing how to repair a
foreign history is how data gets lost. A history *newer* than this release is
a different error: that database belongs to a newer release (see rollback).
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass, field
from importlib import resources

from gateway_app.clock import now_ms
from gateway_app.storage import Database, Executor

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_COMPATIBILITY = re.compile(r"^--\s*compatibility:\s*(\S+)\s*$", re.MULTILINE)
HISTORY_TABLE = "schema_migrations"
RECOVERY_HINT = (
    "Back up the database, recreate it (`gateway migrate --reset --confirm-reset`, or "
    "playbooks/migration_recovery.yml with -e confirm_reset=true), then run "
    "`gateway migrate --apply`, `gateway seed-config` and `gateway bootstrap-admin`."
)


class MigrationError(Exception):
    """Migrations cannot proceed; the message says why and what to do."""


class ResetRequired(MigrationError):
    def __init__(self, reason: str):
        super().__init__(f"database reset required: {reason}. {RECOVERY_HINT}")


class SchemaTooNew(MigrationError):
    def __init__(self, applied: int, known: int):
        self.applied, self.known = applied, known
        super().__init__(
            f"database schema is at version {applied} but this release knows versions up to {known}: "
            "it was migrated by a newer release. Run that release, or restore a backup taken "
            "before the upgrade (a code rollback is not a database rollback)."
        )


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @functools.cached_property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def breaking(self) -> bool:
        match = _COMPATIBILITY.search(self.sql)
        if match is None or match.group(1) == "additive":
            return False
        if match.group(1) == "breaking":
            return True
        raise MigrationError(
            f"migration {self.version:04d}_{self.name}: compatibility must be 'additive' or 'breaking', "
            f"not '{match.group(1)}'"
        )


@dataclass
class MigrationStatus:
    applied: list[tuple[int, str]] = field(default_factory=list)
    pending: list[Migration] = field(default_factory=list)
    latest_known: int = 0
    # Additive migrations applied by a newer release: this release still runs on them.
    ahead: list[int] = field(default_factory=list)

    @property
    def current_version(self) -> int:
        return max((v for v, _ in self.applied), default=0)

    @property
    def is_current(self) -> bool:
        """This release can run on the database as it is (nothing pending)."""
        return not self.pending

    @property
    def database_version(self) -> int:
        return max([self.current_version, *self.ahead])

    def summary(self) -> str:
        if self.pending:
            return (
                f"{len(self.pending)} pending migration(s): schema at {self.current_version}, "
                f"release needs {self.latest_known}; run `gateway migrate --apply`"
            )
        if self.ahead:
            newer = ", ".join(f"{v:04d}" for v in self.ahead)
            return (
                f"schema is at version {self.database_version}, ahead of this release ({self.latest_known}) "
                f"by additive migration(s) {newer}: this release runs on it"
            )
        return f"schema is current at version {self.current_version}"


@functools.cache
def available(backend: str) -> tuple[Migration, ...]:
    """This release's migrations, read from the package once (readiness probes call check())."""
    folder = resources.files(__package__) / backend
    found = []
    for entry in folder.iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text()))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise MigrationError(f"migration files for {backend} are not numbered 0001..N without gaps")
    return tuple(found)


async def _user_tables(db: Executor, backend: str) -> set[str]:
    if backend == "sqlite":
        rows = await db.fetch(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    else:
        rows = await db.fetch("SELECT tablename AS name FROM pg_tables WHERE schemaname = current_schema()")
    return {r["name"] for r in rows}


async def inspect(db: Executor, backend: str) -> MigrationStatus:
    known = available(backend)
    status = MigrationStatus(latest_known=len(known))
    tables = await _user_tables(db, backend)
    if HISTORY_TABLE not in tables:
        if tables:
            raise ResetRequired(
                f"tables exist ({', '.join(sorted(tables)[:5])}{', ...' if len(tables) > 5 else ''}) "
                "but there is no migration history: this is a pre-baseline database"
            )
        status.pending = list(known)
        return status
    rows = await db.fetch(f"SELECT version, name, checksum, breaking FROM {HISTORY_TABLE} ORDER BY version")
    by_version = {m.version: m for m in known}
    for row in rows:
        version, name, checksum = int(row["version"]), row["name"], row["checksum"]
        if version > status.latest_known:
            if row["breaking"]:
                raise SchemaTooNew(max(int(r["version"]) for r in rows), status.latest_known)
            status.ahead.append(version)
            continue
        expected = by_version.get(version)
        if expected is None:
            raise ResetRequired(f"applied migration {version:04d} is not part of this release's history")
        if name != expected.name or checksum != expected.checksum:
            raise ResetRequired(
                f"applied migration {version:04d}_{name} differs from this release's "
                f"{version:04d}_{expected.name} (name or checksum changed)"
            )
        status.applied.append((version, name))
    applied_versions = {v for v, _ in status.applied}
    status.pending = [m for m in known if m.version not in applied_versions]
    if status.pending and status.applied and status.pending[0].version < status.current_version:
        raise ResetRequired(
            f"migration {status.pending[0].version:04d} is missing from an otherwise later history"
        )
    return status


async def check(db: Database) -> MigrationStatus:
    return await inspect(db, db.backend)


async def apply(db: Database) -> list[Migration]:
    """Apply pending migrations in one exclusive transaction.

    Concurrent callers (replicas, Jobs) queue on the lock and then find nothing to do.
    """
    async with db.transaction(exclusive=True) as tx:
        status = await inspect(tx, db.backend)
        if not status.pending:
            return []
        if HISTORY_TABLE not in await _user_tables(tx, db.backend):
            await tx.execute(
                f"CREATE TABLE {HISTORY_TABLE} (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                "checksum TEXT NOT NULL, applied_at BIGINT NOT NULL, breaking BOOLEAN NOT NULL DEFAULT false)"
            )
        for migration in status.pending:
            for statement in split_statements(migration.sql):
                await tx.execute(statement)
            await tx.execute(
                f"INSERT INTO {HISTORY_TABLE} (version, name, checksum, applied_at, breaking) "
                "VALUES ($1, $2, $3, $4, $5)",
                migration.version,
                migration.name,
                migration.checksum,
                now_ms(),
                migration.breaking,
            )
        return status.pending


async def reset(db: Database) -> list[str]:
    """Drop every table in the gateway's schema. Destroys data: callers demand confirmation."""
    async with db.transaction(exclusive=True) as tx:
        tables = sorted(await _user_tables(tx, db.backend))
        for table in tables:
            suffix = " CASCADE" if db.backend == "postgres" else ""
            await tx.execute(f'DROP TABLE IF EXISTS "{table}"{suffix}')
        return tables


def split_statements(sql: str) -> list[str]:
    """Split a migration file on top-level semicolons (the files contain no procedural code)."""
    lines = [line for line in sql.splitlines() if not line.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
