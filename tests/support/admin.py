"""An admin API client for tests: logs in as the bootstrap admin of tests/conftest.py's base_config."""

from __future__ import annotations

from typing import Any

import httpx
import orjson


class AdminClient:
    def __init__(self, base_url: str, email: str = "admin@example.com", password: str | None = None):
        from tests.conftest import ADMIN_PASSWORD

        response = httpx.post(
            base_url + "/admin/api/session", json={"email": email, "password": password or ADMIN_PASSWORD}
        )
        response.raise_for_status()
        self._http = httpx.Client(
            base_url=base_url + "/admin/api",
            headers={"Authorization": f"Bearer {response.json()['token']}"},
            timeout=10,
        )

    def get(self, path: str, **params: Any) -> httpx.Response:
        return self._http.get(path, params=params)

    def post(self, path: str, body: Any = None) -> httpx.Response:
        return self._http.post(path, json=body) if body is not None else self._http.post(path)

    def put(self, path: str, body: Any) -> httpx.Response:
        # json=None would send no body at all; the API distinguishes an explicit null.
        return self._http.put(path, content=orjson.dumps(body), headers={"content-type": "application/json"})
