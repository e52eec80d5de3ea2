"""An exception nobody expected still gets an OpenAI-shaped 500 with the request id, a logged
traceback and a request-log row with the status the client got (not 200, not plain text)."""

from __future__ import annotations

import asyncio

import orjson

from tests.faults.harness import drive


def test_unexpected_exception_is_an_openai_shaped_500_logged_with_its_traceback(
    fault_gateway, fault_upstream
) -> None:
    gateway = fault_gateway()
    # Valid JSON nested deeper than the upstream encoder allows: a TypeError nobody handles.
    nested = b'{"a":' * 300 + b"1" + b"}" * 300
    body = b'{"model":"fault-1","messages":[{"role":"user","content":"hi"}],"deep":%s}' % nested
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (gateway.key.encode(), len(body), body)
    )
    (result,) = asyncio.run(drive(gateway.port, request, count=1, concurrency=1, timeout=20))
    assert result.status == 500, result
    assert result.headers["content-type"] == "application/json"
    request_id = result.headers["x-request-id"]
    error = orjson.loads(result.body)["error"]
    assert error["code"] == "internal_error" and request_id in error["message"]
    assert gateway.logged_status(request_id) == 500
    log = gateway.process.logs()
    assert f"request {request_id} failed unexpectedly" in log and "Traceback" in log
    assert fault_upstream.stats()["requests"] == 0
