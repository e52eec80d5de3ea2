"""Admin login, sessions, first-login password rotation and login throttling.

Session tokens are random; only their SHA-256 is stored, and every admin call
checks the session row, so logout and password changes take effect at once on
every replica. Login attempts are counted in the database per client address and
per account before the password is verified (one atomic upsert each), so throttling
holds for parallel guesses and across replicas too.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import secrets
from dataclasses import dataclass

from argon2.exceptions import InvalidHashError, VerificationError

from gateway_app.admin.router import AdminPrincipal
from gateway_app.admin.users import password_hasher
from gateway_app.clock import now_ms
from gateway_app.config import AuthSettings
from gateway_app.storage import Database, Executor

log = logging.getLogger("gateway.admin.sessions")

THROTTLE_WINDOW_MS = 15 * 60 * 1000
KNOWN_ADDRESS_MS = 30 * 24 * 3600 * 1000
MAX_EMAIL_LENGTH = 320
MIN_PASSWORD_LENGTH = 12


class LoginThrottled(Exception):
    def __init__(self, scope: str, retry_after_seconds: int):
        self.retry_after_seconds = retry_after_seconds
        where = "from this address" if scope == "address" else "to this account from new addresses"
        super().__init__(f"too many failed logins {where}; retry in {retry_after_seconds}s")


class LoginUnavailable(Exception):
    """The throttle could not count the attempt (database locked, full or down): refused unverified."""


class InvalidCredentials(Exception):
    pass


class WeakPassword(Exception):
    pass


@dataclass
class NewSession:
    token: str
    expires_at: int
    must_change_password: bool


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the account does not exist, so timing does not reveal which emails
    exist. Made on first use, in the verifying thread: argon2 costs ~0.1 s, not worth paying at
    every process start (the CLI and each instance import this module)."""
    return password_hasher.hash("not-a-real-password")


def _verify_blocking(password_hash: str | None, password: str) -> bool:
    try:
        return password_hasher.verify(password_hash or _dummy_hash(), password)
    except (VerificationError, InvalidHashError):
        return False


async def _verify(password_hash: str | None, password: str) -> bool:
    # argon2 is deliberately slow (tens of ms): keep it off the event loop.
    return await asyncio.to_thread(_verify_blocking, password_hash, password)


@dataclass(frozen=True)
class LoginLimits:
    """Attempts per THROTTLE_WINDOW_MS: from one client address (any accounts), and against one
    account from addresses it has not logged in from within KNOWN_ADDRESS_MS."""

    per_address: int
    per_account: int

    @classmethod
    def of(cls, auth: AuthSettings) -> LoginLimits:
        return cls(auth.login_attempts_per_address, auth.login_attempts_per_account)


@dataclass(frozen=True)
class _Limit:
    scope: str
    subject: str
    max_attempts: int


# One upsert both checks and takes a slot: a new window starts over at 1, a full window is
# left alone (the WHERE makes the update a no-op, so nothing is returned). Row locks
# (PostgreSQL) and the single writer (SQLite) make concurrent guesses queue on this row.
_TAKE_SLOT = (
    "INSERT INTO auth_throttle (scope, subject, window_start, failures) VALUES ($1, $2, $3, 1) "
    "ON CONFLICT (scope, subject) DO UPDATE SET "
    "failures = CASE WHEN $3 - auth_throttle.window_start >= $4 THEN 1 ELSE auth_throttle.failures + 1 END, "
    "window_start = CASE WHEN $3 - auth_throttle.window_start >= $4 THEN $3 "
    "ELSE auth_throttle.window_start END "
    "WHERE $3 - auth_throttle.window_start >= $4 OR auth_throttle.failures < $5 "
    "RETURNING failures"
)


async def _limits(db: Executor, allowed: LoginLimits, email: str, client_addr: str, at: int) -> list[_Limit]:
    """Per address always; account-wide only from addresses this account has not logged in from.

    So a stranger who exhausts the account-wide budget from many addresses delays logins
    from new places only: the admin's own recent addresses keep working.
    """
    limits = [_Limit("address", client_addr, allowed.per_address)]
    known = await db.fetchval(
        "SELECT 1 FROM admin_sessions s JOIN admin_users u ON u.id = s.admin_user_id "
        "WHERE u.email = $1 AND s.client_addr = $2 AND s.created_at > $3 LIMIT 1",
        email,
        client_addr,
        at - KNOWN_ADDRESS_MS,
    )
    if known is None:
        limits.append(_Limit("account", email, allowed.per_account))
    return limits


async def _take_slots(db: Database, limits: list[_Limit], at: int) -> None:
    """Count this attempt against every limit before the password is verified, or refuse it.

    All or nothing in one transaction: a refused attempt takes no slot anywhere.
    """
    async with db.transaction() as tx:
        for limit in limits:
            taken = await tx.fetchval(
                _TAKE_SLOT, limit.scope, limit.subject, at, THROTTLE_WINDOW_MS, limit.max_attempts
            )
            if taken is None:
                window_start = await tx.fetchval(
                    "SELECT window_start FROM auth_throttle WHERE scope = $1 AND subject = $2",
                    limit.scope,
                    limit.subject,
                )
                raise LoginThrottled(limit.scope, max(1, (window_start + THROTTLE_WINDOW_MS - at) // 1000))


THROTTLE_CLEANUP_BATCH = 1000

# A row whose window has passed counts for nothing (the next attempt starts a new window at 1),
# so deleting it changes no decision. Bounded per round; the outer window_start check keeps a row
# that a concurrent attempt has just moved into a new window (PostgreSQL re-checks it on the new
# row version, SQLite has a single writer).
_DELETE_EXPIRED = (
    "DELETE FROM auth_throttle WHERE window_start <= $1 AND (scope, subject) IN "
    "(SELECT scope, subject FROM auth_throttle WHERE window_start <= $1 LIMIT $2)"
)


async def delete_expired_throttle_rows(db: Database, batch: int = THROTTLE_CLEANUP_BATCH) -> int:
    """Deletes up to ``batch`` login-throttle rows whose window has ended; returns how many."""
    deleted = await db.execute(_DELETE_EXPIRED, now_ms() - THROTTLE_WINDOW_MS, batch)
    if deleted:
        log.info("expired login-throttle rows deleted", extra={"rows": deleted})
    return deleted


async def _give_back_slots(db: Database, limits: list[_Limit], at: int) -> None:
    """A successful login does not count as a failure (if its window is still the current one)."""
    async with db.transaction() as tx:
        for limit in limits:
            await tx.execute(
                "UPDATE auth_throttle SET failures = failures - 1 "
                "WHERE scope = $1 AND subject = $2 AND window_start <= $3 AND failures > 0",
                limit.scope,
                limit.subject,
                at,
            )


async def _open_session(
    db: Executor, admin_user_id: int, client_addr: str, ttl_seconds: int
) -> tuple[str, int]:
    token = secrets.token_urlsafe(32)
    at = now_ms()
    expires_at = at + ttl_seconds * 1000
    await db.execute(
        "INSERT INTO admin_sessions (token_hash, admin_user_id, client_addr, created_at, expires_at) "
        "VALUES ($1, $2, $3, $4, $5)",
        _token_hash(token),
        admin_user_id,
        client_addr,
        at,
        expires_at,
    )
    return token, expires_at


async def login(
    db: Database, allowed: LoginLimits, email: str, password: str, client_addr: str, ttl_seconds: int
) -> NewSession:
    email = email.strip().lower()[:MAX_EMAIL_LENGTH]
    at = now_ms()
    try:
        limits = await _limits(db, allowed, email, client_addr, at)
        await _take_slots(db, limits, at)
    except LoginThrottled:
        raise
    except Exception as exc:
        # Fail closed: an attempt that cannot be counted is never verified.
        log.exception("login refused: the throttle could not count the attempt")
        raise LoginUnavailable() from exc
    row = await db.fetchrow(
        "SELECT id, password_hash, must_change_password, disabled FROM admin_users WHERE email = $1", email
    )
    valid = await _verify(row["password_hash"] if row else None, password)
    if row is None or not valid or row["disabled"]:
        raise InvalidCredentials()
    await _give_back_slots(db, limits, at)
    token, expires_at = await _open_session(db, row["id"], client_addr, ttl_seconds)
    return NewSession(token, expires_at, bool(row["must_change_password"]))


async def authenticate(db: Database, token: str) -> AdminPrincipal | None:
    row = await db.fetchrow(
        "SELECT s.id AS session_id, s.expires_at, u.id AS user_id, u.email, u.must_change_password "
        "FROM admin_sessions s JOIN admin_users u ON u.id = s.admin_user_id "
        "WHERE s.token_hash = $1 AND s.revoked_at IS NULL AND s.expires_at > $2 AND NOT u.disabled",
        _token_hash(token),
        now_ms(),
    )
    if row is None:
        return None
    return AdminPrincipal(
        admin_user_id=row["user_id"],
        email=row["email"],
        session_id=row["session_id"],
        session_expires_at=row["expires_at"],
        must_change_password=bool(row["must_change_password"]),
    )


async def logout(db: Database, session_id: int) -> None:
    await db.execute(
        "UPDATE admin_sessions SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL", now_ms(), session_id
    )


async def change_password(
    db: Database,
    principal: AdminPrincipal,
    current_password: str,
    new_password: str,
    client_addr: str,
    ttl_seconds: int,
) -> NewSession:
    if len(new_password) < MIN_PASSWORD_LENGTH:
        raise WeakPassword(f"the new password must have at least {MIN_PASSWORD_LENGTH} characters")
    if new_password == current_password:
        raise WeakPassword("the new password must differ from the current one")
    stored = await db.fetchval("SELECT password_hash FROM admin_users WHERE id = $1", principal.admin_user_id)
    if stored is None or not await _verify(stored, current_password):
        raise InvalidCredentials()
    new_hash = await asyncio.to_thread(password_hasher.hash, new_password)
    at = now_ms()
    async with db.transaction() as tx:
        await tx.execute(
            "UPDATE admin_users SET password_hash = $1, must_change_password = $2, password_changed_at = $3, "
            "updated_at = $3 WHERE id = $4",
            new_hash,
            False,
            at,
            principal.admin_user_id,
        )
        # Every session of this admin ends, this one included; the caller gets a fresh one.
        await tx.execute(
            "UPDATE admin_sessions SET revoked_at = $1 WHERE admin_user_id = $2 AND revoked_at IS NULL",
            at,
            principal.admin_user_id,
        )
        token, expires_at = await _open_session(tx, principal.admin_user_id, client_addr, ttl_seconds)
    return NewSession(token, expires_at, False)
