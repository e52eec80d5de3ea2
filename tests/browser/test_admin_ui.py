"""The admin UI in a real browser (Debian Chromium) against real gateway and upstream processes.

One gateway (PostgreSQL) serves model ``m`` through upstream ``a`` (priority 0)
with a fallback on upstream ``b`` (priority 1). Every action is clicked in the
UI; its effect is checked where it matters: the OpenAI SDK, the upstreams.
"""

from __future__ import annotations

import re
import time

import httpx
import openai
import pytest
from playwright.sync_api import BrowserContext, Page, expect

from tests.browser.conftest import log_in, new_database, screenshot
from tests.conftest import ADMIN_PASSWORD, SEED_KEY, base_config
from tests.support.admin import bearer, login
from tests.support.processes import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

KEY_REFRESH_SECONDS = 0.5
REFRESH_SECONDS = 0.5


def _upstream_provider(name: str, url: str) -> dict:
    return {
        "name": name,
        "type": "openai_compat",
        "base_url": url,
        "pricing_provider_id": "self_hosted",
        "timeout_seconds": 2,
        "connect_timeout_seconds": 1,
    }


def ui_config(db_url: str, a_url: str, b_url: str) -> dict:
    config = base_config(db_url)
    config["providers"] += [_upstream_provider("a", a_url), _upstream_provider("b", b_url)]
    config["models"].append(
        {
            "name": "m",
            "routes": [
                {"provider": "a", "upstream_model": "model-a", "priority": 0},
                {"provider": "b", "upstream_model": "model-b", "priority": 1},
            ],
        }
    )
    config["auth"]["key_cache_refresh_seconds"] = KEY_REFRESH_SECONDS
    config["resilience"] = {"backoff_seconds": 0.01, "state_refresh_seconds": REFRESH_SECONDS}
    config["request_logging"] = {"flush_interval_seconds": 0.2}
    return config


@pytest.fixture(scope="module")
def stack(databases, module_launcher):
    a = module_launcher.upstream()
    b = module_launcher.upstream()
    gateway = module_launcher.gateway(ui_config(new_database(databases), a.url, b.url))
    return gateway, a, b


@pytest.fixture
def admin(stack, context: BrowserContext) -> Page:
    """A browser tab logged in as the bootstrap admin."""
    gateway, _, _ = stack
    page = context.new_page()
    log_in(page, gateway.url)
    expect(page).to_have_url(re.compile(r"/admin/overview$"))
    return page


def sdk(gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0, timeout=15)


def ask(client: openai.OpenAI, model: str = "m"):
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])


def test_login_security_headers_and_every_page(stack, context: BrowserContext) -> None:
    gateway, _, _ = stack
    page = context.new_page()
    csp_violations: list[str] = []
    page.on(
        "console",
        lambda message: "Content Security Policy" in message.text and csp_violations.append(message.text),
    )
    page.goto(gateway.url + "/admin")
    expect(page).to_have_url(re.compile(r"/admin/login$"))
    screenshot(page, "01-login")
    page.get_by_label("Email").fill("admin@example.com")
    page.get_by_label("Password").fill("wrong password")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_have_text("invalid email or password")

    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    with page.expect_response(re.compile(r"/admin/overview$")) as answer:
        page.get_by_role("button", name="Log in").click()
    headers = answer.value.headers
    assert "default-src 'self'" in headers["content-security-policy"]
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
    session = next(c for c in context.cookies() if c["name"] == "gw_session")
    assert session["httpOnly"] is True and session["sameSite"] == "Strict" and session["path"] == "/admin"
    assert session["secure"] is False  # plain HTTP here; over TLS the cookie carries Secure

    expect(page.get_by_role("heading", name="Overview", exact=True)).to_be_visible()
    expect(page.get_by_text("ready", exact=True)).to_be_visible()
    expect(page.locator("main")).to_contain_text("0.1.0")
    expect(page.get_by_role("cell", name="m/a/model-a")).to_be_visible()
    screenshot(page, "02-overview")
    for link, heading, shot in [
        ("Service accounts", "Service accounts", "03-accounts"),
        ("Keys", "Keys", "04-keys"),
        ("Request logs", "Request logs", "05-logs"),
        ("Spend", "Spend", "06-spend"),
        ("Providers", "Providers and routes", "07-providers"),
    ]:
        page.get_by_role("navigation", name="Sections").get_by_role("link", name=link, exact=True).click()
        expect(page.get_by_role("heading", level=1)).to_have_text(heading)
        expect(page.get_by_role("link", name=link, exact=True)).to_have_attribute("aria-current", "page")
        screenshot(page, shot)
    assert csp_violations == []

    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/admin/login$"))
    page.goto(gateway.url + "/admin/keys")
    expect(page).to_have_url(re.compile(r"/admin/login$"))


def test_reading_works_without_javascript_and_by_keyboard(stack, browser) -> None:
    gateway, _, _ = stack
    ctx = browser.new_context(java_script_enabled=False, viewport={"width": 1280, "height": 900})
    try:
        page = ctx.new_page()
        page.goto(gateway.url + "/admin/login")
        expect(page.get_by_label("Email")).to_be_focused()  # autofocus: HTML, not script
        page.keyboard.type("admin@example.com")
        page.keyboard.press("Tab")
        page.keyboard.type(ADMIN_PASSWORD)
        page.keyboard.press("Enter")
        expect(page).to_have_url(re.compile(r"/admin/overview$"))
        page.keyboard.press("Tab")
        expect(page.locator(":focus")).to_have_text("Skip to content")
        page.keyboard.press("Tab")
        expect(page.get_by_role("link", name="Overview")).to_be_focused()
        for _ in range(2):
            page.keyboard.press("Tab")
        expect(page.get_by_role("link", name="Keys", exact=True)).to_be_focused()
        page.keyboard.press("Enter")
        expect(page.get_by_role("heading", level=1)).to_have_text("Keys")
        page.goto(gateway.url + "/admin/providers")
        expect(page.get_by_role("heading", name="a openai_compat enabled")).to_be_visible()
        page.goto(gateway.url + "/admin/accounts")
        expect(page.get_by_role("rowheader", name="tests")).to_be_visible()
    finally:
        ctx.close()


def test_forced_password_change_blocks_everything_until_done(databases, launcher, context) -> None:
    config = base_config(new_database(databases))
    config["auth"]["bootstrap_admin"]["require_password_change"] = True
    gateway = launcher.gateway(config)
    page = context.new_page()
    log_in(page, gateway.url)
    expect(page).to_have_url(re.compile(r"/admin/password$"))
    expect(page.get_by_text("This is the first login")).to_be_visible()
    expect(page.get_by_role("navigation", name="Sections")).to_have_count(0)
    screenshot(page, "08-forced-password-change")
    for path in ("/admin/overview", "/admin/keys", "/admin/providers", "/admin/logs"):
        page.goto(gateway.url + path)
        expect(page).to_have_url(re.compile(r"/admin/password$"))
    # A form of another page, posted with this session's valid CSRF token, is refused too.
    token = page.locator("input[name=csrf_token]").first.input_value()
    refused = page.request.post(
        gateway.url + "/admin/keys",
        form={"csrf_token": token, "service_account": "tests", "name": "sneaky", "grant": "all"},
        headers={"Origin": gateway.url},
    )
    assert refused.status == 403 and "first-login password" in refused.text()
    assert "sneaky" not in httpx.get(gateway.url + "/admin/api/keys", headers=_api(gateway)).text

    page.get_by_label("Current password").fill(ADMIN_PASSWORD)
    page.get_by_label("New password").fill("short")
    page.locator("#new_password").evaluate("field => field.removeAttribute('minlength')")
    page.get_by_role("button", name="Change password").click()
    expect(page.get_by_role("alert")).to_contain_text("at least 12 characters")
    page.get_by_label("Current password").fill(ADMIN_PASSWORD)
    page.get_by_label("New password").fill("a much better passphrase")
    page.get_by_role("button", name="Change password").click()
    expect(page).to_have_url(re.compile(r"/admin/overview$"))
    page.goto(gateway.url + "/admin/keys")
    expect(page.get_by_role("heading", level=1)).to_have_text("Keys")
    assert login(gateway.url).status_code == 401  # the bootstrap password is gone
    assert login(gateway.url, password="a much better passphrase").json()["must_change_password"] is False


def _api(gateway) -> dict[str, str]:
    return bearer(login(gateway.url).json()["token"])


def test_key_created_in_ui_works_with_the_sdk_until_revoked_in_ui(stack, admin: Page) -> None:
    gateway, _, _ = stack
    admin.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=gateway.url)
    admin.goto(gateway.url + "/admin/keys")
    admin.get_by_label("Service account").select_option("tests")
    admin.get_by_label("Name", exact=True).fill("browser-made")
    admin.get_by_label("only these:").check()
    admin.get_by_label("m", exact=True).check()
    admin.get_by_role("button", name="Create key").click()
    secret = admin.get_by_label("Key", exact=True).input_value()
    assert re.fullmatch(r"gwk_[a-z0-9]{12}\.[A-Za-z0-9]{40}", secret)
    admin.get_by_role("button", name="Copy").click()
    expect(admin.get_by_text("Copied.")).to_be_visible()
    assert admin.evaluate("navigator.clipboard.readText()") == secret
    screenshot(admin, "09-key-created")

    client = sdk(gateway, secret)
    assert ask(client).choices[0].message.content == "fake says hi"
    with pytest.raises(openai.NotFoundError):  # the grant covers m only
        ask(client, "echo-1")

    admin.goto(gateway.url + "/admin/keys")  # the secret is never shown again
    expect(admin.get_by_text(secret)).to_have_count(0)
    public_id = secret.split(".")[0]
    row = admin.get_by_role("row").filter(has_text=public_id)
    expect(row).to_contain_text("tests / browser-made")
    expect(row.get_by_role("cell", name="m", exact=True)).to_be_visible()
    row.get_by_role("button", name="Revoke").click()
    revoked_at = time.monotonic()
    expect(admin.get_by_role("status")).to_contain_text(f"{public_id} revoked")

    def refused() -> bool:
        try:
            ask(client)
        except openai.AuthenticationError:
            return True
        return False

    wait_until(refused, timeout=KEY_REFRESH_SECONDS + 5)
    # The bound is the key-cache refresh interval (plus this poll's own request time).
    assert time.monotonic() - revoked_at < KEY_REFRESH_SECONDS + 3


def test_rotate_with_grace_period_in_ui(stack, admin: Page) -> None:
    gateway, _, _ = stack
    admin.goto(gateway.url + "/admin/keys")
    admin.get_by_label("Name", exact=True).fill("to-rotate")
    admin.get_by_role("button", name="Create key").click()
    old = admin.get_by_label("Key", exact=True).input_value()
    old_id = old.split(".")[0]
    admin.goto(gateway.url + "/admin/keys")
    row = admin.get_by_role("row").filter(has_text=old_id)
    row.get_by_label("old key revoked after").fill("1h")
    row.get_by_role("button", name="Rotate").click()
    expect(admin.locator("p.notice")).to_contain_text(f"{old_id} rotated to")
    new = admin.get_by_label("Key", exact=True).input_value()
    assert new != old
    # A key inside its grace period is listed with the revoked ones (keys.list_keys), marked so.
    admin.get_by_role("link", name="Show revoked keys too").click()
    expect(admin.get_by_role("row").filter(has_text=old_id)).to_contain_text("revoked at")
    screenshot(admin, "10-key-rotated")
    assert ask(sdk(gateway, new), "echo-1").choices
    assert ask(sdk(gateway, old), "echo-1").choices  # inside its grace period


def test_disabled_provider_fails_over_then_503_and_the_page_shows_it(stack, admin: Page) -> None:
    gateway, a, _ = stack
    client = sdk(gateway, SEED_KEY)
    admin.goto(gateway.url + "/admin/providers")
    try:
        admin.get_by_role("button", name="Disable a", exact=True).click()
        expect(admin.get_by_role("status")).to_have_text("provider a disabled")
        expect(admin.locator("[data-provider-state=a]")).to_have_text("disabled")
        screenshot(admin, "11-provider-disabled")
        a.control(reset_stats=True)
        assert ask(client).model == "model-b"  # failed over to the next priority
        assert a.stats()["requests"] == 0

        admin.get_by_role("button", name="Disable b", exact=True).click()
        expect(admin.locator("[data-provider-state=b]")).to_have_text("disabled")
        with pytest.raises(openai.InternalServerError) as failed:
            ask(client)
        assert failed.value.status_code == 503 and failed.value.code == "no_route_available"
        admin.get_by_role("link", name="Overview").click()
        expect(admin.get_by_role("row").filter(has_text="m/b/model-b")).to_contain_text("disabled")
    finally:
        admin.goto(gateway.url + "/admin/providers")
        for name in ("a", "b"):
            enable = admin.get_by_role("button", name=f"Enable {name}", exact=True)
            if enable.count():
                enable.click()
                expect(admin.locator(f"[data-provider-state={name}]")).to_have_text("enabled")
    assert ask(client).model == "model-a"


def test_health_check_and_circuit_reset_from_the_ui(stack, admin: Page) -> None:
    gateway, a, _ = stack
    admin.goto(gateway.url + "/admin/providers")
    admin.get_by_role("button", name="Health check a").click()
    probe = admin.get_by_role("status").first
    expect(probe).to_contain_text("Health check of a through m/a/model-a: answered")
    a.control(mode="error401")
    try:
        admin.get_by_role("button", name="Health check a").click()
        expect(admin.get_by_role("status").first).to_contain_text("failed")
        expect(admin.get_by_role("status").first).to_contain_text("HTTP 401")
    finally:
        a.control(mode="ok")
    admin.get_by_role("button", name="Reset circuit of route m/a/model-a").click()
    expect(admin.get_by_role("status")).to_have_text("circuit of route m/a/model-a reset")


def test_request_log_detail_shows_the_attempts_of_a_fallback(stack, admin: Page) -> None:
    gateway, a, _ = stack
    a.control(mode="error500")
    try:
        response = httpx.post(
            gateway.url + "/v1/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": f"Bearer {SEED_KEY}", "x-gateway-tags": "team=browser,case=fallback"},
            timeout=15,
        )
    finally:
        a.control(mode="ok")
    assert response.status_code == 200 and response.json()["model"] == "model-b"
    request_id = response.headers["x-request-id"]

    admin.goto(gateway.url + "/admin/logs")
    admin.get_by_label("Model").select_option("m")
    admin.get_by_label("Status").select_option("2xx")
    admin.get_by_label("Account").select_option("tests")
    admin.get_by_role("button", name="Filter").click()
    expect(admin).to_have_url(re.compile(r"model=m.*status=2xx"))

    fallback_rows = (
        admin.get_by_role("row")
        .filter(has=admin.get_by_role("cell", name="b", exact=True))
        .filter(has=admin.get_by_role("cell", name="2", exact=True))
    )

    def listed() -> bool:
        admin.reload()  # the log writer flushes every 0.2 s
        return fallback_rows.count() == 1

    wait_until(listed)
    screenshot(admin, "12-logs-filtered")
    admin.get_by_label("From").fill("2099-01-01T00:00")  # the time filter: nothing that late
    admin.get_by_role("button", name="Filter").click()
    expect(admin.get_by_text("No request matches these filters.")).to_be_visible()
    admin.go_back()
    fallback_rows.get_by_role("link").click()
    expect(admin.get_by_role("heading", level=1)).to_have_text(f"Request {request_id}")
    attempts = admin.get_by_role("region", name=re.compile(r"Attempts \(2\)")).get_by_role("row")
    expect(attempts).to_have_count(3)  # header + 2
    expect(attempts.nth(1)).to_contain_text("a")
    expect(attempts.nth(1)).to_contain_text("500")
    expect(attempts.nth(2)).to_contain_text("model-b")
    expect(attempts.nth(2)).to_contain_text("200")
    expect(admin.get_by_role("region", name="Tags")).to_contain_text("fallback")
    screenshot(admin, "13-log-detail-fallback")


def test_spend_by_account_model_and_day_with_a_chart(stack, admin: Page) -> None:
    gateway, _, _ = stack
    ask(sdk(gateway, SEED_KEY))
    admin.goto(gateway.url + "/admin/spend?group_by=model&measure=requests")

    def charted() -> bool:
        admin.reload()
        return admin.locator("svg rect.bar").count() > 0

    wait_until(charted)
    chart = admin.get_by_role("img", name="Requests by model")
    expect(chart).to_contain_text("m")
    assert int(chart.locator("rect.bar").first.get_attribute("width")) > 0
    screenshot(admin, "14-spend-by-model")
    for tab, header in (("by day", "Day"), ("by service account", "Service account")):
        admin.get_by_role("link", name=tab).click()
        expect(admin.get_by_role("columnheader").first).to_have_text(header)
    expect(admin.get_by_role("rowheader", name="tests")).to_be_visible()


def test_forms_without_csrf_token_or_from_another_origin_are_refused(stack, admin: Page) -> None:
    gateway, a, _ = stack
    admin.goto(gateway.url + "/admin/providers")
    form = admin.locator("form[action='/admin/providers/a/disable']")
    form.locator("input[name=csrf_token]").evaluate("field => field.remove()")
    form.get_by_role("button").click()
    expect(admin.get_by_role("alert")).to_contain_text("CSRF token is missing")
    screenshot(admin, "15-csrf-refused")
    admin.goto(gateway.url + "/admin/providers")
    expect(admin.locator("[data-provider-state=a]")).to_have_text("enabled")

    token = admin.locator("input[name=csrf_token]").first.input_value()
    cross_site = admin.request.post(
        gateway.url + "/admin/providers/a/disable",
        form={"csrf_token": token},
        headers={"Origin": "https://evil.example"},
    )
    assert cross_site.status == 403 and "Origin check" in cross_site.text()
    wrong_token = admin.request.post(
        gateway.url + "/admin/providers/a/disable",
        form={"csrf_token": "0" * 64},
        headers={"Origin": gateway.url},
    )
    assert wrong_token.status == 403
    a.control(reset_stats=True)
    assert ask(sdk(gateway, SEED_KEY)).model == "model-a"  # nothing was disabled


def test_service_account_budget_and_switch_in_ui(stack, admin: Page) -> None:
    gateway, _, _ = stack
    admin.goto(gateway.url + "/admin/accounts")
    new = admin.get_by_role("region", name="New service account")
    new.get_by_label("Name").fill("ui-team")
    new.get_by_label("Window").select_option("daily")
    new.get_by_label("Limit (USD)").fill("5")
    new.get_by_role("button", name="Create").click()
    expect(admin.get_by_role("status")).to_have_text("service account ui-team created")
    row = admin.get_by_role("row").filter(has=admin.get_by_role("rowheader", name="ui-team"))
    expect(row).to_contain_text("$5.0000 daily")
    expect(row.locator("meter")).to_have_attribute("max", "5.0")
    row.get_by_label("Window").select_option("monthly")
    row.get_by_label("Limit (USD)").fill("abc")
    row.get_by_role("button", name="Save").click()
    expect(admin.get_by_role("alert")).to_contain_text("budget limit must be a number")
    row.get_by_label("Window").select_option("monthly")  # the page shows the stored budget again
    row.get_by_label("Limit (USD)").fill("12.5")
    row.get_by_role("button", name="Save").click()
    expect(row).to_contain_text("$12.5000 monthly")
    row.get_by_role("button", name="Disable").click()
    expect(row.get_by_text("disabled", exact=True)).to_be_visible()
    screenshot(admin, "16-accounts")
    account = next(
        a
        for a in httpx.get(gateway.url + "/admin/api/service-accounts", headers=_api(gateway)).json()["data"]
        if a["name"] == "ui-team"
    )
    assert account["disabled"] is True and account["budget"]["limit_usd"] == 12.5
