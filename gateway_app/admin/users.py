"""Admin users: argon2 password hashes and the idempotent bootstrap admin."""

from __future__ import annotations

from argon2 import PasswordHasher

from gateway_app.clock import now_ms
from gateway_app.config import GatewaySettings
from gateway_app.storage import Executor

password_hasher = PasswordHasher()  # argon2id with the library's current recommended cost


async def bootstrap_admin(db: Executor, settings: GatewaySettings, reset_password: bool = False) -> str:
    """'created', 'already present', 'password reset' or 'disabled' (bootstrap off in config)."""
    plan = settings.auth.bootstrap_admin
    if not plan.enabled or plan.password is None:
        return "disabled"
    email = plan.email.lower()
    row = await db.fetchrow("SELECT id FROM admin_users WHERE email = $1", email)
    ts = now_ms()
    if row is None:
        # Replicas started together all run this: one inserts, the others find it present.
        created = await db.execute(
            "INSERT INTO admin_users (email, password_hash, must_change_password, created_at, updated_at) "
            "VALUES ($1, $2, $3, $4, $4) ON CONFLICT (email) DO NOTHING",
            email,
            password_hasher.hash(plan.password.value),
            plan.require_password_change,
            ts,
        )
        if created:
            return "created"
        row = await db.fetchrow("SELECT id FROM admin_users WHERE email = $1", email)
    if not reset_password:
        return "already present"
    await db.execute(
        "UPDATE admin_users SET password_hash = $1, must_change_password = $2, updated_at = $3, "
        "password_changed_at = $3 WHERE id = $4",
        password_hasher.hash(plan.password.value),
        plan.require_password_change,
        ts,
        row["id"],
    )
    # A reset password invalidates every session of that admin.
    await db.execute(
        "UPDATE admin_sessions SET revoked_at = $1 WHERE admin_user_id = $2 AND revoked_at IS NULL",
        ts,
        row["id"],
    )
    return "password reset"
