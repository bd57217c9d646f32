"""Charts drawn by hand: inline SVG for the report page, coloured table cells for mail clients.

Every chart carries its numbers as text too (an SVG `<title>`/`<desc>`, a value by each bar), so a
screen reader, a mail client without pictures and a test all read the same figures. Every text is
escaped here: labels may come from the database.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

Row = tuple[str, float | None]  # a label and its value; None: nothing to show (a rate of nothing)

BLUE, GREEN, ORANGE, GREY = "#3465a4", "#4e9a06", "#ce5c00", "#888a85"
WIDTH, HEIGHT = 480, 250  # the viewBox; the page scales it to any width
LEFT, RIGHT, TOP, BOTTOM = 50, 8, 30, 34  # room for the axis labels, the legend and the x labels


def number(value: float | None, unit: str = "") -> str:
    """`12`, `87.5 %`, `–` for no value: how a chart writes a figure."""
    if value is None:
        return "–"
    shown = f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"
    return f"{shown}{unit}"


def _describe(rows: Sequence[Row], unit: str) -> str:
    return "; ".join(f"{label}: {number(value, unit)}" for label, value in rows)


def _top(values: Sequence[float | None], top: float | None) -> float:
    return top if top is not None else max([v for v in values if v is not None] + [1.0])


def _frame(key: str, title: str, desc: str, body: list[str], top: float, unit: str) -> str:
    """The SVG around a chart: title and numbers for assistive technology, the baseline and the top value."""
    base = HEIGHT - BOTTOM
    return "\n".join([
        f'<svg class="chart" id="chart-{escape(key)}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="chart-{escape(key)}-title chart-{escape(key)}-desc" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="chart-{escape(key)}-title">{escape(title)}</title>',
        f'<desc id="chart-{escape(key)}-desc">{escape(desc)}</desc>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{WIDTH - RIGHT}" y2="{TOP}" stroke="#ddd"/>',
        f'<text x="{LEFT - 4}" y="{TOP + 4}" text-anchor="end" class="axis">{escape(number(top, unit))}</text>',
        f'<text x="{LEFT - 4}" y="{base + 4}" text-anchor="end" class="axis">0</text>',
        *body,
        f'<line x1="{LEFT}" y1="{base}" x2="{WIDTH - RIGHT}" y2="{base}" stroke="#555"/>',
        "</svg>"])


def _x_labels(labels: Sequence[str], step: float) -> list[str]:
    every = max(1, round(36 / step))  # no closer than about 36 units: a year of weeks stays legible
    return [f'<text x="{LEFT + step * (i + 0.5):.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle" '
            f'class="axis">{escape(label)}</text>' for i, label in enumerate(labels) if i % every == 0]


def svg_bars(key: str, title: str, rows: Sequence[Row], unit: str = "", top: float | None = None,
             colour: str = BLUE) -> str:
    """A bar chart as inline SVG, each bar with its value written above it."""
    high = _top([v for _, v in rows], top)
    step = (WIDTH - LEFT - RIGHT) / max(len(rows), 1)
    base, room = HEIGHT - BOTTOM, HEIGHT - BOTTOM - TOP
    body = []
    for i, (label, value) in enumerate(rows):
        x = LEFT + step * i + step * 0.15
        height = room * (value or 0) / high
        body.append(f'<rect x="{x:.1f}" y="{base - height:.1f}" width="{step * 0.7:.1f}" height="{height:.1f}" '
                    f'fill="{colour}"><title>{escape(label)}: {escape(number(value, unit))}</title></rect>')
        body.append(f'<text x="{x + step * 0.35:.1f}" y="{base - height - 4:.1f}" text-anchor="middle" '
                    f'class="value">{escape(number(value, unit))}</text>')
    body += _x_labels([label for label, _ in rows], step)
    return _frame(key, title, _describe(rows, unit), body, high, unit)


def svg_hbars(key: str, title: str, rows: Sequence[Row], unit: str = "", colour: str = BLUE) -> str:
    """Bars lying down, for long labels (a distribution's buckets): label on the left, value after the bar."""
    label_width, row, value_room = 150, 30, 56
    height = TOP - 20 + row * len(rows) + 8
    high = _top([v for _, v in rows], None)
    room = WIDTH - label_width - value_room
    body = []
    for i, (label, value) in enumerate(rows):
        y = TOP - 20 + row * i
        length = room * (value or 0) / high
        body.append(f'<text x="{label_width - 8}" y="{y + 19}" text-anchor="end" class="axis">{escape(label)}</text>')
        body.append(f'<rect x="{label_width}" y="{y + 5}" width="{length:.1f}" height="{row - 10}" fill="{colour}">'
                    f'<title>{escape(label)}: {escape(number(value, unit))}</title></rect>')
        body.append(f'<text x="{label_width + length + 6:.1f}" y="{y + 19}" class="value">'
                    f'{escape(number(value, unit))}</text>')
    return "\n".join([
        f'<svg class="chart" id="chart-{escape(key)}" viewBox="0 0 {WIDTH} {height}" role="img" '
        f'aria-labelledby="chart-{escape(key)}-title chart-{escape(key)}-desc" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="chart-{escape(key)}-title">{escape(title)}</title>',
        f'<desc id="chart-{escape(key)}-desc">{escape(_describe(rows, unit))}</desc>',
        f'<line x1="{label_width}" y1="{TOP - 20}" x2="{label_width}" y2="{height - 8}" stroke="#555"/>',
        *body, "</svg>"])


def svg_lines(key: str, title: str, labels: Sequence[str], series: Sequence[tuple[str, str, Sequence[float | None]]],
              unit: str = " %", top: float = 100) -> str:
    """Lines over time (name, colour, values per label); a missing value breaks the line."""
    step = (WIDTH - LEFT - RIGHT) / max(len(labels), 1)
    base, room = HEIGHT - BOTTOM, HEIGHT - BOTTOM - TOP
    body, told = [], []
    for n, (name, colour, values) in enumerate(series):
        points = [(LEFT + step * (i + 0.5), base - room * v / top) if v is not None else None
                  for i, v in enumerate(values)]
        runs: list[list[tuple[float, float]]] = [[]]
        for point in points:
            if point is None:
                runs.append([])
            else:
                runs[-1].append(point)
        body += [f'<polyline fill="none" stroke="{colour}" stroke-width="2.5" points="'
                 + " ".join(f"{x:.1f},{y:.1f}" for x, y in run) + '"/>' for run in runs if len(run) > 1]
        body += [f'<circle cx="{p[0]:.1f}" cy="{p[1]:.1f}" r="3.5" fill="{colour}"><title>{escape(name)}, '
                 f'{escape(label)}: {escape(number(v, unit))}</title></circle>'
                 for p, label, v in zip(points, labels, values, strict=True) if p is not None]
        body.append(f'<rect x="{LEFT + 8 + 200 * n}" y="6" width="12" height="12" fill="{colour}"/>'
                    f'<text x="{LEFT + 24 + 200 * n}" y="16" class="legend">{escape(name)}</text>')
        told.append(f"{name}: " + _describe(list(zip(labels, values, strict=True)), unit))
    body += _x_labels(labels, step)
    return _frame(key, title, " | ".join(told), body, top, unit)


def table_bars(title: str, rows: Sequence[Row], unit: str = "", top: float | None = None,
               colour: str = BLUE) -> str:
    """A bar chart for mail: a table whose coloured cells are the bars (Outlook, Gmail and Apple Mail show it)."""
    high = _top([v for _, v in rows], top)
    cell = "font-family:Arial,sans-serif;font-size:13px;color:#333;padding:2px 6px 2px 0;white-space:nowrap"
    lines = ['<table role="presentation" cellpadding="0" cellspacing="0" border="0" width="100%" '
             'style="max-width:560px;margin:0 0 18px 0">',
             f'<tr><td colspan="3" style="font-family:Arial,sans-serif;font-size:15px;font-weight:bold;'
             f'color:#222;padding:0 0 6px 0">{escape(title)}</td></tr>']
    for label, value in rows:
        share = round(100 * (value or 0) / high)
        bar = (f'<table role="presentation" cellpadding="0" cellspacing="0" border="0" width="{share}%"><tr>'
               f'<td bgcolor="{colour}" height="14" style="background-color:{colour};height:14px;font-size:1px;'
               f'line-height:1px">&nbsp;</td></tr></table>') if share > 0 else "&nbsp;"
        lines.append(f'<tr><td width="90" style="{cell}">{escape(label)}</td><td style="padding:2px 0">{bar}</td>'
                     f'<td width="56" align="right" style="{cell};padding:2px 0 2px 6px">'
                     f'{escape(number(value, unit))}</td></tr>')
    lines.append("</table>")
    return "\n".join(lines)
