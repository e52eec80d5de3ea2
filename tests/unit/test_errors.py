"""gateway_app.errors.as_http_error: the one mapping of domain errors to the admin API's answers."""

from __future__ import annotations

import pytest

from gateway_app.errors import Conflict, Invalid, NotFound, as_http_error
from gateway_app.provider_control import NoRouteToProbe, ProviderNotFound, RouteNotFound


@pytest.mark.parametrize(
    ("error", "status", "code", "param"),
    [
        (NotFound("no key gwk_x"), 404, "not_found", None),
        (Conflict("service account 'a' already exists"), 409, "conflict", None),
        (ValueError("budget.limit_usd must be a number >= 0"), 400, "invalid_request_error", None),
        (Invalid("'key' is required", param="key"), 400, "invalid_request_error", "key"),
        (ProviderNotFound("no provider 'p'"), 404, "provider_not_found", None),
        (RouteNotFound("no route 'a/b/c'"), 404, "route_not_found", "key"),
        (NoRouteToProbe("provider 'p' serves no route to probe"), 409, "no_route_to_probe", None),
    ],
)
def test_each_domain_error_keeps_its_status_code_and_param(
    error: Exception, status: int, code: str, param: str | None
) -> None:
    answer = as_http_error(error)
    assert (answer.status, answer.code, answer.param, answer.message) == (status, code, param, str(error))
    assert answer.type == "invalid_request_error"
