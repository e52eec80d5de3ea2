"""Server-rendered SVG bar charts: geometry computed here, drawn by the template, no JavaScript."""

from __future__ import annotations

from dataclasses import dataclass

LABEL_WIDTH = 200
BAR_AREA = 520
VALUE_WIDTH = 140
ROW_HEIGHT = 28
BAR_HEIGHT = 18


@dataclass(frozen=True)
class Bar:
    label: str
    value_text: str
    y: int
    width: int


@dataclass(frozen=True)
class BarChart:
    width: int
    height: int
    label_width: int
    bars: list[Bar]


def bar_chart(items: list[tuple[str, float]], money: bool) -> BarChart:
    """One horizontal bar per (label, value), scaled to the largest value."""
    top = max((value for _, value in items), default=0.0)
    bars = [
        Bar(
            label=label,
            value_text=f"${value:,.4f}" if money else f"{value:,.0f}",
            y=i * ROW_HEIGHT,
            width=round(BAR_AREA * value / top) if top > 0 else 0,
        )
        for i, (label, value) in enumerate(items)
    ]
    return BarChart(LABEL_WIDTH + BAR_AREA + VALUE_WIDTH, max(len(bars), 1) * ROW_HEIGHT, LABEL_WIDTH, bars)
