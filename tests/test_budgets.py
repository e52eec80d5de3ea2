"""Budget windows are UTC: daily from 00:00, weekly from Monday 00:00, monthly from the 1st."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway_app.budgets import window_bounds


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


@pytest.mark.parametrize(
    ("window", "at", "start", "end"),
    [
        ("daily", "2025-01-15T10:00:00", "2025-01-15T00:00:00", "2025-01-16T00:00:00"),
        ("weekly", "2025-01-15T10:00:00", "2025-01-13T00:00:00", "2025-01-20T00:00:00"),  # a Wednesday
        ("weekly", "2025-01-19T23:59:59", "2025-01-13T00:00:00", "2025-01-20T00:00:00"),  # Sunday night
        ("weekly", "2025-01-20T00:00:00", "2025-01-20T00:00:00", "2025-01-27T00:00:00"),  # Monday 00:00
        ("monthly", "2025-01-31T23:00:00", "2025-01-01T00:00:00", "2025-02-01T00:00:00"),
        ("monthly", "2024-02-29T12:00:00", "2024-02-01T00:00:00", "2024-03-01T00:00:00"),
        ("monthly", "2025-12-31T12:00:00", "2025-12-01T00:00:00", "2026-01-01T00:00:00"),
    ],
)
def test_window_bounds(window: str, at: str, start: str, end: str) -> None:
    assert window_bounds(window, _ms(at)) == (_ms(start), _ms(end))


def test_unknown_window_is_named() -> None:
    with pytest.raises(ValueError, match="hourly"):
        window_bounds("hourly", 0)
