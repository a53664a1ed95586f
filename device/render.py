# The clock's screens drawn into a 296x128 1-bit framebuf (MONO_VLSB, 1 = ink): night,
# morning summary, setup/status. Pure drawing from a View; no hardware, no clock reads.

try:
    from micropython import const
except ImportError:  # CPython (host port)

    def const(x):
        return x


from nightlink.device import font_big, font_mid, font_small
from nightlink.shared import units

W = const(296)
H = const(128)
INK = const(1)
PAPER = const(0)

FRESH = const(0)
STALE = const(1)  # older than thresholds.stale_min: struck through, age inverted
NODATA = const(2)  # older than thresholds.nodata_min: "NO DATA since HH:MM"


framebuf = None  # the board's built-in module, bound by new_buffer() (screens start there)


def new_buffer():
    """(bytearray, FrameBuffer) for one screen; allocate once at start. framebuf is imported
    here, not with the module, so the app's modules import on any CPython; drawing needs
    the board's framebuf, or the host port's stand-in on a PC."""
    global framebuf
    import framebuf

    buf = bytearray(W * H // 8)
    return buf, framebuf.FrameBuffer(buf, W, H, framebuf.MONO_VLSB)


def text_width(font, s):
    w = 0
    for ch in s:
        w += font.get_ch(ch)[2]
    return w


_GLYPH = bytearray(12 * 64)  # the largest glyph (93x63 px): FrameBuffer needs it writable
_GLYPH_MV = memoryview(_GLYPH)


def text(fb, font, s, x, y):
    """Draw s with its top-left at (x, y); returns the x after the last glyph."""
    fmt = framebuf.MONO_HLSB
    for ch in s:
        glyph, h, w = font.get_ch(ch)
        n = len(glyph)
        _GLYPH_MV[:n] = glyph
        fb.blit(framebuf.FrameBuffer(_GLYPH_MV[:n], w, h, fmt), x, y, 0)
        x += w
    return x


def text_right(fb, font, s, right, y):
    return text(fb, font, s, right - text_width(font, s), y)


def invert(buf, x, y, w, h):
    """Swap ink and paper in a rectangle of a MONO_VLSB buffer (inverse video)."""
    x0, y0 = max(0, x), max(0, y)
    x1, y1 = min(W, x + w), min(H, y + h)
    for yy in range(y0, y1):
        base = (yy >> 3) * W
        bit = 1 << (yy & 7)
        for xx in range(x0, x1):
            buf[base + xx] ^= bit


def thick_line(fb, x1, y1, x2, y2, t):
    for d in range(-(t // 2), t - t // 2):
        if abs(x2 - x1) >= abs(y2 - y1):
            fb.line(x1, y1 + d, x2, y2 + d, INK)
        else:
            fb.line(x1 + d, y1, x2 + d, y2, INK)


# Arrow shapes per Nightscout trend number: (dx, dy) of the shaft per unit, repeats.
_ARROWS = {1: (0, -1, 2), 2: (0, -1, 1), 3: (1, -1, 1), 4: (1, 0, 1), 5: (1, 1, 1),
           6: (0, 1, 1), 7: (0, 1, 2)}


def arrow(fb, trend, cx, cy, size):
    """Trend arrow centred on (cx, cy) in a square of side size; '?' when not computable."""
    a = _ARROWS.get(trend)
    if a is None:
        if trend in (8, 9):
            text(fb, font_mid, "?", cx - 6, cy - 11)
        return
    dx, dy, n = a
    r = size // 2
    diag = dx != 0 and dy != 0
    reach = r * 7 // 10 if diag else r
    for k in range(n):
        off = (k * 2 - n + 1) * (r // 2 + 2)  # side by side for double arrows
        ox, oy = cx + (off if dx == 0 else 0), cy
        x1, y1 = ox - dx * reach, oy - dy * reach
        x2, y2 = ox + dx * reach, oy + dy * reach
        thick_line(fb, x1, y1, x2, y2, 4)
        hl = r // 2 + 2
        # head: two strokes back from the tip, at 45 degrees either side of the shaft
        if diag:
            hx1, hy1 = x2 - dx * hl, y2
            hx2, hy2 = x2, y2 - dy * hl
        else:
            hx1, hy1 = x2 - dx * hl - dy * hl, y2 - dy * hl - dx * hl
            hx2, hy2 = x2 - dx * hl + dy * hl, y2 - dy * hl + dx * hl
        thick_line(fb, x2, y2, hx1, hy1, 4)
        thick_line(fb, x2, y2, hx2, hy2, 4)


def _hm(hm):
    return "%02d:%02d" % hm if hm is not None else "--:--"


class View:
    """What the screens show; the app fills it in, the renderer only reads it."""

    def __init__(self):
        self.screen = "night"  # "night", "morning", "status"
        self.unit = units.MGDL
        self.sgv = None  # mg/dL of the latest reading, or a sensor error code (< 39)
        self.trend = 0
        self.delta = None  # mg/dL over 5 minutes
        self.age_min = 0
        self.freshness = FRESH
        self.now_hm = None  # (hour, minute) local
        self.last_hm = None  # local time of the latest reading
        self.alarm = None  # text of the sounding alarm, e.g. "URGENT LOW"
        self.alarm_urgent = False
        self.snoozed_min = 0  # minutes of snooze left
        self.quiet = False
        self.source = ""  # "LAN", "cloud" or ""
        self.battery_pct = -1  # -1 on USB
        self.risk = -1  # predicted-low risk in permille, -1 unknown
        self.summary = None  # dict from the edge (see edge/sync/clock_feed.py)
        self.status = None  # list of (label, value) lines
        self.errors = None  # config errors, sentences


def _value_text(v):
    return units.format_glucose(v.sgv, v.unit)


def _footer(fb, buf, v):
    y = H - 20
    fb.hline(0, y - 2, W, INK)
    if v.alarm:
        s = v.alarm
        if v.snoozed_min > 0:
            s += "  snoozed %d min" % v.snoozed_min
        text(fb, font_small, s, 4, y + 3)
        invert(buf, 0, y, W, 20)  # inverse video: white text on a black band
        return
    parts = []
    if v.source:
        parts.append(v.source)
    if v.quiet:
        parts.append("quiet hours")
    if v.risk >= 0:
        parts.append("low risk %d%%" % ((v.risk + 5) // 10))
    if v.battery_pct >= 0:
        parts.append("battery %d%%" % v.battery_pct)
    text(fb, font_small, "  ".join(parts), 4, y + 3)


def night(fb, buf, v):
    fb.fill(PAPER)
    text_right(fb, font_mid, _hm(v.now_hm), W - 4, 2)
    if v.freshness == NODATA or v.sgv is None:
        text(fb, font_mid, "NO DATA", 8, 18)
        since = "since " + _hm(v.last_hm) if v.last_hm is not None else "no reading yet"
        text(fb, font_mid, since, 8, 50)
        if v.last_hm is not None:
            age = "%d min" % v.age_min
            text(fb, font_mid, age, 8, 80)
            invert(buf, 4, 78, text_width(font_mid, age) + 8, 26)
        _footer(fb, buf, v)
        return
    if v.sgv < units.SGV_MIN_VALID:
        text(fb, font_mid, "SENSOR ERROR", 8, 18)
        text(fb, font_small, _value_text(v), 8, 50)
        text(fb, font_small, "code %d at %s" % (v.sgv, _hm(v.last_hm)), 8, 70)
        _footer(fb, buf, v)
        return
    s = _value_text(v)
    x = text(fb, font_big, s, 4, 8)
    arrow(fb, v.trend, x + 26, 46, 40)
    if v.delta is not None:
        d = v.delta if v.unit == units.MGDL else v.delta / units.MGDL_PER_MMOLL
        if v.unit == units.MGDL:
            ds = "%+d" % int(d + (0.5 if d >= 0 else -0.5))
        else:
            ds = "%+.1f" % d
        text_right(fb, font_mid, ds, W - 4, 40)
    age = "%d min" % v.age_min
    if v.freshness == STALE:
        thick_line(fb, 0, 42, x + 2, 42, 6)  # struck through: not a current value
        text_right(fb, font_mid, age, W - 4, 72)
        wa = text_width(font_mid, age)
        invert(buf, W - wa - 10, 70, wa + 10, 26)
    else:
        text_right(fb, font_small, age + " ago", W - 4, 78)
    _footer(fb, buf, v)


def _curve(fb, pts, x, y, w, h):
    """Mini glucose curve: pts in mg/dL (0 = missing), 40..300 mg/dL over h pixels."""
    fb.rect(x, y, w, h, INK)

    def ypos(g):
        g = 40 if g < 40 else (300 if g > 300 else g)
        return y + h - 2 - (g - 40) * (h - 4) // 260

    for ref in (70, 180):
        yy = ypos(ref)
        for xx in range(x + 1, x + w - 1, 4):
            fb.pixel(xx, yy, INK)
    n = len(pts)
    if n < 2:
        return
    prev = None
    for i in range(n):
        g = pts[i]
        if g <= 0:
            prev = None
            continue
        px = x + 1 + i * (w - 3) // (n - 1)
        py = ypos(g)
        if prev is not None:
            thick_line(fb, prev[0], prev[1], px, py, 2)
        else:
            fb.pixel(px, py, INK)
        prev = (px, py)


def morning(fb, buf, v):
    fb.fill(PAPER)
    s = v.summary or {}
    text(fb, font_mid, "Last night", 4, 2)
    text_right(fb, font_mid, _hm(v.now_hm), W - 4, 2)
    if not s:
        text(fb, font_small, "No summary from the edge node yet.", 4, 40)
        _footer(fb, buf, v)
        return
    sleep = s.get("sleep_min")
    lines = (
        "Asleep  %s" % ("%dh%02d" % (sleep // 60, sleep % 60) if sleep is not None else "-"),
        "Efficiency  %s" % ("%d%%" % s["efficiency_pct"]
                            if s.get("efficiency_pct") is not None else "-"),
        "Lows  %s" % ("%d (%d min)" % (s["lows"], s.get("low_min") or 0)
                      if s.get("lows") is not None else "-"),
        "In range  %s" % ("%d%%" % s["tir_pct"] if s.get("tir_pct") is not None else "-"),
    )
    y = 32
    for ln in lines:
        text(fb, font_small, ln, 4, y)
        y += 17
    _curve(fb, s.get("curve") or [], 140, 30, 152, 72)
    _footer(fb, buf, v)


def clip(font, s, width):
    """s, or as much of it as fits in width pixels followed by "..": a value never runs off
    the panel."""
    if text_width(font, s) <= width:
        return s
    room = width - text_width(font, "..")
    w = 0
    n = 0
    for ch in s:
        w += font.get_ch(ch)[2]
        if w > room:
            break
        n += 1
    return s[:n].rstrip() + ".."


def wrap(font, s, width):
    """Lines of s no wider than width pixels (words kept whole where they fit)."""
    out = []
    line = ""
    for word in s.split(" "):
        cand = word if not line else line + " " + word
        if text_width(font, cand) <= width:
            line = cand
            continue
        if line:
            out.append(line)
        line = word
    if line:
        out.append(line)
    return out


def status(fb, buf, v):
    fb.fill(PAPER)
    text(fb, font_mid, "Setup", 4, 2)
    text_right(fb, font_mid, _hm(v.now_hm), W - 4, 2)
    y = 30
    lines = []
    for e in v.errors or ():
        lines.extend(wrap(font_small, e, W - 8))
    if lines:
        fb.fill_rect(0, 28, W, H - 28, PAPER)
        for ln in lines[:6]:
            text(fb, font_small, ln, 4, y)
            y += 15
        if len(lines) > 6:
            text_right(fb, font_small, "+%d more" % (len(lines) - 6), W - 4, 2 + 24)
        return
    rows = v.status or ()
    step = 16
    if rows and 30 + len(rows) * step > H:
        step = max(font_small.height(), (H - 30) // len(rows))  # seven rows: 14 px apart
    for label, value in rows:
        text(fb, font_small, label, 4, y)
        text(fb, font_small, clip(font_small, value, W - 4 - 96), 96, y)
        y += step


def draw(fb, buf, v):
    if v.screen == "morning":
        morning(fb, buf, v)
    elif v.screen == "status":
        status(fb, buf, v)
    else:
        night(fb, buf, v)
