"""The built-in offline provider: deterministic answers, streaming included.

It exists for demos, smoke checks and the local deployment; everything it
returns is derived from the request, so tests can predict it exactly.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator

import orjson

from gateway_app.providers.base import UpstreamError


def _words(text: str) -> int:
    return len(text.split())


def _text_of(message: dict) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


class _EchoCall:
    content_type = "application/json"

    def __init__(self, body: bytes, stream_parts: list[bytes] | None = None):
        self.status = 200
        self._body = body
        self._parts = stream_parts
        if stream_parts is not None:
            self.content_type = "text/event-stream"

    async def read(self) -> bytes:
        return self._body

    async def chunks(self) -> AsyncIterator[bytes]:
        for part in self._parts or [self._body]:
            yield part

    def release(self) -> None:
        return None


class EchoProvider:
    def __init__(self, name: str):
        self.name = name

    async def open(self, operation: str, body: bytes, timeout: float) -> _EchoCall:
        try:
            request = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise UpstreamError(self.name, "http", "echo provider got invalid JSON", 400) from None
        model = request.get("model", "echo")
        if operation == "embeddings":
            return _EchoCall(orjson.dumps(self._embeddings(model, request.get("input", ""))))
        messages = request.get("messages") or []
        prompt_tokens = sum(_words(_text_of(m)) for m in messages)
        last_user = next((_text_of(m) for m in reversed(messages) if m.get("role") == "user"), "")
        answer = f"echo: {last_user}"
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": _words(answer),
            "total_tokens": prompt_tokens + _words(answer),
        }
        completion_id = "chatcmpl-echo-" + hashlib.sha256(body).hexdigest()[:16]
        created = int(time.time())
        if not request.get("stream"):
            return _EchoCall(
                orjson.dumps(
                    {
                        "id": completion_id,
                        "object": "chat.completion",
                        "created": created,
                        "model": model,
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": answer},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": usage,
                    }
                )
            )
        base = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model}
        words = answer.split(" ")
        deltas = [{"role": "assistant", "content": ""}] + [
            {"content": w if i == 0 else " " + w} for i, w in enumerate(words)
        ]
        parts = [_sse({**base, "choices": [{"index": 0, "delta": d, "finish_reason": None}]}) for d in deltas]
        parts.append(_sse({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
        if (request.get("stream_options") or {}).get("include_usage"):
            parts.append(_sse({**base, "choices": [], "usage": usage}))
        parts.append(b"data: [DONE]\n\n")
        return _EchoCall(b"", parts)

    @staticmethod
    def _embeddings(model: str, inputs: str | list) -> dict:
        items = [inputs] if isinstance(inputs, str) else list(inputs)
        data = []
        for i, item in enumerate(items):
            digest = hashlib.sha256(str(item).encode()).digest()
            vector = [round(b / 255.0 - 0.5, 6) for b in digest[:8]]
            data.append({"object": "embedding", "index": i, "embedding": vector})
        tokens = sum(_words(str(item)) for item in items)
        return {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    async def close(self) -> None:
        return None


def _sse(payload: dict) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"
