"""The patient and family app's page, files and rules, served by both the cloud and the edge.

One app (`app.js`, `sw.js`, `app.css`, the manifest, the icons and the `app.html` shell) talks
to the same JSON routes under `/app/api` on either server: the cloud's (`cloud/routes/app.py`,
accounts and the portal's sign-in) and the edge's (`edge/node/app_site.py`, the API secret or
a read token on the LAN).
What both must agree on lives here: the shell, the careportal's
event types and their limits, how a careportal form becomes a Nightscout treatment, and the
shape in which the app receives a treatment (over HTTP and live). Framework glue for the
static files is in `nightlink/webapp/routes.py`.
"""

from __future__ import annotations

import html
import json
import math
import re
import struct
import time
import zlib
from functools import cache
from pathlib import Path
from typing import Any

from nightlink.shared import alerts as alert_rules
from nightlink.shared import lowrisk, units

STATIC = Path(__file__).resolve().parent
HOURS = (3, 6, 12, 24)
TREATMENTS_MAX = 500
READINGS_MAX = 2000  # 24.5 h of 1-minute readings
READINGS_BEFORE_MS = 1_800_000  # the half hour before a chart's window: its first delta
NOTES_MAX = 500
PAST_LIMIT_H = 48  # a treatment may be logged up to this long after it happened
FUTURE_SLACK_MIN = 15  # clocks differ a little
# The app makes one for each treatment it queues, so that sending it twice (a retry after a
# lost answer) stores it once: Nightscout's identity rule for treatments (nightscout/documents.py).
IDENTIFIER = re.compile(r"[A-Za-z0-9_-]{8,64}")
# Everything from this site only: no inline script or style, no CDN (there is no internet at
# the bedside either); 'self' covers the same-origin WebSocket.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; manifest-src 'self'; worker-src 'self'; frame-ancestors 'none'")
STATIC_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
                ".svg": "image/svg+xml", ".webmanifest": "application/manifest+json"}

# The careportal's kinds: Nightscout eventType, which amounts it needs (grams of carbs, units
# of insulin, minutes) and which it may carry.
EVENT_TYPES = {
    "Meal Bolus": {"needs_one_of": ("carbs", "insulin"), "fields": ("carbs", "insulin")},
    "Carb Correction": {"needs_one_of": ("carbs",), "fields": ("carbs",)},
    "Correction Bolus": {"needs_one_of": ("insulin",), "fields": ("insulin",)},
    "Exercise": {"needs_one_of": ("duration",), "fields": ("duration",)},
    "Note": {"needs_one_of": ("notes",), "fields": ()},
}
# field: (lowest, highest, unit in sentences)
AMOUNTS = {"carbs": (1, 300, "g"), "insulin": (0.05, 50, "U"), "duration": (1, 600, "min")}


class BadInput(ValueError):
    """A careportal or settings field that cannot be used; the message is one sentence."""


# -- the page -----------------------------------------------------------------------------------


def config(**tier) -> dict:
    """What the app's script needs to know, from the one place each rule lives, and what the
    serving tier adds (`sign_in`: where a 401 sends the person; `tier`: cloud or edge)."""
    return {"mgdl_per_mmoll": units.MGDL_PER_MMOLL, "low": units.LOW, "high": units.HIGH,
            "very_low": units.VERY_LOW, "very_high": units.VERY_HIGH,
            "stale_min": units.STALE_MIN, "urgent_stale_min": units.URGENT_STALE_MIN,
            "hours": list(HOURS), "directions": list(units.DIRECTIONS),
            "event_types": list(EVENT_TYPES), "amounts": AMOUNTS, "notes_max": NOTES_MAX,
            **tier}


def shell_html(settings: dict, *, sign_out: str, portal: bool) -> str:
    """The app's one page (the same for everyone on a server, so the service worker can keep
    it): `settings` from config(); `portal` shows the links to the cloud's portal pages."""
    hours = "".join(f'<button type="button" data-hours="{h}" '
                    f'aria-pressed="{"true" if h == HOURS[0] else "false"}">{h} h</button>'
                    for h in HOURS)
    return (STATIC / "app.html").read_text().format(
        config=html.escape(json.dumps(settings), quote=True), hours=hours,
        sign_out=html.escape(sign_out, quote=True), portal_hidden="" if portal else " hidden")


def static_path(name: str) -> Path | None:
    """The app's file of that name (script, style sheet, SVG icon), or None."""
    path = STATIC / name
    if "/" in name or "\\" in name or name.startswith(".") or path.suffix not in STATIC_TYPES \
            or not path.is_file():
        return None
    return path


# -- treatments ---------------------------------------------------------------------------------


def treatment(body: dict, entered_by: str, now_ms: int) -> dict:
    """The Nightscout treatment for a careportal form; BadInput with one sentence if any
    field cannot be used."""
    kind = body.get("eventType")
    if not isinstance(kind, str) or kind not in EVENT_TYPES:
        raise BadInput(f"eventType must be one of {', '.join(EVENT_TYPES)}.")
    rule = EVENT_TYPES[kind]
    doc: dict[str, Any] = {"eventType": kind, "enteredBy": f"Nightlink app ({entered_by})"}
    for name in ("carbs", "insulin", "duration"):
        value = _amount(name, body.get(name))
        if value is not None and name not in rule["fields"]:
            raise BadInput(f"{_a(kind)} has no {name}.")
        if value is not None:
            doc[name] = value
    notes = body.get("notes")
    if notes is not None and not isinstance(notes, str):
        raise BadInput("notes must be text.")
    notes = (notes or "").strip()
    if len(notes) > NOTES_MAX:
        raise BadInput(f"notes may be at most {NOTES_MAX} characters, not {len(notes)}.")
    if notes:
        doc["notes"] = notes
    if not any(doc.get(name) for name in rule["needs_one_of"]):
        what = " or ".join(_field_words(n) for n in rule["needs_one_of"])
        raise BadInput(f"{_a(kind)} needs {what}.")
    ident = body.get("identifier")
    if ident is not None:
        if not isinstance(ident, str) or not IDENTIFIER.fullmatch(ident):
            raise BadInput("identifier must be 8 to 64 letters, digits, - or _.")
        doc["identifier"] = ident
    doc["created_at"] = _when(body.get("at_ms"), now_ms)
    return doc


def reading_views(entries) -> list[dict]:
    """Nightscout sgv entries as the app's readings, in the order given; a value that is no
    number or a sensor's error code is left out."""
    return [{"date": d["date"], "sgv": d["sgv"], "direction": d.get("direction", "NONE")}
            for d in entries
            if isinstance(d.get("sgv"), int | float) and not units.is_sensor_error(d["sgv"])]


def model_forecast(entries: list[dict], now_ms: int, policy: tuple = lowrisk.DEFAULT_POLICY,
                   policy_from: str = "model", carbs_ms: int | None = None) -> dict | None:
    """The clock's predicted-low model (shared/lowrisk.py) on the newest hour of the app's
    readings (reading_views, oldest first): {"at_ms" (the newest reading's time),
    "forecast30_mgdl", "low_risk" (0-1), "alarm_at" (the policy's threshold, 0-1),
    "alarm_floor_mgdl" (the forecast must be below it too; None: no floor), "policy_from"
    ("edge": the bedside node's calibrated threshold, "cloud": the one the server
    calibrated without a node, "model": the model's own), "sounding"
    (the predicted-low alarm's condition holds now under the whole policy: not in a low, not
    while rising, not just after carbs entered at `carbs_ms`)}; None when the newest reading
    is over 15 minutes old or the hour has too few readings."""
    readings = [(e["date"], e["sgv"]) for e in entries]
    model = lowrisk.LowRisk()
    got = lowrisk.predict_at(model, readings, now_ms)
    if got is None:
        return None
    permille, forecast = got
    sounding = lowrisk.predicted_low(model, readings, now_ms, policy, carbs_ms) is not None
    return {"at_ms": max(t for t, _sgv in readings if t <= now_ms),
            "forecast30_mgdl": forecast if forecast >= 0 else None,
            "low_risk": permille / 1000, "alarm_at": policy[0] / 1000,
            "alarm_floor_mgdl": policy[4] if policy[4] < 400 else None,
            "policy_from": policy_from, "sounding": sounding}


def alert_order(alert: dict) -> tuple:
    """How the app lists alerts: urgent first, then newest first."""
    return (alert["level"] != alert_rules.URGENT, -alert["at_ms"])


def treatment_view(row) -> dict:
    """A stored treatment (a Nightscout document row) as the app shows it, over HTTP and
    live; a deleted one is its id and `deleted`."""
    if not row.valid:
        return {"id": row.oid, "deleted": True}
    doc = row.doc
    return {"id": row.oid, "at_ms": row.date_ms, "eventType": doc.get("eventType"),
            "carbs": doc.get("carbs"), "insulin": doc.get("insulin"),
            "duration": doc.get("duration"), "notes": doc.get("notes"),
            "enteredBy": doc.get("enteredBy")}


def _a(kind: str) -> str:
    return ("An " if kind[0] in "AEIOU" else "A ") + kind


def _field_words(name: str) -> str:
    if name == "notes":
        return "a note"
    lo, hi, unit = AMOUNTS[name]
    return f"{name} ({lo:g}-{hi:g} {unit})"


def _amount(name: str, value) -> float | None:
    if value is None or value == "":
        return None
    lo, hi, unit = AMOUNTS[name]
    if isinstance(value, bool):
        raise BadInput(f"{name} must be a number of {unit}.")
    if isinstance(value, str):
        try:
            value = float(value.strip().replace(",", "."))
        except ValueError:
            raise BadInput(f"{name} must be a number of {unit}, not {value[:20]!r}.") from None
    if not isinstance(value, int | float) or not _finite(value):
        raise BadInput(f"{name} must be a number of {unit}.")
    if not lo <= value <= hi:
        raise BadInput(f"{name} must lie between {lo:g} and {hi:g} {unit}, not {value:g}.")
    return round(float(value), 2) if name == "insulin" else round(float(value), 1)


def _finite(value: int | float) -> bool:
    """Whether a JSON number is a finite float: an integer too long for one (JSON allows a
    1 followed by 400 zeros) is not, rather than an OverflowError."""
    try:
        return math.isfinite(value)
    except (OverflowError, ValueError):
        return False


def _when(value, now_ms: int) -> str:
    """The treatment's time as ISO 8601 UTC: now, or a time (ms) in the last hours."""
    if value is None or value == "":
        at = now_ms
    elif isinstance(value, bool) or not isinstance(value, int | float) or not _finite(value):
        raise BadInput("at_ms must be a time in milliseconds since 1970.")
    else:
        at = int(value)
    if at > now_ms + FUTURE_SLACK_MIN * 60_000:
        raise BadInput("The time of a treatment cannot be in the future.")
    if at < now_ms - PAST_LIMIT_H * 3_600_000:
        raise BadInput(f"A treatment can be logged up to {PAST_LIMIT_H} hours after it "
                       "happened.")
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at / 1000)) \
        + f".{at % 1000:03d}Z"


# -- the icon -------------------------------------------------------------------------------------


@cache
def icon_png(size: int) -> bytes:
    """The app icon as PNG, drawn here (no image files or libraries): a night-blue rounded
    square with a white crescent and a green in-range dot, as in icon.svg. Each shape is
    painted row by row as the span of pixels it covers."""
    night, white, green = b"\x0b\x2f\x57\xff", b"\xff\xff\xff\xff", b"\x3d\xbd\x5d\xff"
    rows = []
    for y in range(size):
        row = bytearray(4 * size)
        for shape, colour in ((_rounded_square, night), (_moon, white), (_bite, night),
                              (_dot, green)):
            span = shape(size, y + 0.5)
            if span is not None:
                lo, hi = max(0, round(span[0])), min(size, round(span[1]))
                if hi > lo:
                    row[4 * lo:4 * hi] = colour * (hi - lo)
        rows.append(b"\x00" + bytes(row))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"".join(rows), 9)) + chunk(b"IEND", b""))


def _disc(cx: float, cy: float, radius: float, y: float) -> tuple[float, float] | None:
    """The x span of a disc on the row at height y, or None."""
    if abs(y - cy) >= radius:
        return None
    half = math.sqrt(radius * radius - (y - cy) ** 2)
    return cx - half, cx + half


def _rounded_square(size: int, y: float) -> tuple[float, float] | None:
    corner = size * 0.18
    inset = max(corner - y, y - (size - corner), 0.0)
    half = math.sqrt(max(corner * corner - inset * inset, 0.0))
    return corner - half, size - corner + half


def _moon(size: int, y: float):
    return _disc(size * 0.44, size * 0.5, size * 0.3, y)


def _bite(size: int, y: float):
    return _disc(size * 0.56, size * 0.42, size * 0.26, y)


def _dot(size: int, y: float):
    return _disc(size * 0.7, size * 0.7, size * 0.07, y)
