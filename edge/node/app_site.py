"""The patient and family app on the bedside node, for phones on the home Wi-Fi when the cloud
or the internet is down: the same page and script as the cloud's (`nightlink/webapp/`), over
the same JSON routes and shapes, from the edge store.

The edge has no accounts. One signs in with what Nightscout clients use: the API secret (it
may log treatments), the node's read token or a read-only access token (they may read). The
sign-in page takes it once and sets an HttpOnly, SameSite=Strict cookie holding a session
signed with a key derived from the API secret. The session names the kind of credential (the
secret, the read token, or an access token's subject by id), never the credential or a hash
of it: a cookie or live token that leaks (a log, a proxy) gives nothing to sign in to the
Nightscout API with. Each request checks the session against the directory as it is now, so a
revoked access token ends the session (and an open live socket); a changed secret changes the
key, which ends every session. Writes also need an Origin naming this site, as on the cloud,
Bearer header or not: the app's routes here authenticate by the cookie alone.

What differs from the cloud: one patient (the node's site); the alerts are the rules of
`shared/alerts.py` holding for the current readings, computed on each request, and end on
their own (nothing to acknowledge on the node); the unit is each browser's own (app.js keeps it
in localStorage), the node's stored one only the default that the API secret may set; the live
socket is fed by the node's hub in this process and rechecks its session as it goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import time
from urllib.parse import parse_qs

import jwt
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, WebSocket
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.websockets import WebSocketDisconnect

from nightlink.edge.store import SITE, EdgeStore
from nightlink.edge.sync.clock_feed import POLICY_PARAMS_META, latest_carbs
from nightlink.nightscout import auth
from nightlink.nightscout import documents as ns_documents
from nightlink.nightscout.hub import Hub
from nightlink.nightscout.store import find_token
from nightlink.nightscout.store.collections import between
from nightlink.shared import alerts as alert_rules
from nightlink.shared import lowrisk, units
from nightlink.shared.apisecret import api_secret_hash
from nightlink.webapp import (
    HOURS,
    READINGS_BEFORE_MS,
    READINGS_MAX,
    TREATMENTS_MAX,
    BadInput,
    alert_order,
    config,
    model_forecast,
    reading_views,
    shell_html,
    treatment,
    treatment_view,
)
from nightlink.webapp.routes import PAGE_HEADERS, json_object, origin_only, page, static_router

COOKIE = "nl_edge"
SESSION_S = 30 * 86400  # a phone on the home Wi-Fi stays signed in for a month
LIVE_TOKEN_S = 120
PING_S = 20.0
SESSION_CHECK_S = 5.0  # an open socket rechecks its session at least this often
REVOKED = 1008  # WebSocket close code: policy violation
ALERT_HISTORY_MIN = 60  # the rules look back at most 20 minutes; an hour is plenty
UNIT_KEY = "app_unit"
WRITE = "api:treatments:create"
_MESSAGES = {
    "urgent_low": "Urgent low: {value:g} mg/dL.",
    "low": "Low: {value:g} mg/dL.",
    "high": "High: {value:g} mg/dL.",
    "rising_fast": "Rising fast: {value:g} mg/dL/min over 15 minutes.",
    # not the forecast: a mean, which runs high before lows (docs/alerts.md)
    "predicted_low": "Low likely within 30 minutes (risk {risk:.0f} %).",
    "stale_data": "No glucose data for {value:.0f} minutes.",
}


class EdgeApp:
    """The app's state on one edge site: the store, the directory that checks credentials,
    the hub and the session key."""

    def __init__(self, store: EdgeStore, directory, hub: Hub, api_secret: str):
        self.store = store
        self.directory = directory
        self.hub = hub
        self.key = auth.derived_secret(api_secret, "nightlink-edge-app")
        # Sign-in attempts on the app's form, counted before the credential is looked at. A
        # right API secret clears the address's count; a right read or access token only
        # takes back its own attempt, so whoever holds the read token cannot reset the count
        # between guesses at the secret.
        self.attempts = auth.FailureLimit()

    # -- credentials ----------------------------------------------------------------------

    def grant(self, presented: str) -> auth.Grant | None:
        """The grant for a credential as a person types it: the API secret in clear (or
        its hash), the read token or an access token."""
        value = auth.normalise_presented(presented)
        if not value:
            return None
        return (self.directory.credential(value, None)
                or self.directory.credential(api_secret_hash(value), None))

    def holder(self, presented: str, grant: auth.Grant) -> dict:
        """Who signed in, as a session keeps it: the credential's kind and, for an access
        token, its subject's id; never the credential or a hash of it."""
        if grant.kind == "secret":
            return {"kind": "secret"}
        value = auth.normalise_presented(presented)
        subject = (find_token(self.store.subjects.db, value)
                   or find_token(self.store.subjects.db, api_secret_hash(value)))
        if subject is None:
            return {"kind": "reader"}  # the node's read token, derived from the secret
        return {"kind": "subject", "sid": subject.id}

    def session(self, holder: dict, seconds: int, typ: str) -> str:
        """A session for `holder` (from holder()), signed with the key derived from the API
        secret."""
        now = int(time.time())
        return jwt.encode({"typ": typ, **holder, "iat": now, "exp": now + seconds},
                          self.key, algorithm="HS256")

    def from_session(self, token: str | None, typ: str) -> tuple[dict, auth.Grant] | None:
        """The session's holder and the grant it has now, None when it has none: a bad or
        expired token, or an access token revoked since."""
        if not token:
            return None
        try:
            claims = jwt.decode(token, self.key, algorithms=["HS256"],
                                options={"require": ["exp", "iat"]})
        except (jwt.PyJWTError, UnicodeError):
            return None
        if claims.get("typ") != typ:
            return None
        holder = {k: claims[k] for k in ("kind", "sid") if k in claims}
        grant = self.current(holder)
        return (holder, grant) if grant is not None else None

    def current(self, holder: dict) -> auth.Grant | None:
        """The grant of a session's holder as the directory stands now. The secret and the
        read token are those of the key that signed the session (a new secret, a new key);
        an access token's subject must not have been revoked."""
        kind = holder.get("kind")
        if kind == "secret":
            return auth.Grant(SITE, "api-secret", auth.Permissions(["*"]), "secret",
                              roles=("admin",))
        if kind == "reader":
            return auth.Grant(SITE, "reader", auth.Permissions.of_roles(["readable"]), "token",
                              roles=("readable",))
        sid = holder.get("sid")
        if kind != "subject" or not isinstance(sid, int) or isinstance(sid, bool):
            return None
        subject = next((s for s in self.store.subjects.list() if s.id == sid), None)
        if subject is None:
            return None
        return auth.Grant(SITE, subject.name, auth.Permissions.of_roles(subject.roles), "token",
                          roles=subject.roles)


def _edge(request: Request) -> EdgeApp:
    return request.app.state.edge_app


def _signed_in(request: Request) -> tuple[dict, auth.Grant]:
    found = _edge(request).from_session(request.cookies.get(COOKIE), "session")
    if found is None or not found[1].allows("api:entries:read"):
        raise HTTPException(401, "Sign in first.")
    return found


def signed_in(request: Request) -> auth.Grant:
    """The session's grant for the JSON routes: 401 (not a redirect) without one."""
    return _signed_in(request)[1]


Signed = Depends(signed_in)
SameOrigin = Depends(origin_only)


def _site(tenant: str) -> None:
    if tenant != SITE:
        raise HTTPException(404, f"No patient {tenant!r}.")


def _who(grant: auth.Grant) -> str:
    if grant.kind == "secret":
        return "API secret"
    return "read token" if grant.subject == "reader" else f"access token ({grant.subject})"


def _unit(store: EdgeStore) -> str:
    unit = store.meta(UNIT_KEY)
    return unit if unit in (units.MGDL, units.MMOLL) else units.MGDL


# -- the data -------------------------------------------------------------------------------------


def readings(store: EdgeStore, start_ms: int, end_ms: int) -> list[dict]:
    """sgv readings from half an hour before the window (the first one's delta), oldest first."""
    return reading_views(store.entries(count=READINGS_MAX, type_="sgv",
                                       date_gte=start_ms - READINGS_BEFORE_MS, date_lte=end_ms,
                                       ascending=True))


def current_alerts(store: EdgeStore, now_ms: int) -> list[dict]:
    """The rules of shared/alerts.py that hold for the readings now, urgent first; each in
    the cloud's public form, with the rule as its id."""
    history = readings(store, now_ms - ALERT_HISTORY_MIN * 60_000, now_ms)
    pairs = alert_rules.valid([(r["date"], r["sgv"]) for r in history])
    if not pairs:  # no reading for an hour: only stale data can hold, timed from the newest
        pairs = alert_rules.valid([(r["date"], r["sgv"]) for r in reversed(
            store.entries(count=100, type_="sgv", date_lte=now_ms))])[-1:]
        if not pairs:  # nothing is stale without a reading (as on the clock)
            return []
    out = []
    policy, _source = clock_policy(store)
    carbs_s = latest_carbs(store, now_ms / 1000)
    risk = 0
    for rule, check in alert_rules.RULE_FUNCTIONS.items():
        if rule != "stale_data" and pairs[-1][0] < now_ms - ALERT_HISTORY_MIN * 60_000:
            continue  # an hour-old reading says nothing about glucose now
        if rule == "predicted_low":  # the clocks' model under their policy, as they sound it
            got = lowrisk.predicted_low(lowrisk.LowRisk(), pairs, now_ms, policy,
                                        None if carbs_s is None else carbs_s * 1000)
            found = None if got is None else (alert_rules.WARNING, got[1])
            risk = 0 if got is None else got[0] / 10
        else:
            found = check(pairs, now_ms)
        if found is None:
            continue
        level, value = found
        at_ms = now_ms if rule == "stale_data" else pairs[-1][0]
        out.append({"id": rule, "rule": rule, "level": level, "at_ms": at_ms,
                    "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at_ms / 1000)),
                    "message": _MESSAGES[rule].format(value=value, risk=risk),
                    "detail": {"value": value},
                    "acked_by": None, "acked_at": None})
    if any(a["rule"] == "urgent_low" for a in out):  # the severer one says it
        out = [a for a in out if a["rule"] not in ("low", "predicted_low")]
    out.sort(key=alert_order)
    return out


def treatments(store: EdgeStore, start_ms: int, end_ms: int) -> list[dict]:
    rows = store.docs.find("treatments", between("treatments", start_ms, end_ms),
                           count=TREATMENTS_MAX)
    return [treatment_view(row) for row in reversed(rows)]


def clock_policy(store: EdgeStore) -> tuple[tuple, str]:
    """The clocks' predicted-low policy (lowrisk.policy_values' tuple) and whose it is: the one
    this node calibrated and sends them ("edge"), once it has, else the model's own."""
    params = None
    with contextlib.suppress(ValueError, TypeError):
        params = json.loads(store.meta(POLICY_PARAMS_META) or "null")
    policy = (lowrisk.policy_values(params, *lowrisk.DEFAULT_POLICY[1:])
              if isinstance(params, dict) else None)
    if policy is None:
        return lowrisk.DEFAULT_POLICY, "model"
    return policy, "model" if params.get("calibrated") is False else "edge"


def forecast(store: EdgeStore, entries: list[dict], now_ms: int) -> dict | None:
    """The clocks' predicted-low model on the newest readings, with the threshold they
    sound at."""
    carbs_s = latest_carbs(store, now_ms / 1000)
    return model_forecast(entries, now_ms, *clock_policy(store),
                          None if carbs_s is None else carbs_s * 1000)


# -- pages -----------------------------------------------------------------------------------------


def _shell_html() -> str:
    return shell_html(config(sign_in="/app/login", tier="edge"), sign_out="/app/logout",
                      portal=False)


def _login_page(message: str = "", status: int = 200) -> HTMLResponse:
    note = (f'<p class="error" role="alert">{html.escape(message)}</p>' if message else "")
    body = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Nightlink on the bedside node: sign in</title>
<link rel="icon" href="/app/static/icon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/app/static/app.css">
</head>
<body>
<header class="top"><span class="brand"><img src="/app/static/icon.svg" alt="" width="28"
height="28"> Nightlink</span></header>
<main id="main">
<section class="card" aria-labelledby="login-h">
<h1 id="login-h">Sign in to the bedside node</h1>
<p class="small">Enter the node's API secret (to see the readings and log treatments) or a
read token (to see them).</p>
<form method="post" action="/app/login" id="login">
<label for="secret">API secret or token</label>
<input id="secret" name="secret" type="password" autocomplete="current-password" required>
{note}
<button type="submit" class="primary">Sign in</button>
</form>
</section>
</main>
</body>
</html>
"""
    return HTMLResponse(body, status_code=status, headers=PAGE_HEADERS)


def router() -> APIRouter:
    routes = APIRouter(tags=["app"], include_in_schema=False)

    @routes.get("/app/login")
    def login_form():
        return _login_page()

    @routes.post("/app/login", dependencies=[SameOrigin])
    async def login(request: Request):
        secret = await _form_secret(request)
        edge = _edge(request)
        failures = request.app.state.nightscout.failures  # the Nightscout API's count
        address = request.client.host if request.client else "unknown"
        wait, stamp = edge.attempts.attempt(address)
        wait = wait or failures.blocked(address)
        if wait:
            return _login_page(f"Too many wrong attempts; try again in {wait:.0f} s.", 429)
        grant = await asyncio.to_thread(edge.grant, secret)
        if grant is None or not grant.allows("api:entries:read"):
            failures.failed(address)
            return _login_page("That is not this node's API secret or a token of it.", 401)
        if grant.kind == "secret":
            edge.attempts.succeeded(address)
        else:
            edge.attempts.forgive(address, stamp)
        holder = await asyncio.to_thread(edge.holder, secret, grant)
        response = RedirectResponse("/app", status_code=303)
        response.set_cookie(COOKIE, edge.session(holder, SESSION_S, "session"),
                            max_age=SESSION_S, httponly=True, samesite="strict", path="/",
                            secure=request.url.scheme == "https")
        return response

    @routes.post("/app/logout")
    def logout():
        response = RedirectResponse("/app/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    routes.include_router(static_router(_shell_html))  # before /app/{tenant}

    @routes.get("/app")
    def app_home(request: Request):
        return _app_page(request, SITE)

    @routes.get("/app/{tenant}")
    def app_tenant(request: Request, tenant: str):
        return _app_page(request, tenant)

    @routes.get("/app/api/me")
    def me(request: Request, grant: auth.Grant = Signed) -> dict:
        edge = _edge(request)
        role = "caregiver" if grant.allows(WRITE) else "reader"
        return {"email": _who(grant), "unit": _unit(edge.store), "landing": "/app",
                "tenants": [{"tenant": SITE, "name": edge.directory.name, "role": role}]}

    @routes.put("/app/api/units", dependencies=[SameOrigin])
    async def put_units(request: Request, grant: auth.Grant = Signed) -> dict:
        """The node's default unit, for browsers that have not chosen their own (app.js
        keeps each browser's choice in localStorage on the edge): the API secret's to set."""
        if not grant.allows(WRITE):
            raise HTTPException(403, "Only the API secret may change the node's unit; the app "
                                     "keeps your choice on this device.")
        body = await json_object(request)
        unit = body.get("unit")
        if unit not in (units.MGDL, units.MMOLL):
            raise HTTPException(422, f"unit must be {units.MGDL} or {units.MMOLL}.")
        store = _edge(request).store
        await asyncio.to_thread(store.set_meta, UNIT_KEY, unit)
        return {"unit": unit}

    @routes.get("/app/api/{tenant}/state")
    def state(tenant: str, request: Request, hours: int = 3, grant: auth.Grant = Signed):
        _site(tenant)
        if hours not in HOURS:
            raise HTTPException(422, f"hours must be one of {', '.join(map(str, HOURS))}, "
                                     f"not {hours}.")
        edge = _edge(request)
        store = edge.store
        now_ms = int(time.time() * 1000)
        start_ms = now_ms - hours * 3_600_000
        can_act = grant.allows(WRITE)
        entries = readings(store, start_ms, now_ms)
        return {"tenant": SITE, "name": edge.directory.name,
                "role": "caregiver" if can_act else "reader", "can_act": can_act,
                "can_ack": False, "now_ms": now_ms, "hours": hours, "unit": _unit(store),
                "entries": entries,
                "alerts": current_alerts(store, now_ms),
                "treatments": treatments(store, start_ms, now_ms),
                "forecast": forecast(store, entries, now_ms)}

    @routes.post("/app/api/{tenant}/alerts/{alert_id}/ack", dependencies=[SameOrigin])
    def ack(tenant: str, alert_id: str, grant: auth.Grant = Signed):
        _site(tenant)
        raise HTTPException(409, "The bedside node's alerts end on their own when the "
                                 "readings do; there is nothing to acknowledge here.")

    @routes.post("/app/api/{tenant}/treatments", dependencies=[SameOrigin])
    async def add_treatment(tenant: str, request: Request, grant: auth.Grant = Signed) -> dict:
        _site(tenant)
        if not grant.allows(WRITE):
            raise HTTPException(403, "A read token may see the data but not log treatments.")
        body = await json_object(request)
        store = _edge(request).store
        try:
            doc = treatment(body, _who(grant), int(time.time() * 1000))
            normalized = ns_documents.normalize("treatments", doc, int(time.time() * 1000))
        except (BadInput, ns_documents.DocumentError) as exc:
            raise HTTPException(422, str(exc)) from None
        outcomes = await asyncio.to_thread(store.docs.put, [normalized], mode="keep")
        created = [o.row.v1() for o in outcomes if o.action == "created"]
        return {"stored": bool(created), "treatment": created[0] if created else doc}

    @routes.post("/app/api/{tenant}/live-token", dependencies=[SameOrigin])
    def live_token(tenant: str, request: Request) -> dict:
        holder, _grant = _signed_in(request)
        _site(tenant)
        token = _edge(request).session(holder, LIVE_TOKEN_S, "live")
        return {"access_token": token, "expires_in": LIVE_TOKEN_S,
                "url": f"/app/api/{SITE}/live"}

    @routes.websocket("/app/api/{tenant}/live")
    async def live(websocket: WebSocket, tenant: str) -> None:
        await websocket.accept()
        edge = websocket.app.state.edge_app
        found = await asyncio.to_thread(  # an access token's subject is read from the store
            edge.from_session, websocket.query_params.get("access_token"), "live")
        if found is None:
            await websocket.close(4401, "Pass a live token as ?access_token=.")
            return
        if tenant != SITE:
            await websocket.close(4404, f"No tenant {tenant!r}.")
            return
        await _feed(websocket, edge, found[0])

    return routes


async def _form_secret(request: Request) -> str:
    """The sign-in form's one field (URL-encoded; no multipart parser on the node); text
    that cannot be a credential comes back empty and is refused like a wrong one."""
    body = await request.body()
    if len(body) > 4096:
        return ""
    try:
        values = parse_qs(body.decode("ascii"), max_num_fields=4).get("secret", [""])
    except (UnicodeDecodeError, ValueError):
        return ""
    return values[0][:200]


def _app_page(request: Request, tenant: str):
    """The shell after a session check: the sign-in page without one."""
    if _edge(request).from_session(request.cookies.get(COOKIE), "session") is None:
        return RedirectResponse("/app/login", status_code=303)
    _site(tenant)
    return page(_shell_html())


async def _feed(ws: WebSocket, edge: EdgeApp, holder: dict) -> None:
    """The hello, then entries, treatments and the alerts after each reading, as the node's
    hub publishes them; a ping every PING_S. Before each message, and at least every
    SESSION_CHECK_S, the session is checked again: a revoked access token closes the socket
    (1008). One hub subscription per socket: a household has a few phones, not thousands."""
    queue = edge.hub.subscribe(SITE)
    await edge.hub.follow(SITE)  # writes by another process (an import) too
    now_ms = int(time.time() * 1000)
    latest = await asyncio.to_thread(edge.store.entries, 1, "sgv")
    alerts = await asyncio.to_thread(current_alerts, edge.store, now_ms)
    reader = asyncio.get_running_loop().create_task(_until_closed(ws))
    try:
        await ws.send_json({"type": "hello", "data": {
            "tenant": SITE, "role": "reader", "entry": latest[0] if latest else None,
            "alerts": alerts, "server_time_ms": now_ms}})
        quiet_since = time.monotonic()
        while not reader.done():
            try:
                msg = await asyncio.wait_for(queue.get(), min(PING_S, SESSION_CHECK_S))
            except TimeoutError:
                msg = None
            if await asyncio.to_thread(edge.current, holder) is None:
                await ws.close(REVOKED, "The credential of this session was revoked.")
                return
            if msg is None:
                if time.monotonic() - quiet_since >= PING_S:
                    quiet_since = time.monotonic()
                    await ws.send_json({"type": "ping",
                                        "data": {"server_time_ms": int(time.time() * 1000)}})
                continue
            for out in await _messages(edge, msg):
                await ws.send_json(out)
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass  # the phone went away
    finally:
        reader.cancel()
        edge.hub.unsubscribe(SITE, queue)


async def _messages(edge: EdgeApp, msg: dict) -> list[dict]:
    kind, data = msg.get("type"), msg.get("data")
    if kind == "entry":
        alerts = await asyncio.to_thread(current_alerts, edge.store, int(time.time() * 1000))
        return [{"type": "entry", "data": data}, {"type": "alerts", "data": alerts}]
    if kind == "change" and data["coll"] == "treatments":
        return [{"type": "treatment", "data": treatment_view(row)} for row in data["rows"]]
    return []


async def _until_closed(ws: WebSocket) -> None:
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        while True:
            if (await ws.receive())["type"] == "websocket.disconnect":
                return


def install(app: FastAPI, store: EdgeStore, directory, hub: Hub, api_secret: str) -> None:
    """Serve the app at /app on the edge's site."""
    app.state.edge_app = EdgeApp(store, directory, hub, api_secret)
    app.include_router(router())
