"""Admin API helpers for tests: log in as the bootstrap admin, build bearer headers, a logged-in client."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

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


class AdminClient:
    """A logged-in admin session against one gateway; paths are relative to /admin/api."""

    def __init__(self, base_url: str, email: str = ADMIN_EMAIL, password: str | None = None):
        response = login(base_url, email, password)
        response.raise_for_status()
        self._http = httpx.Client(
            base_url=base_url + "/admin/api", headers=bearer(response.json()["token"]), timeout=10
        )

    def get(self, path: str, **params: Any) -> httpx.Response:
        return self._http.get(path, params=params)

    def post(self, path: str, body: Any = None) -> httpx.Response:
        return self._http.post(path, json=body) if body is not None else self._http.post(path)

    def put(self, path: str, body: Any) -> httpx.Response:
        # json=None would send no body at all; the API distinguishes an explicit null.
        return self._http.put(path, content=orjson.dumps(body), headers={"content-type": "application/json"})
