"""The one clock of the stored data: UTC epoch milliseconds (every *_at column)."""

from __future__ import annotations

import time


def now_ms() -> int:
    return int(time.time() * 1000)
