"""Charts as inline SVG text, drawn in Python: no script, no library, no network.

Each chart is one ``<svg class="chart" data-chart="NAME">`` element with a ``<title>`` (read by
screen readers and shown as a tooltip), a ``viewBox`` so it scales with the page and prints
sharp, and one ``<title>`` per bar with its exact figures. All text is escaped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

__all__ = ["Bar", "Stack", "bar_chart", "stacked_bars"]

_FONT = 'font-family="inherit" font-size="11"'


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    colour: str
    tooltip: str


@dataclass(frozen=True)
class Stack:
    label: str
    parts: Sequence[tuple[str, float, str]]  # (name, count, colour)


def _nice_max(x: float) -> float:
    if x <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(x))
    for step in (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if step * power >= x:
            return step * power
    return 10 * power


def bar_chart(
    name: str,
    title: str,
    bars: Sequence[Bar],
    *,
    y_label: str,
    reference: float | None = None,
    reference_label: str = "",
    width: int = 960,
    height: int = 340,
    cap: float | None = None,
) -> str:
    """Vertical bars in the given order; a dashed line at `reference`; values above `cap` are
    drawn at the cap with a mark (their tooltip keeps the real value)."""
    left, right, top, bottom = 56, 12, 28, 70 if len(bars) <= 60 else 24
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [b.value for b in bars]
    highest = max([*values, reference or 0.0, 0.0])
    if cap is not None:
        highest = min(highest, cap)
    ymax = _nice_max(highest)
    step = plot_w / max(1, len(bars))
    gap = min(2.0, step * 0.2)
    out = [
        f'<svg class="chart" data-chart="{escape(name)}" viewBox="0 0 {width} {height}" '
        f'width="100%" role="img" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]
    for i in range(5):  # grid lines and y ticks
        v = ymax * i / 4
        y = top + plot_h - plot_h * i / 4
        out.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="#ddd" stroke-width="1"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" {_FONT}>{v:g}</text>'
        )
    mid = top + plot_h / 2
    out.append(
        f'<text x="12" y="{mid:.1f}" transform="rotate(-90 12 {mid:.1f})" '
        f'text-anchor="middle" {_FONT}>{escape(y_label)}</text>'
    )
    for i, bar in enumerate(bars):
        shown = min(bar.value, ymax)
        h = max(0.5, plot_h * shown / ymax) if bar.value > 0 else 0.5
        x = left + i * step + gap / 2
        y = top + plot_h - h
        out.append(
            f'<rect x="{x:.2f}" y="{y:.2f}" width="{max(0.6, step - gap):.2f}" height="{h:.2f}" '
            f'fill="{bar.colour}"><title>{escape(bar.tooltip)}</title></rect>'
        )
        if bar.value > ymax:
            out.append(
                f'<text x="{x + step / 2:.1f}" y="{top - 4}" text-anchor="middle" {_FONT}>▲</text>'
            )
        if len(bars) <= 60:
            cx, cy = x + step / 2, top + plot_h + 8
            out.append(
                f'<text x="{cx:.1f}" y="{cy:.1f}" transform="rotate(60 {cx:.1f} {cy:.1f})" '
                f"{_FONT}>{escape(bar.label)}</text>"
            )
    if reference is not None and reference <= ymax:
        y = top + plot_h - plot_h * reference / ymax
        out.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#c0392b" '
            f'stroke-width="1.5" stroke-dasharray="6 4"/>'
            f'<text x="{left + 6}" y="{y - 5:.1f}" fill="#c0392b" '
            f"{_FONT}>{escape(reference_label)}</text>"
        )
    out.append(
        f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + plot_h}" stroke="#555"/>'
        f'<line x1="{left}" x2="{width - right}" y1="{top + plot_h}" y2="{top + plot_h}" '
        f'stroke="#555"/>'
    )
    out.append("</svg>")
    return "".join(out)


def stacked_bars(
    name: str,
    title: str,
    stacks: Sequence[Stack],
    *,
    legend: Sequence[tuple[str, str]],
    width: int = 960,
    row_height: int = 26,
) -> str:
    """Horizontal bars, one per stack, split into coloured parts by their share of the stack's
    count (every bar full width: distributions compare across stacks of any size); each part
    is labelled with its count, each bar with its total."""
    label_w, right, top = 190, 60, 34
    height = top + row_height * len(stacks) + 12
    plot_w = width - label_w - right
    out = [
        f'<svg class="chart" data-chart="{escape(name)}" viewBox="0 0 {width} {height}" '
        f'width="100%" role="img" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]
    x = label_w
    for key, colour in legend:
        out.append(
            f'<rect x="{x}" y="8" width="12" height="12" fill="{colour}"/>'
            f'<text x="{x + 16}" y="18" {_FONT}>{escape(key)}</text>'
        )
        x += 16 + 9 * len(key) + 18
    for row, stack in enumerate(stacks):
        y = top + row * row_height
        out.append(
            f'<text x="{label_w - 8}" y="{y + row_height / 2 + 4:.1f}" text-anchor="end" '
            f"{_FONT}>{escape(stack.label)}</text>"
        )
        x0 = float(label_w)
        total = sum(p[1] for p in stack.parts)
        for part, count, colour in stack.parts:
            if count <= 0:
                continue
            w = plot_w * count / total
            tip = escape(f"{stack.label}: {part} {count:g}")
            out.append(
                f'<rect x="{x0:.2f}" y="{y + 3}" width="{w:.2f}" height="{row_height - 6}" '
                f'fill="{colour}"><title>{tip}</title></rect>'
            )
            if w > 18:
                out.append(
                    f'<text x="{x0 + w / 2:.1f}" y="{y + row_height / 2 + 4:.1f}" '
                    f'text-anchor="middle" fill="#fff" {_FONT}>{count:g}</text>'
                )
            x0 += w
        out.append(
            f'<text x="{x0 + 6:.1f}" y="{y + row_height / 2 + 4:.1f}" {_FONT}>{total:g}</text>'
        )
    out.append("</svg>")
    return "".join(out)
