"""A real OpenAI-compatible upstream for tests, whose behaviour can be switched at run time.

Run as a process: ``python -m tests.support.fake_upstream --port N``. Modes
(``POST /_control {"mode": ..., "delay": seconds, "fail_ratio": r}``):
ok, error500, error429, error401, error400, hang (never answers), slow_first_byte
(waits ``delay`` before the head, GET /v1/models too), flaky (fails ``fail_ratio`` of requests with
500). ``GET /_stats`` returns how many API requests it received and the last
Authorization header it saw.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time

import orjson
from aiohttp import web


class FakeUpstream:
    def __init__(self) -> None:
        self.mode = "ok"
        self.delay = 0.0
        self.fail_ratio = 0.5
        self.requests = 0
        self.last_authorization: str | None = None
        self.last_model: str | None = None
        self.model_listings = 0  # GET /v1/models (probes), not counted in requests

    async def control(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.mode = body.get("mode", self.mode)
        self.delay = float(body.get("delay", self.delay))
        self.fail_ratio = float(body.get("fail_ratio", self.fail_ratio))
        if body.get("reset_stats"):
            self.requests = 0
        return web.json_response({"mode": self.mode})

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"requests": self.requests, "authorization": self.last_authorization, "model": self.last_model}
        )

    async def _gate(self, request: web.Request) -> web.Response | None:
        """Apply the failure mode; None means answer normally."""
        self.requests += 1
        self.last_authorization = request.headers.get("Authorization")
        if self.mode == "hang":
            await asyncio.sleep(3600)
        if self.mode == "slow_first_byte":
            await asyncio.sleep(self.delay)
        failing = self.mode.startswith("error") or (
            self.mode == "flaky" and random.random() < self.fail_ratio
        )
        if failing:
            status = int(self.mode[5:]) if self.mode.startswith("error") else 500
            return web.json_response(
                {
                    "error": {
                        "message": f"fake upstream failure {status}",
                        "type": "server_error",
                        "code": None,
                    }
                },
                status=status,
            )
        return None

    async def chat(self, request: web.Request) -> web.StreamResponse:
        payload = await request.json()
        self.last_model = payload.get("model")
        failure = await self._gate(request)
        if failure is not None:
            return failure
        text = "fake says hi"
        usage = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
        base = {"id": "chatcmpl-fake", "created": int(time.time()), "model": payload.get("model")}
        if not payload.get("stream"):
            return web.json_response(
                {
                    **base,
                    "object": "chat.completion",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": usage,
                }
            )
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        pieces = text.split(" ")
        for i, piece in enumerate(pieces):
            chunk = {
                **base,
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {"content": piece if i == 0 else " " + piece}}],
            }
            await response.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
            await asyncio.sleep(self.delay if self.mode == "slow_stream" else 0)
        await response.write(
            b"data: "
            + orjson.dumps({**base, "object": "chat.completion.chunk", "choices": [], "usage": usage})
            + b"\n\n"
        )
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def embeddings(self, request: web.Request) -> web.Response:
        payload = await request.json()
        self.last_model = payload.get("model")
        failure = await self._gate(request)
        if failure is not None:
            return failure
        return web.json_response(
            {
                "object": "list",
                "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2, 0.3]}],
                "model": payload.get("model"),
                "usage": {"prompt_tokens": 2, "total_tokens": 2},
            }
        )

    async def models(self, request: web.Request) -> web.Response:
        """GET /v1/models: what a latency probe asks; delayed like the API in slow_first_byte mode."""
        self.model_listings += 1
        if self.mode == "slow_first_byte":
            await asyncio.sleep(self.delay)
        return web.json_response({"object": "list", "data": [{"id": "fake-model", "object": "model"}]})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/embeddings", self.embeddings)
        app.router.add_post("/_control", self.control)
        app.router.add_get("/_stats", self.stats)
        return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", default="ok")
    args = parser.parse_args()
    upstream = FakeUpstream()
    upstream.mode = args.mode
    web.run_app(
        upstream.app(), host="127.0.0.1", port=args.port, print=None, access_log=None, shutdown_timeout=1
    )


if __name__ == "__main__":
    main()
