"""Helpers shared by the control-plane admin routes: lenient bodies."""

from __future__ import annotations

from typing import Any

import orjson

from gateway_app.admin.router import AdminRequest
from gateway_app.http import invalid_request, read_body

_MAX_BODY = 64 * 1024


async def body_value(request: AdminRequest) -> Any:
    """The JSON body of any type (``null`` included); None when there is no body."""
    raw = await read_body(request.receive, _MAX_BODY)
    if not raw.strip():
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise invalid_request(f"request body is not valid JSON: {exc}") from None


async def body_object(request: AdminRequest) -> dict[str, Any]:
    """A JSON object body, or {} when there is none (calls whose fields are all optional)."""
    value = await body_value(request)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid_request("request body must be a JSON object")
    return value


def text_field(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        raise invalid_request(f"'{name}' is required and must be a non-empty string", param=name)
    return value.strip()
