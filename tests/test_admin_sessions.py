"""Admin login, sessions, first-login rotation and throttling, on a real gateway per backend."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.conftest import ADMIN_PASSWORD, backend_of, base_config
from tests.support.admin import ADMIN_EMAIL, bearer, login


@pytest.fixture(scope="module")
def gateway(module_db_url, module_launcher):
    return module_launcher.gateway(base_config(module_db_url))


def test_login_with_bearer_and_cookie(gateway) -> None:
    response = login(gateway.url)
    assert response.status_code == 200
    body = response.json()
    assert body["must_change_password"] is False
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and body["token"] in cookie
    me = httpx.get(gateway.url + "/admin/api/me", headers=bearer(body["token"]))
    assert me.status_code == 200 and me.json()["email"] == ADMIN_EMAIL
    with_cookie = httpx.get(gateway.url + "/admin/api/me", cookies={"gw_session": body["token"]})
    assert with_cookie.status_code == 200


def test_no_session_is_401(gateway) -> None:
    assert httpx.get(gateway.url + "/admin/api/me").status_code == 401
    assert httpx.get(gateway.url + "/admin/api/me", headers=bearer("forged")).json()["error"]["code"] == (
        "session_required"
    )


def test_failed_logins_share_one_generic_error(gateway) -> None:
    wrong_password = login(gateway.url, password="nope", client="10.9.0.1")
    unknown_user = login(gateway.url, email="ghost@example.com", password="nope", client="10.9.0.1")
    assert wrong_password.status_code == unknown_user.status_code == 401
    assert wrong_password.json() == unknown_user.json()


def test_logout_revokes_the_session(gateway) -> None:
    token = login(gateway.url).json()["token"]
    assert httpx.delete(gateway.url + "/admin/api/session", headers=bearer(token)).status_code == 200
    assert httpx.get(gateway.url + "/admin/api/me", headers=bearer(token)).status_code == 401


def test_throttled_per_address(gateway) -> None:
    """The account-wide limit and its known-address exemption: tests/test_admin_security.py."""
    for attempt in range(10):
        assert (
            login(
                gateway.url, email="target@example.com", password=f"guess{attempt}", client="10.1.0.1"
            ).status_code
            == 401
        )
    throttled = login(gateway.url, email="target@example.com", password="guess", client="10.1.0.1")
    assert throttled.status_code == 429
    assert throttled.json()["error"]["code"] == "login_throttled"
    assert 0 < int(throttled.headers["retry-after"]) <= 900
    # Another address may still try that account (per-address limit, not an account lockout).
    assert login(gateway.url, email="target@example.com", password="x", client="10.1.0.2").status_code == 401
    for attempt in range(10):
        login(gateway.url, email=f"spray{attempt}@example.com", password="x", client="10.2.0.1")
    assert login(gateway.url, client="10.2.0.1").status_code == 429  # even the right password, from there
    assert login(gateway.url, client="10.2.0.2").status_code == 200  # elsewhere the admin still gets in


def test_forced_first_login_rotation(module_db_url, databases, launcher) -> None:
    config = base_config(databases.new(backend_of(module_db_url)))
    config["auth"]["bootstrap_admin"]["require_password_change"] = True
    gateway = launcher.gateway(config)
    first = login(gateway.url).json()
    assert first["must_change_password"] is True
    blocked = httpx.get(gateway.url + "/admin/api/keys", headers=bearer(first["token"]))
    assert blocked.status_code == 403 and blocked.json()["error"]["code"] == "password_change_required"
    weak = httpx.post(
        gateway.url + "/admin/api/password",
        headers=bearer(first["token"]),
        json={"current_password": ADMIN_PASSWORD, "new_password": "short"},
    )
    assert weak.status_code == 400 and weak.json()["error"]["param"] == "new_password"
    new_password = "a-much-longer-new-password"
    changed = httpx.post(
        gateway.url + "/admin/api/password",
        headers=bearer(first["token"]),
        json={"current_password": ADMIN_PASSWORD, "new_password": new_password},
    )
    assert changed.status_code == 200
    assert httpx.get(gateway.url + "/admin/api/me", headers=bearer(first["token"])).status_code == 401
    me = httpx.get(gateway.url + "/admin/api/me", headers=bearer(changed.json()["token"])).json()
    assert me["must_change_password"] is False
    assert (
        httpx.get(gateway.url + "/admin/api/keys", headers=bearer(changed.json()["token"])).status_code == 200
    )
    assert login(gateway.url, password=ADMIN_PASSWORD).status_code == 401
    assert login(gateway.url, password=new_password).status_code == 200


def test_sessions_expire(module_db_url, databases, launcher) -> None:
    config = base_config(databases.new(backend_of(module_db_url)))
    config["auth"]["session_ttl_seconds"] = 1
    gateway = launcher.gateway(config)
    token = login(gateway.url).json()["token"]
    assert httpx.get(gateway.url + "/admin/api/me", headers=bearer(token)).status_code == 200
    time.sleep(1.5)
    assert httpx.get(gateway.url + "/admin/api/me", headers=bearer(token)).status_code == 401
