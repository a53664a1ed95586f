"""The patient and family app: an installable web app at /app over the portal's sign-in.

The page is one static shell (`app.html`, the same for everyone, so the service worker can
keep it for offline use); everything personal comes from the JSON routes under `/app/api`,
which take the portal's session cookie (HttpOnly, SameSite=Strict) or a Bearer token. Writes
also need an `Origin` naming this site, so another site cannot make a signed-in browser post
(docs/app.md). Patients and caregivers acknowledge alerts and log treatments; a doctor reads.

Treatments are the tenant's Nightscout treatments, written through the same document rules
as every Nightscout client (`nightscout/documents.py`), with the event types Nightscout's
careportal uses.
"""

from __future__ import annotations

import json
import math
import struct
import time
import zlib
from functools import cache
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import jwt
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, Response

from nightlink.cloud import alerts as alert_rules
from nightlink.cloud import auth
from nightlink.cloud.access import TenantAccess, resolve_access
from nightlink.cloud.deps import SettingsDep, StoreDep
from nightlink.cloud.reports import render
from nightlink.cloud.reports import settings as report_settings
from nightlink.cloud.routes.portal import PortalUser, SignIn, portal_user
from nightlink.nightscout import documents as ns_documents
from nightlink.nightscout.store.collections import between
from nightlink.shared import features, units
from nightlink.shared.epoch import EPOCH_S

router = APIRouter(tags=["app"], include_in_schema=False)
STATIC = Path(__file__).resolve().parent.parent / "app_static"

APP_ROLES = ("patient", "caregiver")  # who lands on the app after signing in
ACT_ROLES = ("patient", "caregiver", "admin")  # who acknowledges alerts and logs treatments
HOURS = (3, 6, 12, 24)
SOCKET_TOKEN_S = 120  # the live socket's token only has to open the socket
FORECAST_FRESH_MIN = units.STALE_MIN  # an older forecast is not shown
TREATMENTS_MAX = 500
READINGS_MAX = 2000  # 24.5 h of 1-minute readings
NOTES_MAX = 500
PAST_LIMIT_H = 48  # a treatment may be logged up to this long after it happened
FUTURE_SLACK_MIN = 15  # clocks differ a little
# Everything from this site only: no inline script or style, no CDN (there is no internet at
# the bedside either); 'self' covers the same-origin WebSocket.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; manifest-src 'self'; worker-src 'self'; frame-ancestors 'none'")
_STATIC_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
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


# -- who is asking ------------------------------------------------------------------------------


def landing(store, user: dict) -> str:
    """Where a person goes after signing in: the app for patients and caregivers, the portal
    for doctors and administrators (both pages link to the other)."""
    if user["is_admin"]:
        return "/portal"
    roles = {m["role"] for m in store.visible_tenants(user)}
    return "/app" if roles & set(APP_ROLES) and "doctor" not in roles else "/portal"


def api_user(request: Request, store: StoreDep, settings: SettingsDep) -> dict:
    """The signed-in person for the JSON routes: 401 (not a redirect) without a session."""
    try:
        return portal_user(request, store, settings)
    except SignIn:
        raise HTTPException(401, "Sign in first.") from None


ApiUser = Annotated[dict, Depends(api_user)]


def same_origin(request: Request) -> None:
    """Refuse a cookie-authenticated write that another site's page may have sent.

    SameSite=Strict already keeps the cookie off cross-site requests; the Origin check is the
    second lock (older browsers, a sibling subdomain). A Bearer token is not sent by browsers
    on their own, so it needs no check.
    """
    if request.headers.get("authorization", "").lower().startswith("bearer "):
        return
    origin = request.headers.get("origin")
    host = request.headers.get("host", "")
    if origin is None:
        if request.headers.get("sec-fetch-site") == "same-origin":
            return
        raise HTTPException(403, "Writes from the app need an Origin header naming this site.")
    if urlsplit(origin).netloc.lower() != host.lower():
        raise HTTPException(403, "Requests from another site are refused.")


SameOrigin = Depends(same_origin)


def _member(store, user: dict, tenant: str) -> TenantAccess:
    access = resolve_access(store, user, tenant)
    if access is None:
        raise HTTPException(404, f"No patient {tenant!r}.")
    return access


def _actor(access: TenantAccess, what: str) -> None:
    if access.role not in ACT_ROLES:
        raise HTTPException(403, f"A {access.role} may see this patient's data but not {what}.")


# -- pages and static files ---------------------------------------------------------------------


def _shell() -> HTMLResponse:
    html = render.page_html("app.html", hours=HOURS, config=json.dumps(_config()))
    return HTMLResponse(html, headers={"Cache-Control": "no-cache", "X-Frame-Options": "DENY",
                                       "Content-Security-Policy": CSP})


def _config() -> dict:
    """What the app's script needs to know, from the one place each rule lives."""
    return {"mgdl_per_mmoll": units.MGDL_PER_MMOLL, "low": units.LOW, "high": units.HIGH,
            "very_low": units.VERY_LOW, "very_high": units.VERY_HIGH,
            "stale_min": units.STALE_MIN, "urgent_stale_min": units.URGENT_STALE_MIN,
            "hours": list(HOURS), "directions": list(units.DIRECTIONS),
            "event_types": list(EVENT_TYPES), "amounts": AMOUNTS, "notes_max": NOTES_MAX}


@router.get("/app")
def app_home(user: PortalUser):
    """The app for the signed-in person's first patient (a chooser when there are several)."""
    return _shell()


@router.get("/app/shell")
def app_shell():
    """The same page without a session check: what the service worker keeps for offline."""
    return _shell()


@router.get("/app/sw.js")
def service_worker():
    """The service worker, served from /app so that it controls every app page."""
    return FileResponse(STATIC / "sw.js", media_type=_STATIC_TYPES[".js"],
                        headers={"Cache-Control": "no-cache", "Service-Worker-Allowed": "/app"})


@router.get("/app/manifest.webmanifest")
def manifest():
    """The web app manifest (install to the home screen)."""
    return FileResponse(STATIC / "manifest.webmanifest",
                        media_type=_STATIC_TYPES[".webmanifest"],
                        headers={"Cache-Control": "no-cache"})


@router.get("/app/static/{name}")
def static_file(name: str):
    """The app's script, style sheet and icons."""
    if name.startswith("icon-") and name.endswith(".png"):
        try:
            size = int(name[5:-4])
        except ValueError:
            size = 0
        if size not in (192, 512):
            raise HTTPException(404, f"No file {name!r}.")
        return Response(icon_png(size), media_type="image/png",
                        headers={"Cache-Control": "public, max-age=86400"})
    path = STATIC / name
    if "/" in name or name.startswith(".") or path.suffix not in _STATIC_TYPES \
            or not path.is_file():
        raise HTTPException(404, f"No file {name!r}.")
    return FileResponse(path, media_type=_STATIC_TYPES[path.suffix],
                        headers={"Cache-Control": "no-cache"})


@router.get("/app/{tenant}")
def app_tenant(tenant: str, user: PortalUser, store: StoreDep):
    """The app for one patient; 404 for a patient the person may not see, as in the portal."""
    _member(store, user, tenant)
    return _shell()


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


# -- JSON: the person -----------------------------------------------------------------------------


@router.get("/app/api/me")
def me(user: ApiUser, store: StoreDep) -> dict:
    """The signed-in person, their glucose unit and the patients they may open."""
    tenants = [{"tenant": m["tenant_id"], "name": m["name"], "role": m["role"]}
               for m in store.visible_tenants(user)]
    return {"email": user["email"], "unit": report_settings.user_units(store, user["id"]),
            "tenants": tenants, "landing": landing(store, user)}


@router.put("/app/api/units", dependencies=[SameOrigin])
async def put_units(request: Request, user: ApiUser, store: StoreDep) -> dict:
    """Change the signed-in person's glucose unit (the portal's setting, shared)."""
    body = await _json_object(request)
    try:
        report_settings.set_user_units(store, user["id"], str(body.get("unit", "")))
    except report_settings.SettingsError as exc:
        raise HTTPException(422, str(exc)) from None
    return {"unit": report_settings.user_units(store, user["id"])}


# -- JSON: one patient ----------------------------------------------------------------------------


@router.get("/app/api/{tenant}/state")
def state(tenant: str, user: ApiUser, store: StoreDep, hours: int = 3) -> dict:
    """Everything the app shows for a patient: readings, unacknowledged alerts (urgent
    first), treatments, and the edge's latest forecast when it is fresh."""
    access = _member(store, user, tenant)
    if hours not in HOURS:
        raise HTTPException(422, f"hours must be one of {', '.join(map(str, HOURS))}, "
                                 f"not {hours}.")
    now_ms = int(time.time() * 1000)
    start_ms = now_ms - hours * 3_600_000
    return {"tenant": tenant, "name": store.get_tenant(tenant)["name"], "role": access.role,
            "can_act": access.role in ACT_ROLES, "now_ms": now_ms, "hours": hours,
            "unit": report_settings.user_units(store, user["id"]),
            "entries": _readings(access, start_ms, now_ms),
            "alerts": _alerts(access), "treatments": _treatments(access, start_ms, now_ms),
            "forecast": _forecast(access, now_ms)}


def _readings(access: TenantAccess, start_ms: int, end_ms: int) -> list[dict]:
    """sgv readings in the window, oldest first, and those of the half hour before it (the
    first reading's delta)."""
    docs = access.data.entries(count=READINGS_MAX, type_="sgv",
                               where=[("date", ">=", start_ms - 1_800_000),
                                      ("date", "<=", end_ms)])
    return [{"date": d["date"], "sgv": d["sgv"], "direction": d.get("direction", "NONE")}
            for d in reversed(docs)
            if isinstance(d.get("sgv"), int | float) and not units.is_sensor_error(d["sgv"])]


def _alerts(access: TenantAccess) -> list[dict]:
    rows = [alert_rules.public(r) for r in access.data.alerts(limit=50, unacked=True)]
    rows.sort(key=lambda a: (a["level"] != alert_rules.URGENT, -a["at_ms"]))
    return rows


def _treatments(access: TenantAccess, start_ms: int, end_ms: int) -> list[dict]:
    rows = access.data.docs.find("treatments", between("treatments", start_ms, end_ms),
                                 count=TREATMENTS_MAX)
    out = []
    for row in reversed(rows):
        doc = row.doc
        out.append({"id": row.oid, "at_ms": row.date_ms, "eventType": doc.get("eventType"),
                    "carbs": doc.get("carbs"), "insulin": doc.get("insulin"),
                    "duration": doc.get("duration"), "notes": doc.get("notes"),
                    "enteredBy": doc.get("enteredBy")})
    return out


def _forecast(access: TenantAccess, now_ms: int) -> dict | None:
    """The newest 30-minute forecast and predicted-low risk the edge computed (its classifier
    outputs, the inference stream), or None when there is none from the last minutes."""
    now_epoch = now_ms // 1000 // EPOCH_S
    first = now_epoch - FORECAST_FRESH_MIN * 60 // EPOCH_S
    rows = access.data.stream_values(features.INFER, first, now_epoch + 2)
    for epoch in sorted(rows, reverse=True):
        vals = rows[epoch]
        if vals.get("forecast30_mgdl") is not None or vals.get("low_risk") is not None:
            return {"at_ms": epoch * EPOCH_S * 1000, "forecast30_mgdl": vals.get("forecast30_mgdl"),
                    "low_risk": vals.get("low_risk")}
    return None


@router.post("/app/api/{tenant}/alerts/{alert_id}/ack", dependencies=[SameOrigin])
def ack(tenant: str, alert_id: int, request: Request, user: ApiUser, store: StoreDep) -> dict:
    """Acknowledge an alert (patients and caregivers); twice changes nothing."""
    access = _member(store, user, tenant)
    _actor(access, "acknowledge its alerts")
    if access.data.alert(alert_id) is None:
        raise HTTPException(404, f"No alert {alert_id}.")
    if access.data.ack_alert(alert_id, user["id"]):
        request.app.state.events.publish(tenant, "alert",
                                         alert_rules.public(access.data.alert(alert_id)))
        store.audit("alert.ack", actor=user["id"], tenant_id=tenant, alert=alert_id, via="app")
    return alert_rules.public(access.data.alert(alert_id))


@router.post("/app/api/{tenant}/treatments", dependencies=[SameOrigin])
async def add_treatment(tenant: str, request: Request, user: ApiUser, store: StoreDep) -> dict:
    """Log carbs, insulin, exercise or a note as a Nightscout treatment of the patient."""
    access = _member(store, user, tenant)  # before the body: a stranger learns nothing
    _actor(access, "log treatments")
    body = await _json_object(request)
    try:
        doc = treatment(body, user["email"], int(time.time() * 1000))
        created, _same = access.data.add_documents("treatments", [doc], mode="keep")
    except (BadInput, ns_documents.DocumentError) as exc:
        raise HTTPException(422, str(exc)) from None
    store.audit("treatment.add", actor=user["id"], tenant_id=tenant, event=doc["eventType"],
                via="app")
    return {"stored": bool(created), "treatment": created[0] if created else doc}


async def _json_object(request: Request) -> dict:
    try:
        body = json.loads(await request.body() or b"null")
    except (ValueError, UnicodeDecodeError):
        raise HTTPException(422, "The body is not JSON.") from None
    if not isinstance(body, dict):
        raise HTTPException(422, "The body must be a JSON object.")
    return body


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
    doc["created_at"] = _when(body.get("at_ms"), now_ms)
    return doc


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
    if not isinstance(value, int | float) or not math.isfinite(value):
        raise BadInput(f"{name} must be a number of {unit}.")
    if not lo <= value <= hi:
        raise BadInput(f"{name} must lie between {lo:g} and {hi:g} {unit}, not {value:g}.")
    return round(float(value), 2) if name == "insulin" else round(float(value), 1)


def _when(value, now_ms: int) -> str:
    """The treatment's time as ISO 8601 UTC: now, or a time (ms) in the last hours."""
    if value is None or value == "":
        at = now_ms
    elif isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value):
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


@router.post("/app/api/{tenant}/live-token", dependencies=[SameOrigin])
def live_token(tenant: str, user: ApiUser, store: StoreDep, settings: SettingsDep) -> dict:
    """A two-minute access token to open the live WebSocket, which takes its token in the
    query (browsers cannot set headers on a WebSocket, and the session cookie is HttpOnly)."""
    _member(store, user, tenant)
    now = int(time.time())
    token = jwt.encode({"sub": str(user["id"]), "typ": "access", "iat": now,
                        "exp": now + SOCKET_TOKEN_S}, settings.jwt_secret,
                       algorithm=auth.ALGORITHM)
    return {"access_token": token, "expires_in": SOCKET_TOKEN_S,
            "url": f"/api/nl/v1/tenants/{tenant}/live"}
