"""Inline SVG charts for the reports (no scripts, the same markup in the browser and the PDF):
the AGP modal day, the time-in-ranges bar, daily glucose profiles and a night's fused
timeline on one time axis."""

from __future__ import annotations

from datetime import datetime
from html import escape

from markupsafe import Markup

from nightlink.cloud import zones
from nightlink.shared import units

BAND_COLOURS = ("#a3202b", "#e0454f", "#3fa34d", "#f2b233", "#e08a1e")  # very low .. very high
G_MAX = 400.0


def _polylines(parts: list[str], segments: list[list[str]], colour: str, cls: str = "") -> None:
    """One thin polyline per non-empty run of "x,y" points (a gap in the data breaks a line)."""
    klass = f' class="{cls}"' if cls else ""
    for seg in segments:
        if seg:
            parts.append(f'<polyline{klass} points="{" ".join(seg)}" fill="none" '
                         f'stroke="{colour}" stroke-width="1"/>')


def _gy(g: float, top: float, h: float, gmax: float = G_MAX) -> float:
    return top + h * (1 - min(max(g, 0.0), gmax) / gmax)


def _label(mgdl: float, unit: str) -> str:
    return units.format_glucose(mgdl, unit) if mgdl >= 40 else f"{mgdl:.0f}"


def _grid(x0, x1, top, h, unit, lines=(54, 70, 180, 250), gmax=G_MAX) -> list[str]:
    out = []
    for g in lines:
        y = _gy(g, top, h, gmax)
        colour = "#3fa34d" if g in (70, 180) else "#bbb"
        out.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x1}" y2="{y:.1f}" stroke="{colour}" '
                   f'stroke-width="{1.2 if g in (70, 180) else 0.6}" stroke-dasharray="4 3"/>')
        out.append(f'<text x="{x0 - 4}" y="{y + 3:.1f}" text-anchor="end" class="ax" font-size="10" fill="#444">'
                   f'{_label(g, unit)}</text>')
    return out


def agp(bins: list[dict], unit: str, width: int = 720, height: int = 250) -> str:
    """The modal day: 5-95 % band, 25-75 % band and the median, by time of day."""
    left, right, top, bottom = 44, 10, 10, 24
    w, h = width - left - right, height - top - bottom
    n = len(bins)
    step = w / n

    def x(i):
        return left + (i + 0.5) * step

    parts = [f'<svg id="agp-chart" class="chart" viewBox="0 0 {width} {height}" '
             f'width="{width}" height="{height}" role="img" xmlns="http://www.w3.org/2000/svg">',
             '<title>Ambulatory glucose profile (modal day)</title>',
             f'<rect x="{left}" y="{top}" width="{w}" height="{h}" fill="#fafafa" stroke="#999"/>']
    ylo, yhi = _gy(180, top, h), _gy(70, top, h)
    parts.append(f'<rect x="{left}" y="{ylo:.1f}" width="{w}" height="{yhi - ylo:.1f}" '
                 'fill="#e6f4e8"/>')
    parts += _grid(left, left + w, top, h, unit)
    # Bands drawn per run of bins with data (gaps stay empty, never bridged).
    runs, cur = [], []
    for i, b in enumerate(bins):
        if b["p50"] is None:
            if cur:
                runs.append(cur)
            cur = []
        else:
            cur.append(i)
    if cur:
        runs.append(cur)
    for run in runs:
        for lo, hi, fill in (("p5", "p95", "#9ec5e8"), ("p25", "p75", "#3c7fc0")):
            pts = [f"{x(i):.1f},{_gy(bins[i][hi], top, h):.1f}" for i in run]
            pts += [f"{x(i):.1f},{_gy(bins[i][lo], top, h):.1f}" for i in reversed(run)]
            parts.append(f'<polygon class="agp-{lo}-{hi}" points="{" ".join(pts)}" '
                         f'fill="{fill}" fill-opacity="0.8"/>')
        pts = " ".join(f"{x(i):.1f},{_gy(bins[i]['p50'], top, h):.1f}" for i in run)
        parts.append(f'<polyline class="agp-median" points="{pts}" fill="none" '
                     'stroke="#0b2f57" stroke-width="2"/>')
    for hour in range(0, 25, 3):
        xx = left + w * hour / 24
        parts.append(f'<line x1="{xx:.1f}" y1="{top + h}" x2="{xx:.1f}" y2="{top + h + 4}" '
                     'stroke="#666"/>')
        parts.append(f'<text x="{xx:.1f}" y="{top + h + 16}" text-anchor="middle" class="ax" font-size="10" fill="#444">'
                     f'{hour % 24:02d}:00</text>')
    parts.append(f'<text x="{left + 4}" y="{top + 12}" class="ax" font-size="10" fill="#444">{escape(unit)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def tir_bar(bands: dict | None, width: int = 60, height: int = 200) -> str:
    """The five bands as one stacked bar, very high on top."""
    parts = [f'<svg id="tir-bar" class="chart" viewBox="0 0 {width} {height}" width="{width}" '
             f'height="{height}" xmlns="http://www.w3.org/2000/svg">',
             '<title>Time in ranges</title>']
    if bands:
        y = 0.0
        keys = ("very_high", "high", "in_range", "low", "very_low")
        colours = dict(zip(("very_low", "low", "in_range", "high", "very_high"), BAND_COLOURS,
                           strict=True))
        for k in keys:
            hh = height * bands[k] / 100.0
            if hh > 0:
                parts.append(f'<rect class="band-{k}" x="0" y="{y:.2f}" width="{width}" '
                             f'height="{max(hh, 0.8):.2f}" fill="{colours[k]}"/>')
            y += hh
    parts.append("</svg>")
    return "".join(parts)


def daily(readings: list, tz, day: str, unit: str, width: int = 96, height: int = 56) -> str:
    """One day's glucose as a small line with the target range shaded."""
    top, h = 2, height - 4
    gmax = 350.0
    parts = [f'<svg class="chart daily" viewBox="0 0 {width} {height}" width="{width}" '
             f'height="{height}" xmlns="http://www.w3.org/2000/svg">',
             f'<title>{escape(day)}</title>',
             f'<rect x="0" y="0" width="{width}" height="{height}" fill="#fafafa" stroke="#bbb"/>']
    ylo, yhi = _gy(180, top, h, gmax), _gy(70, top, h, gmax)
    parts.append(f'<rect x="0" y="{ylo:.1f}" width="{width}" height="{yhi - ylo:.1f}" '
                 'fill="#e6f4e8"/>')
    seg, prev = [], None
    lines = []
    for t, g in readings:
        local = zones.wall(t / 1000, tz)
        xx = width * (local.hour * 60 + local.minute) / 1440
        if prev is not None and t - prev > 20 * 60_000 and seg:
            lines.append(seg)
            seg = []
        seg.append(f"{xx:.1f},{_gy(g, top, h, gmax):.1f}")
        prev = t
    _polylines(parts, lines + [seg], "#0b2f57")
    for t, g in readings:
        if g < 70:
            local = zones.wall(t / 1000, tz)
            xx = width * (local.hour * 60 + local.minute) / 1440
            parts.append(f'<circle cx="{xx:.1f}" cy="{_gy(g, top, h, gmax):.1f}" r="1.5" '
                         'fill="#e0454f"/>')
    parts.append("</svg>")
    return "".join(parts)


STAGE_Y = {0: 0, 3: 1, 1: 2, 2: 3}  # wake on top, then REM, light, deep (hypnogram order)


def night_timeline(tl: list[dict], lows: list[dict], tz, unit: str, width: int = 1000,
                   compact: bool = False) -> str:
    """Hypnogram, glucose, SpO2, heart rate, breathing events and the room on one time axis
    (compact: lower tracks, for the one-page PDF)."""
    if not tl:
        return '<p class="muted">No epochs in this night.</p>'
    left, right = 40, 10  # the left margin holds the axis numbers; titles sit above panels
    w = width - left - right
    t0, t1 = tl[0]["t_ms"], tl[-1]["t_ms"] + 30_000
    span = max(1, t1 - t0)

    def x(t):
        return left + w * (t - t0) / span

    tracks = [("Sleep stage", 70), ("Glucose", 130), ("SpO2 %", 60), ("Heart rate", 60),
              ("Breathing", 44), ("Room", 60)]
    if compact:
        tracks = [("Sleep stage", 44), ("Glucose", 84), ("SpO2 %", 34), ("Heart rate", 34),
                  ("Breathing", 44), ("Room", 34)]
    gap = 16  # room above each panel for its title, clear of the axis numbers beside it
    height = sum(h for _, h in tracks) + gap * len(tracks) + 16
    parts = [f'<svg id="night-timeline" class="chart" viewBox="0 0 {width} {height}" '
             f'width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">',
             '<title>Fused night timeline</title>']
    y = gap
    boxes = {}
    for name, h in tracks:
        boxes[name] = (y, h)
        parts.append(f'<rect x="{left}" y="{y}" width="{w}" height="{h}" fill="#fafafa" '
                     'stroke="#bbb"/>')
        parts.append(f'<text x="{left}" y="{y - 4}" class="ax lbl" font-size="10" '
                     f'font-weight="bold" fill="#333">{escape(name)}</text>')
        y += h + gap
    # lows shaded over every track
    for low in lows:
        xa, xb = x(low["start_ms"]), x(low["end_ms"] + 300_000)
        parts.append(f'<rect class="low-shade" x="{xa:.1f}" y="{gap}" '
                     f'width="{max(2, xb - xa):.1f}" height="{y - 2 * gap}" '
                     f'fill="{BAND_COLOURS[1 if low["level"] == 1 else 0]}" fill-opacity="0.15"/>')
    # hypnogram
    top, h = boxes["Sleep stage"]
    for i, name in enumerate(("Wake", "REM", "Light", "Deep")):
        parts.append(f'<text x="{left + 3}" y="{top + 8 + i * (h - 10) / 3:.1f}" class="ax" font-size="10" fill="#444">'
                     f'{name}</text>')
    pts, prev = [], None
    for p in tl:
        if p["stage"] is None:
            if pts:
                parts.append(f'<polyline class="hypnogram" points="{" ".join(pts)}" '
                             'fill="none" stroke="#4b3f8f" stroke-width="1.5"/>')
            pts, prev = [], None
            continue
        yy = top + 5 + STAGE_Y[p["stage"]] * (h - 10) / 3
        if prev is not None:
            pts.append(f"{x(p['t_ms']):.1f},{prev:.1f}")
        pts.append(f"{x(p['t_ms']):.1f},{yy:.1f}")
        prev = yy
    if pts:
        parts.append(f'<polyline class="hypnogram" points="{" ".join(pts)}" fill="none" '
                     'stroke="#4b3f8f" stroke-width="1.5"/>')
    # glucose
    top, h = boxes["Glucose"]
    parts += _grid(left, left + w, top, h, unit, lines=(70, 180, 250), gmax=300)
    gpts = [(p["t_ms"], p["glucose"]) for p in tl if p["glucose"] is not None]
    seg, last = [], None
    for t, g in gpts:
        if last is not None and t - last > 20 * 60_000 and seg:
            parts.append(f'<polyline class="glucose" points="{" ".join(seg)}" fill="none" '
                         'stroke="#0b2f57" stroke-width="1.8"/>')
            seg = []
        seg.append(f"{x(t):.1f},{_gy(g, top, h, 300):.1f}")
        last = t
    if seg:
        parts.append(f'<polyline class="glucose" points="{" ".join(seg)}" fill="none" '
                     'stroke="#0b2f57" stroke-width="1.8"/>')
    for t, g in gpts:
        colour = BAND_COLOURS[units.band(g)]
        parts.append(f'<circle cx="{x(t):.1f}" cy="{_gy(g, top, h, 300):.1f}" r="2" '
                     f'fill="{colour}"/>')

    def series(key, box, lo, hi, colour, cls, ticks=()):
        """One panel's line (broken where the value is missing) and its axis numbers."""
        top, h = boxes[box]
        for v in ticks:
            yy = top + h * (1 - (v - lo) / (hi - lo))
            parts.append(f'<text x="{left - 4}" y="{yy + 3:.1f}" text-anchor="end" class="ax" '
                         f'font-size="10" fill="#444">{v}</text>')
        seg, out, last = [], [], None
        for p in tl:
            v = p[key]
            if v is None:
                if seg:
                    out.append(seg)
                seg = []
                continue
            yy = top + h * (1 - (min(max(v, lo), hi) - lo) / (hi - lo))
            seg.append(f"{x(p['t_ms']):.1f},{yy:.1f}")
            last = v
        _polylines(parts, out + [seg], colour, cls)
        return last

    series("spo2", "SpO2 %", 80, 100, "#1f7a8c", "spo2", (90, 100))
    series("hr", "Heart rate", 40, 110, "#c0392b", "hr", (50, 100))
    # breathing events as ticks on three rows
    top, h = boxes["Breathing"]
    for row, (key, colour, label) in enumerate((("apnea", "#a3202b", "apnea"),
                                                 ("desat", "#1f7a8c", "desat"),
                                                 ("snore", "#8e6c8a", "snore"))):
        yy = top + 4 + row * 13
        parts.append(f'<text x="{left + w - 2}" y="{yy + 9}" text-anchor="end" class="ax" font-size="10" fill="#444">'
                     f'{label}</text>')
        for p in tl:
            if p[key]:
                parts.append(f'<rect class="ev-{key}" x="{x(p["t_ms"]):.1f}" y="{yy}" '
                             f'width="{max(1.0, w * 30_000 / span):.1f}" height="10" '
                             f'fill="{colour}"/>')
    series("temp_c", "Room", 14, 28, "#e08a1e", "temp")
    series("noise_dba", "Room", 20, 80, "#777", "noise")
    top, h = boxes["Room"]
    parts.append(f'<text x="{left + 3}" y="{top + 10}" class="ax" font-size="10" fill="#444"><tspan fill="#e08a1e">'
                 'temperature 14-28 °C</tspan> <tspan fill="#777">noise 20-80 dBA</tspan></text>')
    # time axis, local time every hour
    hour_ms = 3_600_000
    t = (t0 // hour_ms + 1) * hour_ms
    while t < t1:
        xx = x(t)
        parts.append(f'<line x1="{xx:.1f}" y1="{gap}" x2="{xx:.1f}" y2="{y - gap}" '
                     'stroke="#ddd" stroke-width="0.5"/>')
        parts.append(f'<text x="{xx:.1f}" y="{y - gap + 13}" text-anchor="middle" class="ax" font-size="10" fill="#444">'
                     f'{datetime.fromtimestamp(t / 1000, tz).strftime("%H:%M")}</text>')
        t += hour_ms
    parts.append("</svg>")
    return "".join(parts)


# -- glucose shapes (the insights' recurring patterns and unusual stretch) ------------------

SHAPE_W, SHAPE_H, SHAPE_PAD = 240, 72, 4  # the inline pattern shapes, in CSS pixels
SHAPE_MIN_SPAN = 54.0  # mg/dL (3 mmol/L): the least height a shape is drawn over


def _in_unit(mgdl: float, unit: str) -> str:
    return f"{units.to_mmoll(mgdl):.1f}" if unit == units.MMOLL else f"{mgdl:.0f}"


def shape(values: list[float], unit: str, title: str) -> Markup:
    """A small line of a glucose shape (one value per grid step, mg/dL), its highest and
    lowest value written beside it in the reader's unit; drawn over its own range, or over
    SHAPE_MIN_SPAN when that is smaller, so a flat stretch does not look like a swing."""
    pts = [v for v in values if v is not None]
    lo, hi = min(pts), max(pts)
    top = max(hi, (lo + hi + SHAPE_MIN_SPAN) / 2)  # a flat stretch is drawn flat
    span = max(hi - lo, SHAPE_MIN_SPAN)
    plot_w = SHAPE_W - 56
    step = plot_w / max(len(values) - 1, 1)
    coords = " ".join(
        f"{SHAPE_PAD + i * step:.1f},"
        f"{SHAPE_PAD + (SHAPE_H - 2 * SHAPE_PAD) * (top - v) / span:.1f}"
        for i, v in enumerate(values) if v is not None)
    words = (f"{title}: from {_in_unit(values[0], unit)} to {_in_unit(values[-1], unit)} {unit}"
             f" over the window, lowest {_in_unit(lo, unit)}, highest {_in_unit(hi, unit)}")
    return Markup(
        f'<svg class="shape" viewBox="0 0 {SHAPE_W} {SHAPE_H}" width="{SHAPE_W}" '
        f'height="{SHAPE_H}" role="img" aria-label="{Markup.escape(words)}">'
        f'<rect x="0" y="0" width="{plot_w + 2 * SHAPE_PAD}" height="{SHAPE_H}" '
        f'fill="#f4f6f9"/>'
        f'<polyline points="{coords}" fill="none" stroke="#0b2f57" stroke-width="2"/>'
        f'<text x="{plot_w + 12}" y="14" font-size="11" fill="#222">{_in_unit(hi, unit)}</text>'
        f'<text x="{plot_w + 12}" y="{SHAPE_H - 6}" font-size="11" fill="#222">'
        f'{_in_unit(lo, unit)}</text>'
        f'<text x="{plot_w + 12}" y="{SHAPE_H / 2 + 4:.0f}" font-size="10" fill="#444">'
        f'{Markup.escape(unit)}</text></svg>')
