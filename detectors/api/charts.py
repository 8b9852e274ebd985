"""Server-side SVG charts for the report pages: no script, no library, no CDN.

Every function returns one self-contained ``<svg>`` element as a string, ready to be
inlined in a page (or saved as a ``.svg`` file). The charts carry their own colours
and fonts as presentation attributes, so they look the same in any page, and they
scale down with their container through the page's stylesheet (``svg.chart`` in
``static/driftwarden.css``; no inline style, which the pages' Content-Security-Policy forbids).

Accessibility: each chart is ``role="img"`` with a ``<title>`` (its name) and a
``<desc>`` (its content in words: latest values, thresholds, the largest changes),
referenced by ``aria-labelledby`` and ``aria-describedby``; every point and bar has its own ``<title>``, which
browsers show on hover. All text — series names, category labels, titles — is
escaped; labels too long for the plot are shortened with an ellipsis and keep their
full text in the element's ``<title>``.

The API (all keyword arguments after the data):

- :func:`line_chart` — values over time (or any numeric x) for several :class:`Series`
  (e.g. estimated and realized performance), with horizontal :class:`Threshold` lines
  and an optional :class:`Band` (the range in which no alert fires). Points marked as
  flagged are drawn as alert markers.
- :func:`histogram_chart` — a numeric feature's reference and current distributions on
  the same bins (shares of each window's rows), reference as filled bars, current as
  outlined bars.
- :func:`ecdf_chart` — the two empirical cumulative distributions (what the
  Kolmogorov-Smirnov statistic measures: the largest vertical gap, which is marked).
- :func:`category_chart` — a categorical feature's shares per category in both windows,
  as paired horizontal bars; categories beyond ``max_categories`` are summed into an
  explicit ``other``.
- :func:`ranking_chart` — horizontal bars ranked by value (segments that degrade most,
  features by drift score), with an optional threshold line; flagged bars in red.

Example::

    >>> svg = line_chart(
    ...     [Series("estimated", [(1.0, 0.91), (2.0, 0.88)]), Series("realized", [(1.0, 0.90), (2.0, None)])],
    ...     title="ROC AUC", thresholds=[Threshold(0.85, "lower threshold")],
    ... )
    >>> svg.startswith("<svg") and "ROC AUC" in svg
    True
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

X = dt.datetime | float | int

# Colour-blind safe (Okabe-Ito inspired), dark enough for text contrast on white.
PALETTE = ("#0969da", "#bc4c00", "#8250df", "#1b7c83", "#6e7781", "#953800")
REFERENCE_COLOUR = "#8c959f"
CURRENT_COLOUR = "#bc4c00"
ALERT_COLOUR = "#cf222e"
BAND_COLOUR = "#1a7f37"
TEXT_COLOUR = "#1f2328"
MUTED_COLOUR = "#59636e"
GRID_COLOUR = "#d8dee4"
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, Arial, sans-serif"
FONT_SIZE = 12
CHAR_WIDTH = 6.6  # average width of a 12px system-ui character, for label layout
LABEL_CHAR_WIDTH = 7.2  # the same for left-hand labels, with room for wide letters (m, w, _)


@dataclass(frozen=True)
class Series:
    """One line of a :func:`line_chart`.

    ``points`` are ``(x, y)`` pairs, x a datetime or a number, y ``None`` (or NaN) for a
    gap (the line breaks there). ``flagged`` marks points with an alert (same length as
    ``points``, or empty). ``dashed`` draws the line dashed (e.g. an estimate beside the
    realized value). ``colour`` overrides the palette.
    """

    name: str
    points: Sequence[tuple[X, float | None]]
    flagged: Sequence[bool] = ()
    dashed: bool = False
    colour: str | None = None


@dataclass(frozen=True)
class Threshold:
    """A horizontal line at ``value`` with its ``label`` (e.g. ``"upper threshold 0.1"``)."""

    value: float
    label: str
    colour: str = ALERT_COLOUR


@dataclass(frozen=True)
class Band:
    """The shaded range ``lower..upper`` of a :func:`line_chart` (either end may be ``None``: open)."""

    lower: float | None
    upper: float | None
    label: str
    colour: str = BAND_COLOUR


@dataclass(frozen=True)
class Bar:
    """One bar of a :func:`ranking_chart`: its ``label``, ``value``, whether it is ``flagged``, and a ``note``."""

    label: str
    value: float
    flagged: bool = False
    note: str = ""


@dataclass
class _Canvas:
    width: int
    height: int
    title: str
    description: str
    parts: list[str] = field(default_factory=list)

    def add(self, fragment: str) -> None:
        self.parts.append(fragment)

    def render(self) -> str:
        body = "".join(self.parts)
        ident = "chart-" + hashlib.sha256(f"{self.title}\0{self.description}\0{body}".encode()).hexdigest()[:12]
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
            f'viewBox="0 0 {self.width} {self.height}" width="{self.width}" height="{self.height}" '
            f'aria-labelledby="{ident}-title" aria-describedby="{ident}-desc" '
            f'font-family="{FONT}" font-size="{FONT_SIZE}" fill="{TEXT_COLOUR}">'
            f'<title id="{ident}-title">{esc(self.title)}</title><desc id="{ident}-desc">{esc(self.description)}</desc>'
            f'<rect width="{self.width}" height="{self.height}" fill="#ffffff"/>'
            f"{body}</svg>"
        )


# -- shared helpers ---------------------------------------------------------------------------------


def esc(value: object) -> str:
    """Escape text for SVG (XML) content and attribute values."""
    return html.escape("" if value is None else str(value), quote=True)


def short(label: str, max_chars: int) -> str:
    """``label`` cut to ``max_chars`` characters with an ellipsis when longer."""
    return label if len(label) <= max_chars else label[: max(1, max_chars - 1)] + "…"


def number(value: float | None, digits: int = 3) -> str:
    """A compact number for axis ticks and tooltips (``—`` for missing)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1e6 or magnitude < 1e-3:
        return f"{value:.{digits}g}"
    if magnitude >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def percent(share: float) -> str:
    """A share as a percentage: one decimal below 10%, none above, and no decimal on whole numbers."""
    text = f"{share * 100:.1f}" if abs(share) < 0.1 else f"{share * 100:.0f}"
    return (text[:-2] if text.endswith(".0") else text) + "%"


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values (1, 2, 2.5 or 5 times a power of ten) covering ``lo..hi``."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0]
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(1, count)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    start = math.floor(lo / step) * step
    ticks = []
    value = start
    while value <= hi + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    if ticks[-1] < hi:
        ticks.append(round(ticks[-1] + step, 12))
    return ticks


def _x_number(x: X) -> float:
    if isinstance(x, dt.datetime):
        aware = x if x.tzinfo else x.replace(tzinfo=dt.UTC)
        return aware.timestamp()
    return float(x)


def _x_label(x: X, span_seconds: float) -> str:
    if isinstance(x, dt.datetime):
        aware = (x if x.tzinfo else x.replace(tzinfo=dt.UTC)).astimezone(dt.UTC)
        if span_seconds >= 2 * 86400:
            return aware.strftime("%b %d")
        return aware.strftime("%b %d %H:%M")
    return number(float(x))


def _finite(value: float | None) -> bool:
    return value is not None and isinstance(value, int | float) and math.isfinite(value)


def _legend(canvas: _Canvas, items: list[tuple[str, str]], *, x0: float, y: float, max_x: float) -> float:
    """Legend entries ``(swatch svg, label)`` flowed left to right from ``x0``; returns the next free y."""
    x = x0
    for swatch, label in items:
        text = short(label, 40)
        needed = 26 + len(text) * CHAR_WIDTH + 16
        if x + needed > max_x and x > x0:
            x = x0
            y += 18
        canvas.add(f'<g transform="translate({x:.1f},{y:.1f})">{swatch}<text x="24" y="4">{esc(text)}</text></g>')
        x += needed
    return y + 18


def _line_swatch(colour: str, dashed: bool = False) -> str:
    dash = ' stroke-dasharray="5 3"' if dashed else ""
    return f'<line x1="0" y1="0" x2="18" y2="0" stroke="{colour}" stroke-width="2.5"{dash}/>'


def _box_swatch(fill: str, stroke: str = "none", opacity: float = 1.0) -> str:
    return (
        f'<rect x="0" y="-5" width="18" height="10" fill="{fill}" fill-opacity="{opacity}" stroke="{stroke}" '
        'stroke-width="1.5"/>'
    )


def _tick_label(x: float, y: float, text: str) -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="middle" fill="{MUTED_COLOUR}">{esc(text)}</text>'


def _empty(canvas: _Canvas, message: str) -> str:
    canvas.add(
        f'<text x="{canvas.width / 2:.0f}" y="{canvas.height / 2:.0f}" text-anchor="middle" '
        f'fill="{MUTED_COLOUR}">{esc(message)}</text>'
    )
    return canvas.render()


def _heading(canvas: _Canvas, title: str, subtitle: str = "") -> float:
    canvas.add(f'<text x="12" y="20" font-size="14" font-weight="600">{esc(short(title, 90))}</text>')
    if subtitle:
        canvas.add(f'<text x="12" y="37" fill="{MUTED_COLOUR}">{esc(short(subtitle, 110))}</text>')
        return 52
    return 36


def _y_axis(canvas: _Canvas, ticks: list[float], y_of, left: float, right: float, fmt) -> None:
    for t in ticks:
        y = y_of(t)
        canvas.add(f'<line x1="{left:.1f}" y1="{y:.1f}" x2="{right:.1f}" y2="{y:.1f}" stroke="{GRID_COLOUR}"/>')
        canvas.add(
            f'<text x="{left - 6:.1f}" y="{y + 4:.1f}" text-anchor="end" fill="{MUTED_COLOUR}">{esc(fmt(t))}</text>'
        )


# -- line chart -------------------------------------------------------------------------------------


def line_chart(
    series: Sequence[Series],
    *,
    title: str,
    subtitle: str = "",
    y_label: str = "",
    thresholds: Sequence[Threshold] = (),
    band: Band | None = None,
    y_min: float | None = None,
    y_max: float | None = None,
    y_format=number,
    width: int = 760,
    height: int = 280,
) -> str:
    """Values over time for several series with threshold lines and a shaded band.

    x is a datetime (shown as dates, or dates and times for spans under two days) or a
    number, placed proportionally; the y range covers every value, threshold and band
    end (and ``y_min``/``y_max`` when given), padded and rounded to tick values.
    Returns one ``<svg>``; an empty chart says "no data" in words.
    """
    canvas = _Canvas(width, height, title, "")
    top = _heading(canvas, title, subtitle)
    legend: list[tuple[str, str]] = []
    colours = [s.colour or PALETTE[i % len(PALETTE)] for i, s in enumerate(series)]
    legend += [(_line_swatch(c, s.dashed), s.name) for s, c in zip(series, colours, strict=True)]
    if band is not None:
        legend.append((_box_swatch(band.colour, opacity=0.12), band.label))
    legend += [(_line_swatch(t.colour, dashed=True), t.label) for t in thresholds]
    if any(any(s.flagged) for s in series):
        legend.append(
            (f'<circle cx="9" cy="0" r="5" fill="#ffffff" stroke="{ALERT_COLOUR}" stroke-width="2"/>', "alert")
        )
    top = _legend(canvas, legend, x0=12, y=top, max_x=width - 12) + 4

    xs = [_x_number(x) for s in series for x, y in s.points if _finite(y)]
    ys = [float(y) for s in series for _, y in s.points if _finite(y)]
    summary = _line_summary(series, thresholds, band, y_format)
    canvas.description = summary
    if not xs:
        return _empty(canvas, "no data in this range")
    extra = [t.value for t in thresholds if _finite(t.value)]
    if band is not None:
        extra += [v for v in (band.lower, band.upper) if _finite(v)]
    lo = min([*ys, *extra] + ([y_min] if y_min is not None else []))
    hi = max([*ys, *extra] + ([y_max] if y_max is not None else []))
    pad = (hi - lo) * 0.06 or abs(hi) * 0.1 or 1.0
    lo = y_min if y_min is not None else lo - pad
    hi = y_max if y_max is not None else hi + pad
    ticks = [t for t in nice_ticks(lo, hi) if (y_min is None or t >= y_min) and (y_max is None or t <= y_max)]
    lo, hi = min([lo, *ticks]), max([hi, *ticks])

    left = 14 + max(len(y_format(t)) for t in ticks) * CHAR_WIDTH + (18 if y_label else 0)
    right, bottom = width - 16, height - 34
    x_lo, x_hi = min(xs), max(xs)
    x_span = x_hi - x_lo

    inset = 12  # keeps the first and last points off the axes

    def x_of(x: X) -> float:
        if x_span == 0:
            return (left + right) / 2
        return left + inset + (right - left - 2 * inset) * (_x_number(x) - x_lo) / x_span

    def y_of(y: float) -> float:
        return bottom - (bottom - top) * (y - lo) / (hi - lo)

    if band is not None:
        b_hi = y_of(min(hi, band.upper) if _finite(band.upper) else hi)
        b_lo = y_of(max(lo, band.lower) if _finite(band.lower) else lo)
        canvas.add(
            f'<rect x="{left:.1f}" y="{b_hi:.1f}" width="{right - left:.1f}" height="{max(0.0, b_lo - b_hi):.1f}" '
            f'fill="{band.colour}" fill-opacity="0.10"><title>{esc(band.label)}</title></rect>'
        )
    _y_axis(canvas, ticks, y_of, left, right, y_format)
    if y_label:
        mid = (top + bottom) / 2
        canvas.add(
            f'<text transform="translate(14,{mid:.1f}) rotate(-90)" text-anchor="middle" fill="{MUTED_COLOUR}">'
            f"{esc(short(y_label, 40))}</text>"
        )
    canvas.add(f'<line x1="{left:.1f}" y1="{bottom:.1f}" x2="{right:.1f}" y2="{bottom:.1f}" stroke="{MUTED_COLOUR}"/>')
    _x_ticks(canvas, series, x_of, bottom, right - left, x_span, width)
    for t in thresholds:
        if not _finite(t.value):
            continue
        y = y_of(t.value)
        canvas.add(
            f'<line class="threshold" x1="{left:.1f}" y1="{y:.1f}" x2="{right:.1f}" y2="{y:.1f}" stroke="{t.colour}" '
            f'stroke-width="1.5" stroke-dasharray="6 4"><title>{esc(t.label)}</title></line>'
        )
    for s, colour in zip(series, colours, strict=True):
        canvas.add(_series_path(s, colour, x_of, y_of, y_format))
    return canvas.render()


def _x_ticks(
    canvas: _Canvas, series: Sequence[Series], x_of, bottom: float, plot_width: float, span: float, width: int
) -> None:
    unique: dict[float, X] = {}
    for s in series:
        for x, _ in s.points:
            unique.setdefault(_x_number(x), x)
    keys = sorted(unique)
    sample = unique[keys[0]]
    longest = len(_x_label(sample, span)) * CHAR_WIDTH + 14
    capacity = max(1, int(plot_width // longest))
    step = max(1, math.ceil(len(keys) / capacity))
    chosen = keys[::step]
    if keys[-1] not in chosen and len(keys) > 1 and (len(keys) - 1) % step > step / 2:
        chosen.append(keys[-1])
    for k in chosen:
        x = x_of(unique[k])
        label = _x_label(unique[k], span)
        half = len(label) * CHAR_WIDTH / 2
        anchor = "end" if x + half > width - 4 else ("start" if x - half < 4 else "middle")
        canvas.add(f'<line x1="{x:.1f}" y1="{bottom:.1f}" x2="{x:.1f}" y2="{bottom + 4:.1f}" stroke="{MUTED_COLOUR}"/>')
        canvas.add(
            f'<text x="{x:.1f}" y="{bottom + 18:.1f}" text-anchor="{anchor}" fill="{MUTED_COLOUR}">{esc(label)}</text>'
        )


def _series_path(s: Series, colour: str, x_of, y_of, y_format) -> str:
    segments: list[list[tuple[float, float]]] = [[]]
    marks = []
    points = sorted(enumerate(s.points), key=lambda p: _x_number(p[1][0]))
    span = (max(_x_number(x) for _, (x, _) in points) - min(_x_number(x) for _, (x, _) in points)) if points else 0
    for index, (x, y) in points:
        if not _finite(y):
            if segments[-1]:
                segments.append([])
            continue
        px, py = x_of(x), y_of(float(y))
        segments[-1].append((px, py))
        flagged = bool(s.flagged[index]) if index < len(s.flagged) else False
        tip = f"{s.name} · {_x_label(x, span)}: {y_format(float(y))}" + (" · alert" if flagged else "")
        if flagged:
            marks.append(
                f'<circle class="alert" cx="{px:.1f}" cy="{py:.1f}" r="5" fill="#ffffff" stroke="{ALERT_COLOUR}" '
                f'stroke-width="2"><title>{esc(tip)}</title></circle>'
            )
        else:
            marks.append(
                f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{colour}"><title>{esc(tip)}</title></circle>'
            )
    dash = ' stroke-dasharray="6 4"' if s.dashed else ""
    lines = "".join(
        f'<polyline points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in seg)}" fill="none" stroke="{colour}" '
        f'stroke-width="2"{dash} stroke-linejoin="round"/>'
        for seg in segments
        if len(seg) > 1
    )
    return f'<g class="series" data-series="{esc(s.name)}">{lines}{"".join(marks)}</g>'


def _line_summary(series: Sequence[Series], thresholds: Sequence[Threshold], band: Band | None, y_format) -> str:
    words = []
    for s in series:
        values = [(x, y) for x, y in s.points if _finite(y)]
        if not values:
            words.append(f"{s.name}: no values")
            continue
        x, y = max(values, key=lambda p: _x_number(p[0]))
        alerts = sum(1 for f in s.flagged if f)
        words.append(
            f"{s.name}: {len(values)} points, latest {y_format(float(y))}"
            + (f", {alerts} with an alert" if alerts else "")
        )
    words += [t.label for t in thresholds]
    if band is not None:
        words.append(f"{band.label} {y_format(band.lower)} to {y_format(band.upper)}")
    return "; ".join(words) + "."


# -- distributions ----------------------------------------------------------------------------------


def histogram_chart(
    edges: Sequence[float],
    reference_counts: Sequence[int | float],
    current_counts: Sequence[int | float],
    *,
    title: str,
    subtitle: str = "",
    x_label: str = "",
    reference_label: str = "reference",
    current_label: str = "current",
    width: int = 760,
    height: int = 260,
) -> str:
    """A numeric feature's reference and current distributions on shared bins.

    ``edges`` has one more element than each count list (bin ``i`` is
    ``[edges[i], edges[i+1])``, all finite and increasing). Heights are each window's
    share of its rows per bin, scaled by the bin's width relative to the mean width (a
    density, equal to the plain share for equal-width bins), so that unequal bins are
    not misread. Reference: grey filled bars; current: orange outlined bars on top.
    """
    n = len(edges) - 1
    if n < 1 or len(reference_counts) != n or len(current_counts) != n:
        raise ValueError(f"histogram_chart: {len(edges)} edges need {max(0, n)} counts per window")
    if any(not math.isfinite(v) for v in edges) or any(b <= a for a, b in zip(edges[:-1], edges[1:], strict=True)):
        raise ValueError("histogram_chart: edges must be finite and increasing")
    ref_total, cur_total = float(sum(reference_counts)), float(sum(current_counts))
    ref_share = [c / ref_total if ref_total else 0.0 for c in reference_counts]
    cur_share = [c / cur_total if cur_total else 0.0 for c in current_counts]
    widths = [b - a for a, b in zip(edges[:-1], edges[1:], strict=True)]
    mean_width = sum(widths) / n
    ref_h = [s * mean_width / w for s, w in zip(ref_share, widths, strict=True)]
    cur_h = [s * mean_width / w for s, w in zip(cur_share, widths, strict=True)]
    moved = sum(abs(a - b) for a, b in zip(ref_share, cur_share, strict=True)) / 2
    peak = max(range(n), key=lambda i: abs(cur_share[i] - ref_share[i]))
    description = (
        f"{reference_label} {int(ref_total):,} rows, {current_label} {int(cur_total):,} rows over {n} bins from "
        f"{number(edges[0])} to {number(edges[-1])}; {percent(moved)} of the mass moved; largest change in "
        f"{number(edges[peak])} to {number(edges[peak + 1])}: {percent(ref_share[peak])} to {percent(cur_share[peak])}."
    )
    canvas = _Canvas(width, height, title, description)
    top = _heading(canvas, title, subtitle)
    top = (
        _legend(
            canvas,
            [
                (_box_swatch(REFERENCE_COLOUR, opacity=0.55), f"{reference_label} ({int(ref_total):,} rows)"),
                (_box_swatch("none", CURRENT_COLOUR), f"{current_label} ({int(cur_total):,} rows)"),
            ],
            x0=12,
            y=top,
            max_x=width - 12,
        )
        + 4
    )
    if not ref_total and not cur_total:
        return _empty(canvas, "no values in either window")
    hi = max([*ref_h, *cur_h, 1e-12]) * 1.08
    ticks = nice_ticks(0.0, hi, 4)
    hi = max(hi, ticks[-1])
    left = 14 + max(len(percent(t)) for t in ticks) * CHAR_WIDTH
    right, bottom = width - 16, height - (48 if x_label else 34)

    def x_of(v: float) -> float:
        return left + (right - left) * (v - edges[0]) / (edges[-1] - edges[0])

    def y_of(v: float) -> float:
        return bottom - (bottom - top) * v / hi

    _y_axis(canvas, ticks, y_of, left, right, percent)
    for i in range(n):
        x0, x1 = x_of(edges[i]), x_of(edges[i + 1])
        gap = min(1.0, (x1 - x0) * 0.1)
        tip = f"{number(edges[i])} to {number(edges[i + 1])}: {reference_label} {percent(ref_share[i])}"
        tip += f", {current_label} {percent(cur_share[i])}"
        canvas.add(
            f'<rect class="reference" x="{x0 + gap:.1f}" y="{y_of(ref_h[i]):.1f}" '
            f'width="{max(0.5, x1 - x0 - 2 * gap):.1f}" '
            f'height="{bottom - y_of(ref_h[i]):.1f}" fill="{REFERENCE_COLOUR}" fill-opacity="0.55">'
            f"<title>{esc(tip)}</title></rect>"
        )
    for i in range(n):
        x0, x1 = x_of(edges[i]), x_of(edges[i + 1])
        gap = min(1.0, (x1 - x0) * 0.1)
        tip = f"{number(edges[i])} to {number(edges[i + 1])}: {current_label} {percent(cur_share[i])}"
        canvas.add(
            f'<rect class="current" x="{x0 + gap:.1f}" y="{y_of(cur_h[i]):.1f}" '
            f'width="{max(0.5, x1 - x0 - 2 * gap):.1f}" '
            f'height="{bottom - y_of(cur_h[i]):.1f}" fill="{CURRENT_COLOUR}" fill-opacity="0.08" '
            f'stroke="{CURRENT_COLOUR}" stroke-width="2"><title>{esc(tip)}</title></rect>'
        )
    canvas.add(f'<line x1="{left:.1f}" y1="{bottom:.1f}" x2="{right:.1f}" y2="{bottom:.1f}" stroke="{MUTED_COLOUR}"/>')
    for t in nice_ticks(edges[0], edges[-1], max(2, int((right - left) // 90))):
        if edges[0] <= t <= edges[-1]:
            x = x_of(t)
            canvas.add(
                f'<line x1="{x:.1f}" y1="{bottom:.1f}" x2="{x:.1f}" y2="{bottom + 4:.1f}" stroke="{MUTED_COLOUR}"/>'
                + _tick_label(x, bottom + 18, number(t))
            )
    if x_label:
        canvas.add(
            f'<text x="{(left + right) / 2:.1f}" y="{bottom + 36:.1f}" text-anchor="middle" fill="{MUTED_COLOUR}">'
            f"{esc(short(x_label, 80))}</text>"
        )
    return canvas.render()


def ecdf_chart(
    reference: Sequence[tuple[float, int | float]],
    current: Sequence[tuple[float, int | float]],
    *,
    title: str,
    subtitle: str = "",
    x_label: str = "",
    reference_label: str = "reference",
    current_label: str = "current",
    width: int = 760,
    height: int = 260,
) -> str:
    """The empirical cumulative distributions of both windows, as step lines.

    Each window is given as ``(value, count)`` pairs (a value's number of rows; any
    order). The largest vertical distance between the two curves — the two-sample
    Kolmogorov-Smirnov statistic D = sup_x |F_ref(x) - F_cur(x)| — is marked with its
    value.
    """

    def cumulative(pairs: Sequence[tuple[float, int | float]]) -> list[tuple[float, float]]:
        merged: dict[float, float] = {}
        for v, c in pairs:
            if math.isfinite(v) and c > 0:
                merged[float(v)] = merged.get(float(v), 0.0) + float(c)
        total = sum(merged.values())
        out, run = [], 0.0
        for v in sorted(merged):
            run += merged[v]
            out.append((v, run / total))
        return out

    ref, cur = cumulative(reference), cumulative(current)
    support = sorted({v for v, _ in ref} | {v for v, _ in cur})

    def at(curve: list[tuple[float, float]], x: float) -> float:
        lo_i, hi_i = 0, len(curve)
        while lo_i < hi_i:
            mid = (lo_i + hi_i) // 2
            if curve[mid][0] <= x:
                lo_i = mid + 1
            else:
                hi_i = mid
        return curve[lo_i - 1][1] if lo_i else 0.0

    d, d_at = 0.0, support[0] if support else 0.0
    for x in support:
        gap = abs(at(ref, x) - at(cur, x))
        if gap > d:
            d, d_at = gap, x
    description = (
        f"{reference_label} and {current_label} cumulative distributions; largest gap (Kolmogorov-Smirnov D) "
        f"{number(d)} at {number(d_at)}."
    )
    canvas = _Canvas(width, height, title, description)
    top = _heading(canvas, title, subtitle)
    top = (
        _legend(
            canvas,
            [
                (_line_swatch(REFERENCE_COLOUR), reference_label),
                (_line_swatch(CURRENT_COLOUR), current_label),
                (_line_swatch(ALERT_COLOUR, dashed=True), f"largest gap D = {number(d)}"),
            ],
            x0=12,
            y=top,
            max_x=width - 12,
        )
        + 4
    )
    if not support:
        return _empty(canvas, "no values in either window")
    lo, hi = support[0], support[-1]
    if hi == lo:
        lo, hi = lo - 0.5, hi + 0.5
    left, right, bottom = 14 + 4 * CHAR_WIDTH, width - 16, height - (48 if x_label else 34)

    def x_of(v: float) -> float:
        return left + (right - left) * (v - lo) / (hi - lo)

    def y_of(v: float) -> float:
        return bottom - (bottom - top) * v

    _y_axis(canvas, [0.0, 0.25, 0.5, 0.75, 1.0], y_of, left, right, percent)
    for curve, colour, name in ((ref, REFERENCE_COLOUR, reference_label), (cur, CURRENT_COLOUR, current_label)):
        if not curve:
            continue
        path = [f"M{x_of(lo):.1f},{y_of(0):.1f}"]
        prev = 0.0
        for v, p in curve:
            path.append(f"L{x_of(v):.1f},{y_of(prev):.1f}L{x_of(v):.1f},{y_of(p):.1f}")
            prev = p
        path.append(f"L{x_of(hi):.1f},{y_of(prev):.1f}")
        canvas.add(
            f'<path class="ecdf" d="{"".join(path)}" fill="none" stroke="{colour}" stroke-width="2">'
            f"<title>{esc(name)}</title></path>"
        )
    gx = x_of(d_at)
    canvas.add(
        f'<line class="ks-gap" x1="{gx:.1f}" y1="{y_of(at(ref, d_at)):.1f}" x2="{gx:.1f}" '
        f'y2="{y_of(at(cur, d_at)):.1f}" '
        f'stroke="{ALERT_COLOUR}" stroke-width="2" stroke-dasharray="4 3"><title>D = {esc(number(d))} at '
        f"{esc(number(d_at))}</title></line>"
    )
    canvas.add(f'<line x1="{left:.1f}" y1="{bottom:.1f}" x2="{right:.1f}" y2="{bottom:.1f}" stroke="{MUTED_COLOUR}"/>')
    for t in nice_ticks(lo, hi, max(2, int((right - left) // 90))):
        if lo <= t <= hi:
            x = x_of(t)
            canvas.add(_tick_label(x, bottom + 18, number(t)))
    if x_label:
        canvas.add(
            f'<text x="{(left + right) / 2:.1f}" y="{bottom + 36:.1f}" text-anchor="middle" fill="{MUTED_COLOUR}">'
            f"{esc(short(x_label, 80))}</text>"
        )
    return canvas.render()


def category_chart(
    categories: Sequence[str],
    reference_counts: Sequence[int | float],
    current_counts: Sequence[int | float],
    *,
    title: str,
    subtitle: str = "",
    reference_label: str = "reference",
    current_label: str = "current",
    max_categories: int = 12,
    width: int = 760,
) -> str:
    """Shares per category in both windows as paired horizontal bars, largest change first.

    Categories are ordered by the absolute change of their share; those beyond
    ``max_categories`` are summed into one row ``other (N categories)``. A category absent
    from the reference is labelled ``new``. The height grows with the number of rows.
    """
    if not (len(categories) == len(reference_counts) == len(current_counts)):
        raise ValueError("category_chart: one reference and one current count per category")
    ref_total, cur_total = float(sum(reference_counts)), float(sum(current_counts))
    rows = [
        (
            str(c),
            r / ref_total if ref_total else 0.0,
            k / cur_total if cur_total else 0.0,
            r == 0 and k > 0,
        )
        for c, r, k in zip(categories, reference_counts, current_counts, strict=True)
    ]
    rows.sort(key=lambda row: (-abs(row[2] - row[1]), -max(row[1], row[2]), row[0]))
    if len(rows) > max_categories:
        rest = rows[max_categories - 1 :]
        rows = rows[: max_categories - 1] + [
            (f"other ({len(rest)} categories)", sum(r[1] for r in rest), sum(r[2] for r in rest), False)
        ]
    changed = rows[0] if rows else None
    description = (
        f"{len(categories)} categories; {reference_label} {int(ref_total):,} rows, "
        f"{current_label} {int(cur_total):,} rows"
    )
    if changed:
        description += f"; largest change {changed[0]}: {percent(changed[1])} to {percent(changed[2])}"
    description += "."
    row_height = 30
    label_chars = min(28, max([len(r[0]) + (4 if r[3] else 0) for r in rows] + [6]))
    canvas = _Canvas(width, 0, title, description)
    top = _heading(canvas, title, subtitle)
    top = (
        _legend(
            canvas,
            [
                (_box_swatch(REFERENCE_COLOUR, opacity=0.7), f"{reference_label} ({int(ref_total):,} rows)"),
                (_box_swatch(CURRENT_COLOUR), f"{current_label} ({int(cur_total):,} rows)"),
            ],
            x0=12,
            y=top,
            max_x=width - 12,
        )
        + 2
    )
    canvas.height = int(top + max(1, len(rows)) * row_height + 30)
    if not rows:
        return _empty(canvas, "no categories in either window")
    left = 24 + label_chars * LABEL_CHAR_WIDTH
    right = width - 110  # room for "12.5% → 40%" after the longest bar
    hi = max(max(r[1], r[2]) for r in rows) or 1.0
    ticks = nice_ticks(0.0, hi, 4)
    hi = ticks[-1]
    bottom = top + len(rows) * row_height

    def x_of(v: float) -> float:
        return left + (right - left) * v / hi

    for t in ticks:
        x = x_of(t)
        canvas.add(
            f'<line x1="{x:.1f}" y1="{top:.1f}" x2="{x:.1f}" y2="{bottom:.1f}" stroke="{GRID_COLOUR}"/>'
            + _tick_label(x, bottom + 16, percent(t))
        )
    for i, (name, r, k, new) in enumerate(rows):
        y = top + i * row_height
        label = short(name, label_chars - (4 if new else 0)) + (" new" if new else "")
        label_colour = ALERT_COLOUR if new else TEXT_COLOUR
        canvas.add(
            f'<g class="category" data-category="{esc(name)}"><title>{esc(name)}: {esc(reference_label)} {percent(r)}, '
            f"{esc(current_label)} {percent(k)}{' (not in the reference)' if new else ''}</title>"
            f'<text x="{left - 8:.1f}" y="{y + 19:.1f}" text-anchor="end" fill="{label_colour}">{esc(label)}</text>'
            f'<rect x="{left:.1f}" y="{y + 4:.1f}" width="{max(0.0, x_of(r) - left):.1f}" height="10" '
            f'fill="{REFERENCE_COLOUR}" fill-opacity="0.7"/>'
            f'<rect x="{left:.1f}" y="{y + 15:.1f}" width="{max(0.0, x_of(k) - left):.1f}" height="10" '
            f'fill="{CURRENT_COLOUR}"/>'
            f'<text x="{max(x_of(r), x_of(k)) + 6:.1f}" y="{y + 19:.1f}" fill="{MUTED_COLOUR}">'
            f"{percent(r)} → {percent(k)}</text></g>"
        )
    return canvas.render()


# -- ranking ----------------------------------------------------------------------------------------


def ranking_chart(
    bars: Sequence[Bar],
    *,
    title: str,
    subtitle: str = "",
    value_label: str = "",
    threshold: Threshold | None = None,
    value_format=number,
    max_bars: int = 15,
    width: int = 760,
) -> str:
    """Horizontal bars, highest value first (the order given is not kept), at most ``max_bars``.

    Negative values extend left of a zero line. Flagged bars are red, others blue; each
    bar ends with its value and its ``note``. A threshold is drawn as a dashed vertical line.
    The number of bars left out is said below the chart.
    """
    ordered = sorted(bars, key=lambda b: (-b.value if math.isfinite(b.value) else math.inf, b.label))
    shown, hidden = ordered[:max_bars], len(ordered) - min(len(ordered), max_bars)
    finite = [b.value for b in shown if math.isfinite(b.value)]
    top_text = ", ".join(f"{b.label} {value_format(b.value)}" for b in shown[:3])
    description = f"{len(bars)} entries ranked by {value_label or 'value'}" + (
        f"; highest: {top_text}" if shown else ""
    )
    if threshold is not None:
        description += f"; {threshold.label}"
    canvas = _Canvas(width, 0, title, description + ".")
    top = _heading(canvas, title, subtitle)
    legend = [(_box_swatch(PALETTE[0]), value_label or "value"), (_box_swatch(ALERT_COLOUR), "flagged")]
    if threshold is not None:
        legend.append((_line_swatch(threshold.colour, dashed=True), threshold.label))
    top = _legend(canvas, legend, x0=12, y=top, max_x=width - 12) + 2
    row_height = 24
    canvas.height = int(top + max(1, len(shown)) * row_height + (44 if hidden else 28))
    if not finite:
        return _empty(canvas, "nothing to rank")
    label_chars = min(30, max(len(b.label) for b in shown))
    left = 24 + label_chars * LABEL_CHAR_WIDTH
    note_room = min(200, max(len(value_format(b.value)) + len(b.note) + 3 for b in shown) * CHAR_WIDTH + 12)
    right = width - note_room
    lo = min([0.0, *finite] + ([threshold.value] if threshold else []))
    hi = max([0.0, *finite] + ([threshold.value] if threshold else []))
    if hi == lo:
        hi = lo + 1.0
    bottom = top + len(shown) * row_height

    def x_of(v: float) -> float:
        return left + (right - left) * (v - lo) / (hi - lo)

    zero = x_of(0.0)
    for t in nice_ticks(lo, hi, 4):
        if lo <= t <= hi:
            x = x_of(t)
            canvas.add(
                f'<line x1="{x:.1f}" y1="{top:.1f}" x2="{x:.1f}" y2="{bottom:.1f}" stroke="{GRID_COLOUR}"/>'
                f'<text x="{x:.1f}" y="{bottom + 16:.1f}" text-anchor="middle" fill="{MUTED_COLOUR}">'
                f"{esc(value_format(t))}</text>"
            )
    for i, b in enumerate(shown):
        y = top + i * row_height
        value = b.value if math.isfinite(b.value) else 0.0
        x0, x1 = sorted((zero, x_of(value)))
        colour = ALERT_COLOUR if b.flagged else PALETTE[0]
        tail = value_format(b.value) + (f" · {b.note}" if b.note else "")
        canvas.add(
            f'<g class="bar{" flagged" if b.flagged else ""}" data-label="{esc(b.label)}">'
            f"<title>{esc(b.label)}: {esc(tail)}</title>"
            f'<text x="{left - 8:.1f}" y="{y + 16:.1f}" text-anchor="end">{esc(short(b.label, label_chars))}</text>'
            f'<rect x="{x0:.1f}" y="{y + 5:.1f}" width="{max(1.0, x1 - x0):.1f}" height="14" fill="{colour}"/>'
            f'<text x="{max(x1, zero) + 6:.1f}" y="{y + 16:.1f}" fill="{MUTED_COLOUR}">{esc(short(tail, 40))}</text>'
            "</g>"
        )
    canvas.add(f'<line x1="{zero:.1f}" y1="{top:.1f}" x2="{zero:.1f}" y2="{bottom:.1f}" stroke="{MUTED_COLOUR}"/>')
    if threshold is not None and _finite(threshold.value):
        x = x_of(threshold.value)
        canvas.add(
            f'<line class="threshold" x1="{x:.1f}" y1="{top - 2:.1f}" x2="{x:.1f}" y2="{bottom:.1f}" '
            f'stroke="{threshold.colour}" stroke-width="1.5" stroke-dasharray="6 4">'
            f"<title>{esc(threshold.label)}</title></line>"
        )
    if hidden:
        canvas.add(f'<text x="12" y="{bottom + 36:.1f}" fill="{MUTED_COLOUR}">{hidden} more not shown</text>')
    return canvas.render()
