"""Admin login, sessions, first-login password rotation and login throttling.

Session tokens are random; only their SHA-256 is stored, and every admin call
checks the session row, so logout and password changes take effect at once on
every replica. Failed logins are counted in the database per account and per
client address, so throttling holds across replicas too.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from dataclasses import dataclass

from argon2.exceptions import InvalidHashError, VerificationError

from gateway_app.admin.router import AdminPrincipal
from gateway_app.admin_users import password_hasher
from gateway_app.clock import now_ms
from gateway_app.storage import Database, Executor

THROTTLE_MAX_FAILURES = 10
THROTTLE_WINDOW_MS = 15 * 60 * 1000
MIN_PASSWORD_LENGTH = 12
# Verified against when the account does not exist, so timing does not reveal which emails exist.
_DUMMY_HASH = password_hasher.hash("not-a-real-password")


class LoginThrottled(Exception):
    def __init__(self, retry_after_seconds: int):
        self.retry_after_seconds = retry_after_seconds
        super().__init__(f"too many failed logins; retry in {retry_after_seconds}s")


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


async def _verify(password_hash: str, password: str) -> bool:
    # argon2 is deliberately slow (tens of ms): keep it off the event loop.
    try:
        return await asyncio.to_thread(password_hasher.verify, password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def _throttle_subjects(email: str, client_addr: str) -> list[tuple[str, str]]:
    return [("account", email), ("address", client_addr)]


async def _check_throttle(db: Executor, subjects: list[tuple[str, str]], at: int) -> None:
    for scope, subject in subjects:
        row = await db.fetchrow(
            "SELECT window_start, failures FROM auth_throttle WHERE scope = $1 AND subject = $2",
            scope,
            subject,
        )
        if row and row["failures"] >= THROTTLE_MAX_FAILURES and at - row["window_start"] < THROTTLE_WINDOW_MS:
            raise LoginThrottled(max(1, (row["window_start"] + THROTTLE_WINDOW_MS - at) // 1000))


async def _record_failure(db: Database, subjects: list[tuple[str, str]], at: int) -> None:
    async with db.transaction() as tx:
        for scope, subject in subjects:
            # A window older than THROTTLE_WINDOW_MS starts over at this failure.
            await tx.execute(
                "INSERT INTO auth_throttle (scope, subject, window_start, failures) VALUES ($1, $2, $3, 1) "
                "ON CONFLICT (scope, subject) DO UPDATE SET "
                "failures = CASE WHEN $3 - auth_throttle.window_start >= $4 THEN 1 "
                "ELSE auth_throttle.failures + 1 END, "
                "window_start = CASE WHEN $3 - auth_throttle.window_start >= $4 THEN $3 "
                "ELSE auth_throttle.window_start END",
                scope,
                subject,
                at,
                THROTTLE_WINDOW_MS,
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


async def login(db: Database, email: str, password: str, client_addr: str, ttl_seconds: int) -> NewSession:
    email = email.strip().lower()
    at = now_ms()
    subjects = _throttle_subjects(email, client_addr)
    await _check_throttle(db, subjects, at)
    row = await db.fetchrow(
        "SELECT id, password_hash, must_change_password, disabled FROM admin_users WHERE email = $1", email
    )
    valid = await _verify(row["password_hash"] if row else _DUMMY_HASH, password)
    if row is None or not valid or row["disabled"]:
        await _record_failure(db, subjects, at)
        raise InvalidCredentials()
    await db.execute("DELETE FROM auth_throttle WHERE scope = 'account' AND subject = $1", email)
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
