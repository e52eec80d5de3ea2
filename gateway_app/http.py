"""Small ASGI primitives: read a body, send a response, OpenAI-shaped errors.

The gateway speaks raw ASGI: on a pass-through proxy every framework layer
shows up directly in the added latency, and the surface here is small.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import orjson

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

JSON = b"application/json"


class HTTPError(Exception):
    """An error answered to the client in OpenAI's shape."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None,
        type_: str = "invalid_request_error",
        param: str | None = None,
        headers: Headers | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.type = type_
        self.param = param
        self.headers = headers or []

    def body(self) -> bytes:
        return orjson.dumps(
            {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
        )


def invalid_request(message: str, param: str | None = None) -> HTTPError:
    return HTTPError(400, message, "invalid_request_error", param=param)


def invalid_api_key() -> HTTPError:
    return HTTPError(
        401,
        "Invalid API key. Send 'Authorization: Bearer gwk_<id>.<secret>' with an active gateway key.",
        "invalid_api_key",
    )


def model_not_found(model: str) -> HTTPError:
    return HTTPError(
        404,
        f"The model '{model}' does not exist or this key has no access to it.",
        "model_not_found",
        param="model",
    )


def header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None


def body_too_large(limit: int) -> HTTPError:
    # The server protocol (client_protocol.py) ends the connection: it never reads the rest.
    return HTTPError(413, f"request body exceeds {limit} bytes", "request_too_large")


def check_declared_length(scope: Scope, limit: int) -> None:
    """Refuse a Content-Length over ``limit`` before reading any of the body."""
    declared = header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise body_too_large(limit)


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole request body, refused (413) as soon as it grows past ``limit``."""
    message = await receive()
    body = message.get("body", b"")
    if not message.get("more_body"):
        if len(body) > limit:
            raise body_too_large(limit)
        return body
    parts = [body]
    size = len(body)
    while message.get("more_body"):
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise body_too_large(limit)
        parts.append(chunk)
    return b"".join(parts)


async def send_response(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes = JSON,
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_json(
    send: Send, status: int, payload: Any, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    await send_response(send, status, orjson.dumps(payload), JSON, headers)


async def send_error(send: Send, error: HTTPError, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    await send_response(send, error.status, error.body(), JSON, [*error.headers, *headers])


def parse_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise invalid_request(f"request body is not valid JSON: {exc}") from None


def parse_json_object(body: bytes) -> dict[str, Any]:
    if not body:
        raise invalid_request("request body is empty; send a JSON object")
    payload = parse_json(body)
    if not isinstance(payload, dict):
        raise invalid_request("request body must be a JSON object")
    return payload


def bearer_token(scope: Scope) -> str | None:
    value = header(scope, b"authorization")
    if value is None or value[:7].lower() != b"bearer ":
        return None
    return value[7:].strip().decode("latin-1")
