"""Gateway API keys: format, hashing, storage, and the in-memory cache the hot path reads.

A key is ``gwk_<public_id>.<secret>``. Only the SHA-256 of the whole key is
stored: keys are long random strings, so a fast hash is safe (unlike
passwords), and it keeps authentication in the microseconds.

Every replica holds all active keys in memory and reloads the rows changed
since its last look every ``auth.key_cache_refresh_seconds``; that interval is
the bound on how long a revoked key keeps working anywhere.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import secrets
import string
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import orjson

from gateway_app.background import Periodic
from gateway_app.clock import now_ms
from gateway_app.errors import NotFound
from gateway_app.storage import Database, Executor, Row

log = logging.getLogger("gateway.keys")

KEY_PATTERN = re.compile(r"^gwk_([a-z0-9]{12})\.([A-Za-z0-9]{40})$")
_ID_ALPHABET = string.ascii_lowercase + string.digits
_SECRET_ALPHABET = string.ascii_letters + string.digits
ALL_MODELS = "*"
# Rows whose updated_at falls this close to the last refresh are read again, so
# that clock skew between replicas or a slow commit cannot hide a change.
_REFRESH_OVERLAP_MS = 5_000
# Database reads for key ids this replica has not loaded (a key made moments ago on another
# replica, or a forged id): at most this many per second per replica, with this burst.
# Past that, an unknown id is refused without a query; real new keys still arrive with
# the next refresh. Ids found missing are remembered (bounded) until then.
UNKNOWN_LOOKUPS_PER_SECOND = 20.0
UNKNOWN_LOOKUP_BURST = 20
_UNKNOWN_IDS_REMEMBERED = 10_000
# One lookup of an id serves every request that asks for it meanwhile; a hung database
# must not hold them past this.
LOOKUP_TIMEOUT_SECONDS = 1.0


def generate_key() -> str:
    public_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(12))
    secret = "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(40))
    return f"gwk_{public_id}.{secret}"


def parse_key(key: str) -> tuple[str, str] | None:
    """(public_id, sha256 hex) of a well-formed key, else None."""
    match = KEY_PATTERN.match(key)
    if match is None:
        return None
    return match.group(1), hashlib.sha256(key.encode()).hexdigest()


def encode_grants(models: str | list[str]) -> str:
    return ALL_MODELS if models in ("all", ALL_MODELS) else orjson.dumps(sorted(models)).decode()


def decode_grants(stored: str) -> frozenset[str] | None:
    """None means every model."""
    return None if stored == ALL_MODELS else frozenset(orjson.loads(stored))


@dataclass(frozen=True, slots=True)
class KeyIdentity:
    """What the hot path knows about a caller once its key is verified."""

    key_id: int
    public_id: str
    name: str
    service_account_id: int
    service_account: str
    grants: frozenset[str] | None
    secret_hash: str
    account_disabled: bool
    # Earliest of expiry and (possibly scheduled) revocation, epoch ms; None = open-ended.
    ends_at: int | None

    def usable(self, at_ms: int) -> bool:
        return not self.account_disabled and (self.ends_at is None or self.ends_at > at_ms)

    def may_use(self, model: str) -> bool:
        return self.grants is None or model in self.grants


_KEY_COLUMNS = """
    k.id, k.public_id, k.name, k.secret_hash, k.model_grants, k.service_account_id,
    k.revoked_at, k.expires_at, k.updated_at, s.name AS account_name, s.disabled AS account_disabled
"""
_KEY_FROM = "FROM api_keys k JOIN service_accounts s ON s.id = k.service_account_id"


def _identity(row: Row) -> KeyIdentity:
    ends = [t for t in (row["revoked_at"], row["expires_at"]) if t is not None]
    return KeyIdentity(
        key_id=row["id"],
        public_id=row["public_id"],
        name=row["name"],
        service_account_id=row["service_account_id"],
        service_account=row["account_name"],
        grants=decode_grants(row["model_grants"]),
        secret_hash=row["secret_hash"],
        account_disabled=bool(row["account_disabled"]),
        ends_at=min(ends) if ends else None,
    )


class _TokenBucket:
    """``rate`` tokens a second up to ``burst``; one event loop, so no lock."""

    def __init__(self, rate: float, burst: int):
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._at = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


class KeyCache:
    def __init__(self, db: Database, refresh_seconds: float):
        self._db = db
        self._refresh_seconds = refresh_seconds
        self._by_public_id: dict[str, KeyIdentity] = {}
        # Unknown ids are remembered briefly (oldest forgotten first) and lookups of new
        # ones are rate-limited, so garbage keys cannot hammer the database.
        self._unknown_until: dict[str, float] = {}
        self._lookup_budget = _TokenBucket(UNKNOWN_LOOKUPS_PER_SECOND, UNKNOWN_LOOKUP_BURST)
        # A burst of requests with a key this replica has not loaded yet (made moments ago
        # elsewhere) shares one query and one token: otherwise all but the first 20 would
        # be refused as over the rate.
        self._in_flight: dict[str, asyncio.Future[KeyIdentity | None]] = {}
        # Lookups of ids not in memory, by outcome: found, unknown (a query found nothing),
        # remembered (known missing, no query), limited (over the rate, no query) and
        # joined (answered by a lookup of the same id already under way).
        self.lookups = {"found": 0, "unknown": 0, "remembered": 0, "limited": 0, "joined": 0}
        self._watermark = 0
        self._refresher = Periodic("key-cache-refresh", refresh_seconds, self.refresh)

    async def start(self) -> None:
        await self.refresh()
        self._refresher.start()

    async def stop(self) -> None:
        await self._refresher.stop()

    async def refresh(self) -> int:
        since = max(self._watermark - _REFRESH_OVERLAP_MS, 0)
        started = now_ms()
        rows = await self._db.fetch(
            f"SELECT {_KEY_COLUMNS} {_KEY_FROM} WHERE k.updated_at >= $1 OR s.updated_at >= $1", since
        )
        for row in rows:
            self._store(row)
        self._watermark = started
        return len(rows)

    def _store(self, row: Row) -> KeyIdentity:
        identity = _identity(row)
        self._by_public_id[identity.public_id] = identity
        self._unknown_until.pop(identity.public_id, None)
        return identity

    async def authenticate(self, key: str) -> KeyIdentity | None:
        parsed = parse_key(key)
        if parsed is None:
            return None
        public_id, digest = parsed
        identity = self._by_public_id.get(public_id)
        if identity is None:
            identity = await self._load_one(public_id)
            if identity is None:
                return None
        if not hmac.compare_digest(identity.secret_hash, digest):
            return None
        if (identity.ends_at is not None or identity.account_disabled) and not identity.usable(now_ms()):
            return None
        return identity

    async def _load_one(self, public_id: str) -> KeyIdentity | None:
        # A key created moments ago on another replica: read it once, then cache it.
        pending = self._in_flight.get(public_id)
        if pending is not None:
            self.lookups["joined"] += 1
            # Shielded: a caller that gives up (its own deadline, a client gone) must not
            # cancel the lookup the others wait on; the lookup has its own deadline.
            return await asyncio.shield(pending)
        if self._unknown_until.get(public_id, 0.0) > time.monotonic():
            self.lookups["remembered"] += 1
            return None
        if not self._lookup_budget.take():
            self.lookups["limited"] += 1
            return None
        lookup = asyncio.ensure_future(self._query_one(public_id))
        self._in_flight[public_id] = lookup
        lookup.add_done_callback(lambda _: self._in_flight.pop(public_id, None))
        return await asyncio.shield(lookup)

    async def _query_one(self, public_id: str) -> KeyIdentity | None:
        async with asyncio.timeout(LOOKUP_TIMEOUT_SECONDS):
            row = await self._db.fetchrow(
                f"SELECT {_KEY_COLUMNS} {_KEY_FROM} WHERE k.public_id = $1", public_id
            )
        if row is None:
            self.lookups["unknown"] += 1
            if len(self._unknown_until) >= _UNKNOWN_IDS_REMEMBERED:
                del self._unknown_until[next(iter(self._unknown_until))]
            self._unknown_until[public_id] = time.monotonic() + self._refresh_seconds
            return None
        self.lookups["found"] += 1
        return self._store(row)


# --- storage operations shared by the CLI, seed-config and the admin API ---


async def ensure_service_account(db: Executor, name: str, source: str = "api") -> int:
    ts = now_ms()
    await db.execute(
        "INSERT INTO service_accounts (name, source, created_at, updated_at) VALUES ($1, $2, $3, $3) "
        "ON CONFLICT (name) DO NOTHING",
        name,
        source,
        ts,
    )
    return await db.fetchval("SELECT id FROM service_accounts WHERE name = $1", name)


async def insert_key(
    db: Executor,
    key: str,
    name: str,
    service_account_id: int,
    models: str | list[str] = "all",
    source: str = "api",
    rotated_from_id: int | None = None,
    expires_at: int | None = None,
) -> int:
    parsed = parse_key(key)
    if parsed is None:
        raise ValueError("key does not have the form gwk_<12 chars [a-z0-9]>.<40 chars [A-Za-z0-9]>")
    public_id, digest = parsed
    ts = now_ms()
    return await db.fetchval(
        "INSERT INTO api_keys (public_id, secret_hash, name, service_account_id, model_grants, source, "
        "rotated_from_id, created_at, updated_at, expires_at) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9) RETURNING id",
        public_id,
        digest,
        name,
        service_account_id,
        encode_grants(models),
        source,
        rotated_from_id,
        ts,
        expires_at,
    )


async def revoke_key(db: Executor, public_id: str, after_seconds: float = 0) -> bool:
    """Revoke now, or schedule it (a rotation's grace period).

    A revocation already scheduled later is brought forward (a leaked key need not live out
    its grace period); one never moves later. False if unknown or revoked by then already.
    """
    ts = now_ms()
    revoke_at = ts + int(after_seconds * 1000)
    count = await db.execute(
        "UPDATE api_keys SET revoked_at = $1, updated_at = $2 "
        "WHERE public_id = $3 AND (revoked_at IS NULL OR revoked_at > $1)",
        revoke_at,
        ts,
        public_id,
    )
    return count > 0


def key_row_to_dict(row: Row) -> dict[str, Any]:
    """A key as the CLI and admin API show it: never the secret or its hash."""
    grants = decode_grants(row["model_grants"])
    return {
        "id": row["id"],
        "public_id": row["public_id"],
        "name": row["name"],
        "service_account": row["account_name"],
        "models": "all" if grants is None else sorted(grants),
        "created_at": row["created_at"],
        "expires_at": row["expires_at"],
        "revoked_at": row["revoked_at"],
        "source": row["source"],
    }


async def list_keys(db: Executor, include_revoked: bool = False) -> list[dict[str, Any]]:
    """Keys not revoked yet (those with a scheduled revocation included), or all of them."""
    select = f"SELECT k.*, s.name AS account_name {_KEY_FROM}"
    if include_revoked:
        rows = await db.fetch(f"{select} ORDER BY k.id")
    else:
        rows = await db.fetch(
            f"{select} WHERE k.revoked_at IS NULL OR k.revoked_at > $1 ORDER BY k.id", now_ms()
        )
    return [key_row_to_dict(r) for r in rows]


def normalize_public_id(text: str) -> str:
    """Accepts 'abc…', 'gwk_abc…' or a whole key; returns the public id."""
    return text.strip().removeprefix("gwk_").split(".", 1)[0]


def validate_grants(models: Any, known_models: Collection[str]) -> str | list[str]:
    """'all' or a non-empty list of configured model names; ValueError naming what is wrong."""
    if models in ("all", ALL_MODELS):
        return "all"
    if not isinstance(models, list) or not models or not all(isinstance(m, str) and m for m in models):
        raise ValueError("models must be 'all' or a non-empty list of model names")
    unknown = sorted(set(models) - set(known_models))
    if unknown:
        raise ValueError(
            f"unknown model(s) {', '.join(unknown)}; configured: {', '.join(sorted(known_models))}"
        )
    return sorted(set(models))


async def account_id_by_name(db: Executor, name: str) -> int:
    account_id = await db.fetchval("SELECT id FROM service_accounts WHERE name = $1", name)
    if account_id is None:
        raise NotFound(f"no service account '{name}'")
    return account_id


async def get_key(db: Executor, public_id: str) -> dict[str, Any]:
    row = await db.fetchrow(
        f"SELECT k.*, s.name AS account_name {_KEY_FROM} WHERE k.public_id = $1", public_id
    )
    if row is None:
        raise NotFound(f"no key gwk_{public_id}")
    return key_row_to_dict(row)


async def create_key(
    db: Database,
    service_account: str,
    name: str,
    models: str | list[str] = "all",
    expires_in_seconds: int | None = None,
    source: str = "api",
    create_account: bool = False,
) -> tuple[str, dict[str, Any]]:
    """(the key, shown once; the key as listed). ``create_account`` makes the owner if it is missing."""
    key = generate_key()
    expires_at = now_ms() + expires_in_seconds * 1000 if expires_in_seconds else None
    async with db.transaction() as tx:
        if create_account:
            account_id = await ensure_service_account(tx, service_account, source)
        else:
            account_id = await account_id_by_name(tx, service_account)
        await insert_key(tx, key, name, account_id, models, source=source, expires_at=expires_at)
        return key, await get_key(tx, normalize_public_id(key))


async def revoke_active_key(db: Executor, public_id: str, after_seconds: float = 0) -> dict[str, Any]:
    """Revoke (now, or bring a scheduled revocation forward) and return the key as listed.

    NotFound if the key is unknown or revoked by then already.
    """
    if not await revoke_key(db, public_id, after_seconds):
        raise NotFound(f"no key gwk_{public_id} that is active or scheduled to be revoked later")
    return await get_key(db, public_id)


async def rotate_key(
    db: Database, public_id: str, revoke_old_after_seconds: float | None = None, source: str = "api"
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """A replacement with the same owner, name, grants (and so budget) and lifetime.

    The old key keeps working until revoked; with ``revoke_old_after_seconds`` its
    revocation is scheduled that far ahead (0: at once), in the same transaction.
    Returns (new key shown once, new key as listed, old key as listed).
    """
    async with db.transaction() as tx:
        old = await tx.fetchrow("SELECT * FROM api_keys WHERE public_id = $1", public_id)
        if old is None or (old["revoked_at"] is not None and old["revoked_at"] <= now_ms()):
            raise NotFound(f"no active key gwk_{public_id}")
        lifetime = old["expires_at"] - old["created_at"] if old["expires_at"] is not None else None
        key = generate_key()
        await insert_key(
            tx,
            key,
            old["name"],
            old["service_account_id"],
            _grants_as_models(old["model_grants"]),
            source=source,
            rotated_from_id=old["id"],
            expires_at=now_ms() + lifetime if lifetime is not None else None,
        )
        if revoke_old_after_seconds is not None:
            await revoke_key(tx, public_id, revoke_old_after_seconds)
        return key, await get_key(tx, normalize_public_id(key)), await get_key(tx, public_id)


def _grants_as_models(stored: str) -> str | list[str]:
    grants = decode_grants(stored)
    return "all" if grants is None else sorted(grants)
