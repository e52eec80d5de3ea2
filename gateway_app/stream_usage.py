"""Usage on every stream: the gateway asks for it, and hides it from clients that did not.

The proxy sets ``stream_options.include_usage`` on every streamed request so the
ledger gets real token counts. A client that did not ask for usage must not see
the extra final chunk (``"choices":[]`` with ``"usage"``): this filter holds back
an incomplete SSE event until its end arrives and drops that one event. It also
counts what was relayed, for a cost estimate when no usage arrives at all.
"""

from __future__ import annotations

from typing import Any

_EVENT_END = b"\n\n"


def ask_for_usage(payload: dict[str, Any]) -> bool:
    """Make the upstream report usage; True if the client asked for it itself."""
    options = payload.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        return True
    payload["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    return False


def _is_usage_event(event: bytes) -> bool:
    return event.startswith(b"data: {") and b'"choices":[]' in event and b'"usage":{' in event


class StreamRelay:
    """Turns upstream chunks into client chunks; keeps the usage event for the ledger."""

    __slots__ = ("_hide_usage", "_pending", "events", "relayed_bytes", "usage_event")

    def __init__(self, hide_usage: bool):
        self._hide_usage = hide_usage
        self._pending = b""
        self.usage_event: bytes | None = None
        self.events = 0
        self.relayed_bytes = 0

    def feed(self, chunk: bytes) -> bytes:
        """The bytes to send the client for this upstream chunk (possibly none yet)."""
        self.events += chunk.count(b"data: ")
        if not self._hide_usage:
            self.relayed_bytes += len(chunk)
            if b'"usage":{' in chunk:
                self.usage_event = chunk
            return chunk
        data = self._pending + chunk
        cut = data.rfind(_EVENT_END)
        if cut < 0:
            self._pending = data
            return b""
        complete, self._pending = data[: cut + 2], data[cut + 2 :]
        if b'"usage":{' in complete:
            kept = []
            for event in complete.split(_EVENT_END)[:-1]:
                if b'"usage":{' in event:
                    self.usage_event = event + _EVENT_END
                if not _is_usage_event(event):
                    kept.append(event + _EVENT_END)
            complete = b"".join(kept)
        self.relayed_bytes += len(complete)
        return complete

    def rest(self) -> bytes:
        """An incomplete last event (a cut stream): relayed as it is."""
        rest, self._pending = self._pending, b""
        self.relayed_bytes += len(rest)
        return rest
