"""Admin API helpers for tests: log in as the bootstrap admin, build bearer headers."""

from __future__ import annotations

import httpx

ADMIN_EMAIL = "admin@example.com"


def login(url: str, email: str = ADMIN_EMAIL, password: str | None = None, client: str | None = None):
    from tests.conftest import ADMIN_PASSWORD

    headers = {"X-Forwarded-For": client} if client else {}
    return httpx.post(
        url + "/admin/api/session",
        json={"email": email, "password": ADMIN_PASSWORD if password is None else password},
        headers=headers,
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
