"""The split-stream upstream: head + first SSE chunk at once, a pause, then the rest.

Run as ``python -m bench.stream_upstream --port N --pause SECONDS``. Every chunk
starts with an SSE comment ``: sent_ns=<CLOCK_MONOTONIC ns>`` taken just before
it is written, so a client on the same machine can tell how long the chunk took
to reach it, directly or through the gateway. Raw asyncio keeps this side cheap
and identical for both paths; it answers any request with the same stream.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time

_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/event-stream\r\n"
    b"Cache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n"
    b"\r\n"
)
_FIRST = (
    b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":0,"model":"gpt-4o-mini",'
    b'"choices":[{"index":0,"delta":{"role":"assistant","content":"Hello"}}]}\n\n'
)
_REST = (
    b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":0,"model":"gpt-4o-mini",'
    b'"choices":[{"index":0,"delta":{"content":" there"},"finish_reason":"stop"}]}\n\n'
    b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":0,"model":"gpt-4o-mini",'
    b'"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}\n\n'
    b"data: [DONE]\n\n"
)


def _chunk(sse: bytes) -> bytes:
    """One HTTP/1.1 chunk carrying the send time and the SSE payload."""
    data = b": sent_ns=%d\n" % time.monotonic_ns() + sse
    return b"%x\r\n%s\r\n" % (len(data), data)


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pause: float) -> None:
    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
        while True:  # keep-alive: one response per request on the same connection
            head = await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(_content_length(head))
            writer.write(_HEAD + _chunk(_FIRST))
            await writer.drain()
            await asyncio.sleep(pause)
            writer.write(_chunk(_REST) + b"0\r\n\r\n")
            await writer.drain()
    writer.close()


async def _main(port: int, pause: float) -> None:
    # A deep backlog: the concurrent-streams run connects a thousand clients at once.
    server = await asyncio.start_server(lambda r, w: _serve(r, w, pause), "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pause", type=float, required=True)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(args.port, args.pause))


if __name__ == "__main__":
    main()
