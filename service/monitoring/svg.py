"""The status page's charts, drawn here as inline SVG: the page loads nothing, so no chart library either.

Every chart is one ``<svg data-chart="NAME">`` that scales with its box (viewBox, CSS width 100%). Text from a
snapshot is escaped here; long names are shortened on the axes and given whole in a ``<title>``.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

FONT = 'font-family="system-ui, sans-serif" font-size="11"'
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 44, 12, 12, 28


@dataclass(frozen=True)
class Series:
    name: str
    colour: str
    points: Sequence[tuple[float, float | None]]  # (x, y); y None breaks the line
    threshold: float | None = None  # drawn as a dashed line in the series' colour


def number(value: object) -> float | None:
    """A finite float, or None for None, NaN, infinities and non-numbers."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def short(text: str, limit: int = 14) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _svg(chart: str, width: int, height: int, title: str, body: list[str]) -> str:
    return (f'<svg data-chart="{chart}" role="img" viewBox="0 0 {width} {height}" width="{width}" '
            f'height="{height}" xmlns="http://www.w3.org/2000/svg" {FONT}><title>{escape(title)}</title>'
            + "".join(body) + "</svg>")


def _note(width: int, height: int, text: str) -> str:
    return (f'<rect x="0.5" y="0.5" width="{width - 1}" height="{height - 1}" fill="none" stroke="#ccc"/>'
            f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" fill="#666">{escape(text)}</text>')


def heatmap(chart: str, names: Sequence[str], matrix: Sequence[Sequence[object]], empty: str) -> str:
    """Row i: after round i+1; column j: on names[j]. Only the lower triangle is drawn; red 0 to green 1."""
    n = len(matrix)
    if n == 0:
        return _svg(chart, 320, 80, empty, [_note(320, 80, empty)])
    cell = max(26, min(56, 480 // n))
    left, top = 74, 16
    width, height = left + n * cell + 8, top + n * cell + 64
    body = []
    for i, row in enumerate(matrix):
        body.append(f'<text x="{left - 6}" y="{top + i * cell + cell / 2 + 4}" text-anchor="end">round {i + 1}</text>')
        for j in range(i + 1):
            value = number(row[j]) if j < len(row) else None
            x, y = left + j * cell, top + i * cell
            colour = f"hsl({120 * min(max(value, 0.0), 1.0):.0f},60%,72%)" if value is not None else "#eee"
            label = f"{value:.2f}" if value is not None else "\u2013"
            name = names[j] if j < len(names) else f"arrival {j + 1}"
            body.append(f'<rect x="{x}" y="{y}" width="{cell - 2}" height="{cell - 2}" fill="{colour}">'
                        f'<title>after round {i + 1}, on {escape(name)}: {label}</title></rect>'
                        f'<text x="{x + cell / 2 - 1}" y="{y + cell / 2 + 3}" text-anchor="middle" '
                        f'font-size="{10 if cell < 40 else 11}">{label}</text>')
    for j in range(n):
        name = names[j] if j < len(names) else f"arrival {j + 1}"
        x, y = left + j * cell + cell / 2, top + n * cell + 8
        body.append(f'<text transform="translate({x},{y}) rotate(40)" text-anchor="start">'
                    f'<title>{escape(name)}</title>{escape(short(name))}</text>')
    return _svg(chart, width, height, "accuracy after each round on each arrival", body)


def line_chart(chart: str, title: str, series: Sequence[Series], x_label: Callable[[float], str], empty: str,
               y_floor: float = 1.0, width: int = 560, height: int = 220, x_ticks: Sequence[float] = ()) -> str:
    """Lines over a shared x axis; y from 0 to the largest value or threshold (at least y_floor). The x axis is
    labelled at x_ticks, or at its two ends."""
    xs = [x for s in series for x, y in s.points if number(y) is not None]
    if not xs:
        return _svg(chart, width, height, empty, [_note(width, height, empty)])
    ys = [number(y) or 0.0 for s in series for _, y in s.points] + [number(s.threshold) or 0.0 for s in series]
    y_max = max([y_floor, *ys]) * 1.08
    x_min, x_max = min(xs), max(xs)
    span = (x_max - x_min) or 1.0
    plot_w, plot_h = width - MARGIN_LEFT - MARGIN_RIGHT, height - MARGIN_TOP - MARGIN_BOTTOM

    def px(x: float) -> float:
        return MARGIN_LEFT + (plot_w / 2 if x_max == x_min else (x - x_min) / span * plot_w)

    def py(y: float) -> float:
        return MARGIN_TOP + plot_h - y / y_max * plot_h

    bottom = MARGIN_TOP + plot_h
    body = [f'<line x1="{MARGIN_LEFT}" y1="{bottom}" x2="{width - MARGIN_RIGHT}" y2="{bottom}" stroke="#999"/>',
            f'<line x1="{MARGIN_LEFT}" y1="{MARGIN_TOP}" x2="{MARGIN_LEFT}" y2="{bottom}" stroke="#999"/>']
    for k in range(5):
        y = y_max / 1.08 * k / 4
        body.append(f'<text x="{MARGIN_LEFT - 4}" y="{py(y) + 4:.1f}" text-anchor="end">'
                    f'{y:.{2 if y_max > 0.2 else 3}f}</text>')
    for x in sorted(set(x_ticks) or {x_min, x_max}):
        anchor = "start" if x == x_min and x_max != x_min else "end" if x == x_max and x_max != x_min else "middle"
        body.append(f'<text x="{px(x):.1f}" y="{height - 8}" text-anchor="{anchor}">{escape(x_label(x))}</text>')
    for s in series:
        threshold = number(s.threshold)
        if threshold is not None:
            body.append(f'<line x1="{MARGIN_LEFT}" y1="{py(threshold):.1f}" x2="{width - MARGIN_RIGHT}" '
                        f'y2="{py(threshold):.1f}" stroke="{s.colour}" stroke-dasharray="5 4" opacity="0.8">'
                        f'<title>{escape(s.name)} threshold {threshold:g}</title></line>')
        for run in _runs(s.points):
            path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in run)
            body.append(f'<polyline points="{path}" fill="none" stroke="{s.colour}" stroke-width="2"/>')
            if len(run) <= 40:  # markers only while they stay apart
                body.extend(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.5" fill="{s.colour}"/>' for x, y in run)
    return _svg(chart, width, height, title, body)


def _runs(points: Sequence[tuple[float, object]]) -> list[list[tuple[float, float]]]:
    """The points split where a value is missing, so a gap is not bridged by a line."""
    runs: list[list[tuple[float, float]]] = [[]]
    for x, y in points:
        value = number(y)
        if value is None:
            runs.append([])
        else:
            runs[-1].append((x, value))
    return [run for run in runs if run]
