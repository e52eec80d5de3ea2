"""Admin UI pieces without a browser: the origin check, CSRF tokens, the chart's geometry."""

from __future__ import annotations

from gateway_app.admin.cookie import session_cookie
from gateway_app.admin.origin import cross_origin_reason
from gateway_app.admin_ui.charts import BAR_AREA, bar_chart
from gateway_app.admin_ui.security import session_csrf_token, tokens_match


def _scope(scheme: str = "https", **headers: str) -> dict:
    return {
        "scheme": scheme,
        "headers": [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()],
    }


def same_origin(scope: dict) -> bool:
    return cross_origin_reason(scope) is None


def test_same_origin_needs_origin_or_referer_naming_this_server() -> None:
    assert same_origin(_scope(host="gw.example:8443", origin="https://gw.example:8443"))
    assert same_origin(_scope(host="gw.example", referer="https://gw.example/admin/keys"))
    assert same_origin(_scope(host="gw.example:443", origin="https://gw.example"))  # default port
    assert not same_origin(_scope(host="gw.example", origin="https://evil.example"))
    assert not same_origin(_scope(host="gw.example", origin="null"))
    assert not same_origin(_scope(host="gw.example"))  # neither header: refused
    assert not same_origin(_scope(host="gw.example:8443", origin="https://gw.example"))
    assert not same_origin(_scope("http", host="gw.example", origin="https://gw.example"))  # scheme differs


def test_csrf_token_is_per_session_and_compared_strictly() -> None:
    first, second = session_csrf_token("session-one"), session_csrf_token("session-two")
    assert first != second and first == session_csrf_token("session-one")
    assert tokens_match(first, first)
    assert not tokens_match(first, second)
    assert not tokens_match(first, "")
    assert not tokens_match(None, None)


def test_bar_chart_scales_to_the_largest_value() -> None:
    chart = bar_chart([("a", 1.0), ("b", 4.0), ("c", 0.0)], money=True)
    assert [bar.width for bar in chart.bars] == [BAR_AREA // 4, BAR_AREA, 0]
    assert chart.bars[1].value_text == "$4.0000" and chart.bars[2].y > chart.bars[1].y
    assert bar_chart([("zero", 0.0)], money=False).bars[0].width == 0  # no division by zero


def test_session_cookie_is_secure_over_tls_only() -> None:
    _, over_tls = session_cookie("t0ken", 60, {"scheme": "https"})
    _, plain = session_cookie("t0ken", 60, {"scheme": "http"})
    assert over_tls.endswith(b"; Secure") and b"HttpOnly; SameSite=Strict" in over_tls
    assert b"Secure" not in plain
