"""The admin API router in process: sessions, dispatch, error shapes, decisions reaching the data plane."""

from __future__ import annotations

from tests.unit.conftest import ADMIN_EMAIL, InProcessGateway, auth

CHAT = {"model": "echo-1", "messages": [{"role": "user", "content": "hi"}]}


async def test_no_session_is_401_and_never_cached(gateway: InProcessGateway) -> None:
    for headers in ({}, {"Authorization": "Bearer not-a-session"}, {"Cookie": "gw_session=nope"}):
        response = await gateway.client.get("/admin/api/keys", headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "session_required"
        assert response.headers["cache-control"] == "no-store"


async def test_login_by_bearer_and_by_cookie_then_logout(gateway: InProcessGateway) -> None:
    headers = await gateway.admin_headers()
    me = await gateway.client.get("/admin/api/me", headers=headers)
    assert me.status_code == 200 and me.json()["email"] == ADMIN_EMAIL
    token = headers["Authorization"].removeprefix("Bearer ")
    by_cookie = await gateway.client.get("/admin/api/me", headers={"Cookie": f"gw_session={token}"})
    assert by_cookie.status_code == 200
    assert (await gateway.client.delete("/admin/api/session", headers=headers)).status_code == 200
    assert (await gateway.client.get("/admin/api/me", headers=headers)).status_code == 401


async def test_wrong_password_is_the_generic_401(gateway: InProcessGateway) -> None:
    for body in (
        {"email": ADMIN_EMAIL, "password": "wrong"},
        {"email": "nobody@example.com", "password": "x"},
    ):
        response = await gateway.client.post("/admin/api/session", json=body)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_credentials"
    missing = await gateway.client.post("/admin/api/session", json={"email": ADMIN_EMAIL})
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "password"


async def test_unknown_admin_path_is_404_and_wrong_method_405(gateway: InProcessGateway) -> None:
    headers = await gateway.admin_headers()
    unknown = await gateway.client.get("/admin/api/nothing-here", headers=headers)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"
    wrong = await gateway.client.delete("/admin/api/keys", headers=headers)
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"


async def test_key_creation_validates_and_lists(gateway: InProcessGateway) -> None:
    headers = await gateway.admin_headers()
    bad = await gateway.client.post(
        "/admin/api/keys",
        headers=headers,
        json={"service_account": "tests", "name": "x", "models": ["gpt-7"]},
    )
    assert bad.status_code == 400 and "gpt-7" in bad.json()["error"]["message"]
    created = await gateway.client.post(
        "/admin/api/keys", headers=headers, json={"service_account": "tests", "name": "ci"}
    )
    assert created.status_code == 201
    listed = (await gateway.client.get("/admin/api/keys", headers=headers)).json()["data"]
    assert {k["name"] for k in listed} >= {"seed", "ci"}
    # The secret is shown once at creation, never in listings.
    secret = created.json()["key"].split(".", 1)[1]
    assert secret not in str(listed)


async def test_route_disable_takes_effect_on_this_replica_at_once(gateway: InProcessGateway) -> None:
    headers = await gateway.admin_headers()
    key = "echo-1/echo/echo-1"
    disabled = await gateway.client.post("/admin/api/routes/disable", headers=headers, json={"key": key})
    assert disabled.status_code == 200, disabled.text
    refused = await gateway.client.post("/v1/chat/completions", headers=auth(), json=CHAT)
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "no_route_available"
    await gateway.client.post("/admin/api/routes/enable", headers=headers, json={"key": key})
    assert (await gateway.client.post("/v1/chat/completions", headers=auth(), json=CHAT)).status_code == 200
    unknown = await gateway.client.post("/admin/api/routes/disable", headers=headers, json={"key": "a/b/c"})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "route_not_found"
