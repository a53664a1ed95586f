"""The patient and family app: an installable web app at /app over the portal's sign-in.

The page is one static shell (`nightlink/webapp/app.html`, the same for everyone, so the
service worker can keep it for offline use; the edge serves the same app on the LAN, see
`nightlink/webapp/__init__.py`); everything personal comes from the JSON routes under `/app/api`,
which take the portal's session cookie (HttpOnly, SameSite=Strict) or a Bearer token. Writes
also need an `Origin` naming this site, so another site cannot make a signed-in browser post
(docs/app.md). Patients and caregivers acknowledge alerts and log treatments; a doctor reads.

Treatments are the tenant's Nightscout treatments, written through the same document rules
as every Nightscout client (`nightscout/documents.py`), with the event types Nightscout's
careportal uses.
"""

from __future__ import annotations

import time
from typing import Annotated
from urllib.parse import urlsplit

import jwt
from fastapi import APIRouter, Depends, HTTPException, Request

from nightlink.cloud import alerts as alert_rules
from nightlink.cloud import auth, push
from nightlink.cloud.access import TenantAccess, may_act, resolve_access
from nightlink.cloud.deps import SettingsDep, StoreDep, require_actor
from nightlink.cloud.reports import settings as report_settings
from nightlink.cloud.routes.fields import RowId
from nightlink.cloud.routes.portal import PortalUser, SignIn, portal_user
from nightlink.nightscout import documents as ns_documents
from nightlink.nightscout.store.collections import between
from nightlink.webapp import (
    HOURS,
    READINGS_BEFORE_MS,
    READINGS_MAX,
    TREATMENTS_MAX,
    BadInput,
    alert_order,
    model_forecast,
    reading_views,
    shell_html,
    treatment,
    treatment_view,
)
from nightlink.webapp import config as app_config
from nightlink.webapp.routes import RawBody, object_from, page, same_origin, static_router

router = APIRouter(tags=["app"], include_in_schema=False)
APP_ROLES = ("patient", "caregiver")  # who lands on the app after signing in
SOCKET_TOKEN_S = 120  # the live socket's token only has to open the socket


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


SameOrigin = Depends(same_origin)


def _member(store, user: dict, tenant: str) -> TenantAccess:
    access = resolve_access(store, user, tenant)
    if access is None:
        raise HTTPException(404, f"No patient {tenant!r}.")
    return access


# -- pages and static files ---------------------------------------------------------------------


def _shell_html() -> str:
    return shell_html(app_config(sign_in="/portal/login", tier="cloud"),
                      sign_out="/portal/logout", portal=True)


def _shell():
    return page(_shell_html())


router.include_router(static_router(_shell_html))  # before /app/{tenant}


@router.get("/app")
def app_home(user: PortalUser):
    """The app for the signed-in person's first patient (a chooser when there are several)."""
    return _shell()


@router.get("/app/{tenant}")
def app_tenant(tenant: str, user: PortalUser, store: StoreDep):
    """The app for one patient; 404 for a patient the person may not see, as in the portal."""
    _member(store, user, tenant)
    return _shell()


# -- JSON: the person -----------------------------------------------------------------------------


@router.get("/app/api/me")
def me(user: ApiUser, store: StoreDep) -> dict:
    """The signed-in person, their glucose unit and the patients they may open."""
    tenants = [{"tenant": m["tenant_id"], "name": m["name"], "role": m["role"]}
               for m in store.visible_tenants(user)]
    # Patients with readings first: a caregiver who also made a space of their own (signing
    # up before accepting an invitation) opens the child's, not their own empty one.
    readings = {t["tenant"]: bool(store.tenant(t["tenant"]).entries(count=1, type_="sgv"))
                for t in tenants} if 1 < len(tenants) <= 20 else {}  # (an admin sees all)
    tenants.sort(key=lambda t: not readings.get(t["tenant"], True))
    return {"email": user["email"], "unit": report_settings.user_units(store, user["id"]),
            "tenants": tenants, "landing": landing(store, user)}


@router.put("/app/api/units", dependencies=[SameOrigin])
def put_units(raw: RawBody, user: ApiUser, store: StoreDep) -> dict:
    """Change the signed-in person's glucose unit (the portal's setting, shared)."""
    body = object_from(raw)
    try:
        report_settings.set_user_units(store, user["id"], str(body.get("unit", "")))
    except report_settings.SettingsError as exc:
        raise HTTPException(422, str(exc)) from None
    return {"unit": report_settings.user_units(store, user["id"])}


# -- JSON: one patient ----------------------------------------------------------------------------


@router.get("/app/api/{tenant}/state")
def state(tenant: str, user: ApiUser, store: StoreDep, hours: int = 3) -> dict:
    """Everything the app shows for a patient: readings, unacknowledged alerts (urgent
    first), treatments, and the clock's model's risk and forecast on the newest readings."""
    access = _member(store, user, tenant)
    if hours not in HOURS:
        raise HTTPException(422, f"hours must be one of {', '.join(map(str, HOURS))}, "
                                 f"not {hours}.")
    now_ms = int(time.time() * 1000)
    start_ms = now_ms - hours * 3_600_000
    entries = _readings(access, start_ms, now_ms)
    return {"tenant": tenant, "name": store.get_tenant(tenant)["name"], "role": access.role,
            "can_act": (acts := may_act(store, access)), "can_ack": acts,
            "now_ms": now_ms, "hours": hours,
            "unit": report_settings.user_units(store, user["id"]),
            "entries": entries,
            "alerts": _alerts(access), "treatments": _treatments(access, start_ms, now_ms),
            "forecast": _forecast(access, entries, now_ms)}


def _readings(access: TenantAccess, start_ms: int, end_ms: int) -> list[dict]:
    """sgv readings in the window, oldest first, and those of the half hour before it (the
    first reading's delta)."""
    docs = access.data.entries(count=READINGS_MAX, type_="sgv",
                               where=[("date", ">=", start_ms - READINGS_BEFORE_MS),
                                      ("date", "<=", end_ms)])
    return reading_views(reversed(docs))


def _alerts(access: TenantAccess) -> list[dict]:
    rows = [alert_rules.public(r) for r in access.data.alerts(limit=50, unacked=True)]
    rows.sort(key=alert_order)
    return rows


def _treatments(access: TenantAccess, start_ms: int, end_ms: int) -> list[dict]:
    rows = access.data.docs.find("treatments", between("treatments", start_ms, end_ms),
                                 count=TREATMENTS_MAX)
    return [treatment_view(row) for row in reversed(rows)]


def _forecast(access: TenantAccess, entries: list[dict], now_ms: int) -> dict | None:
    """The clock's predicted-low model on the newest readings, with the threshold its
    predicted_low alert sounds at (the bedside node's calibrated one when it reported it)."""
    predictor = alert_rules.tenant_predictor(access.data, now_ms)
    return model_forecast(entries, now_ms, predictor.policy, predictor.source,
                          predictor.carbs_ms)


@router.post("/app/api/{tenant}/alerts/{alert_id}/ack", dependencies=[SameOrigin])
def ack(tenant: str, alert_id: RowId, request: Request, raw: RawBody, user: ApiUser,
        store: StoreDep) -> dict:
    """Acknowledge an alert (patients and caregivers); twice changes nothing. The body may
    name the browser's push endpoint ({"endpoint": …}): that browser took its notification
    off itself and is not told that the alert closed (cloud/push.py)."""
    access = _member(store, user, tenant)
    require_actor(store, access, "acknowledge its alerts")
    body = object_from(raw) if raw else {}
    endpoint = body.get("endpoint")
    if not isinstance(endpoint, str) or len(endpoint) > push.MAX_ENDPOINT:
        endpoint = None  # not a browser's: acknowledged all the same
    if access.data.alert(alert_id) is None:
        raise HTTPException(404, f"No alert {alert_id}.")
    alert_rules.acknowledge_one(store, request.app.state.events, tenant, alert_id,
                                user_id=user["id"], via="app", endpoint=endpoint)
    return alert_rules.public(access.data.alert(alert_id))


@router.post("/app/api/{tenant}/treatments", dependencies=[SameOrigin])
def add_treatment(tenant: str, raw: RawBody, user: ApiUser, store: StoreDep) -> dict:
    """Log carbs, insulin, exercise or a note as a Nightscout treatment of the patient."""
    access = _member(store, user, tenant)  # before the body: a stranger learns nothing
    require_actor(store, access, "log treatments")
    body = object_from(raw)
    try:
        doc = treatment(body, user["email"], int(time.time() * 1000))
        created, _same = access.data.add_documents("treatments", [doc], mode="keep")
    except (BadInput, ns_documents.DocumentError) as exc:
        raise HTTPException(422, str(exc)) from None
    store.audit("treatment.add", actor=user["id"], tenant_id=tenant, event=doc["eventType"],
                via="app")
    return {"stored": bool(created), "treatment": created[0] if created else doc}


# -- Web Push (cloud/push.py): alerts on a locked phone ----------------------------------------


def _push_view(sub: dict) -> dict:
    return {"service": urlsplit(sub["endpoint"]).hostname, "since": sub["created_at"],
            "delivered_at": sub["ok_at"], "error": sub["error"], "error_at": sub["error_at"]}


def _pusher(store, user: dict, tenant: str) -> TenantAccess:
    access = _member(store, user, tenant)
    if access.role not in push.PUSH_ROLES:
        raise HTTPException(403, f"A {access.role} does not get this patient's alerts.")
    return access


@router.get("/app/api/{tenant}/push")
def push_state(tenant: str, user: ApiUser, store: StoreDep, settings: SettingsDep) -> dict:
    """Whether this server sends alerts to locked phones (its public key, which a browser
    subscribes with), and the caller's subscribed browsers with their last delivery."""
    _pusher(store, user, tenant)
    key = push.public_key(push.load_key(settings.push_key)) if settings.push_key else None
    return {"key": key,
            "subscriptions": {s["endpoint"]: _push_view(s)
                              for s in store.push_subscriptions(tenant, user["id"])}}


@router.post("/app/api/{tenant}/push", dependencies=[SameOrigin])
def push_subscribe(tenant: str, raw: RawBody, user: ApiUser, store: StoreDep,
                   settings: SettingsDep) -> dict:
    """Subscribe this browser to the tenant's alerts: the body is its PushSubscription's JSON
    ({endpoint, keys: {p256dh, auth}})."""
    _pusher(store, user, tenant)
    if not settings.push_key:
        raise HTTPException(409, "This server sends no alerts to locked phones: its operator "
                                 "has not set NIGHTLINK_PUSH_KEY.")
    endpoint, p256dh, secret = _subscription(object_from(raw), settings)
    store.add_push(tenant, user["id"], endpoint, p256dh, secret)
    store.audit("push.subscribe", actor=user["id"], tenant_id=tenant,
                service=urlsplit(endpoint).hostname)
    return {"subscribed": True, "subscription": _push_view(
        next(s for s in store.push_subscriptions(tenant, user["id"]) if s["endpoint"] == endpoint))}


def _subscription(body: dict, settings) -> tuple[str, str, str]:
    """(endpoint, p256dh, auth) of a PushSubscription's JSON, else 422 saying what is wrong."""
    keys = body.get("keys") if isinstance(body.get("keys"), dict) else {}
    endpoint, p256dh, secret = body.get("endpoint"), keys.get("p256dh"), keys.get("auth")
    why = push.check_subscription(endpoint, p256dh, secret,
                                  https_only=settings.env == "production",
                                  hosts=settings.push_host_list())
    if why:
        raise HTTPException(422, why)
    return endpoint, p256dh, secret


@router.post("/app/api/push/renew", dependencies=[SameOrigin])
def push_renew(raw: RawBody, user: ApiUser, store: StoreDep, settings: SettingsDep) -> dict:
    """The service worker's `pushsubscriptionchange`: the browser's push service replaced
    its subscription; {old_endpoint, endpoint, keys} moves the caller's subscriptions."""
    body = object_from(raw)
    old = body.get("old_endpoint")
    if not isinstance(old, str):
        raise HTTPException(422, "old_endpoint must be the replaced subscription's URL.")
    endpoint, p256dh, secret = _subscription(body, settings)
    return {"renewed": store.renew_push(user["id"], old, endpoint, p256dh, secret)}


@router.post("/app/api/{tenant}/push/remove", dependencies=[SameOrigin])
def push_unsubscribe(tenant: str, raw: RawBody, user: ApiUser, store: StoreDep) -> dict:
    """This browser hears the tenant's alerts no more: {endpoint}."""
    _member(store, user, tenant)
    endpoint = object_from(raw).get("endpoint")
    if not isinstance(endpoint, str):
        raise HTTPException(422, "endpoint must be the subscription's URL.")
    return {"removed": store.remove_push(tenant, endpoint, user["id"])}


@router.post("/app/api/{tenant}/live-token", dependencies=[SameOrigin])
def live_token(tenant: str, user: ApiUser, store: StoreDep, settings: SettingsDep) -> dict:
    """A two-minute access token to open the live WebSocket, which takes its token in the
    query (browsers cannot set headers on a WebSocket, and the session cookie is HttpOnly)."""
    _member(store, user, tenant)
    now = int(time.time())
    token = jwt.encode({"sub": str(user["id"]), "acc": auth.account_mark(user), "typ": "access",
                        "iat": now, "exp": now + SOCKET_TOKEN_S}, settings.jwt_secret,
                       algorithm=auth.ALGORITHM)
    return {"access_token": token, "expires_in": SOCKET_TOKEN_S,
            "url": f"/api/nl/v1/tenants/{tenant}/live"}
