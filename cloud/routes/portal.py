"""The doctor portal: server-rendered pages and exports of the fused reports.

Sign-in is a form that keeps the access token in an HttpOnly, SameSite=Strict cookie (a
Bearer header works too). A doctor sees the patients who granted them access, a caregiver
their patient, a patient themself; anyone else gets 404, as on the API, so patients cannot
be discovered. Every export (PDF, CSV, JSON) is written to the audit log.
"""

from __future__ import annotations

import time
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from nightlink.cloud import auth, fusion, session
from nightlink.cloud.access import resolve_access
from nightlink.cloud.deps import SettingsDep, StoreDep
from nightlink.cloud.reports import render
from nightlink.cloud.reports import settings as report_settings
from nightlink.cloud.reports.summary import build_report
from nightlink.cloud.routes.fields import night_param
from nightlink.cloud.store import NotFoundError, Store
from nightlink.errors import has_control_chars
from nightlink.webapp.routes import RawBody, form_fields

router = APIRouter(prefix="/portal", tags=["portal"], include_in_schema=False)
COOKIE = session.ACCESS_COOKIE
PORTAL_ROLES = ("patient", "caregiver", "doctor")
EDIT_ROLES = ("patient", "doctor", "admin")
ALERTS_SHOWN = 20


class SignIn(Exception):
    """No valid session: the browser is sent to the sign-in page."""


def _token(request: Request) -> str | None:
    h = request.headers.get("authorization", "")
    if h.lower().startswith("bearer "):
        return h[7:].strip()
    return request.cookies.get(COOKIE)


def portal_user(request: Request, store: StoreDep, settings: SettingsDep) -> dict:
    token = _token(request)
    if not token:
        raise SignIn()
    try:
        claims = auth.decode(token, settings.jwt_secret, "access")
        return auth.token_user(store, claims)
    except (auth.AuthError, NotFoundError, ValueError):
        raise SignIn() from None


PortalUser = Annotated[dict, Depends(portal_user)]


def _access(store: Store, user: dict, tenant: str) -> tuple[str, dict]:
    """(role, tenant row) of the user for a tenant; 404 when they may not see it."""
    access = resolve_access(store, user, tenant)
    if access is None or access.role not in (*PORTAL_ROLES, "admin"):
        raise HTTPException(404, f"No patient {tenant!r}.")
    return access.role, store.get_tenant(tenant)


# The portal's pages run no script and load nothing from elsewhere: their style is inline,
# their charts inline SVG. Should stored text ever slip past the templates' escaping, the
# browser still runs nothing and sends nothing anywhere.
PAGE_POLICY = ("default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
               "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
               "base-uri 'none'")


def html_page(text: str, status: int = 200) -> HTMLResponse:
    """A portal page: never cached, never framed, no script (every portal, sharing and card
    page)."""
    return HTMLResponse(text, status_code=status,
                        headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY",
                                 "Content-Security-Policy": PAGE_POLICY})


def install(app) -> None:
    """Send browsers without a session to the sign-in page."""

    @app.exception_handler(SignIn)
    async def _sign_in(request: Request, exc: SignIn):
        return RedirectResponse("/portal/login", status_code=303)


# -- sign-in ----------------------------------------------------------------------------------


@router.get("/login")
def login_page(settings: SettingsDep):
    """The sign-in form (with a link to sign up where the server takes sign-ups)."""
    return html_page(render.page_html("login.html", pdf=False, user=None, error=None,
                                  signup=settings.signup_enabled))


@router.post("/login")
def login(request: Request, raw: RawBody, store: StoreDep, settings: SettingsDep):
    """Check email and password; keep the access token in a cookie."""
    form = form_fields(raw)
    email, password = form.get("email", "").strip(), form.get("password", "")
    client = request.client.host if request.client else "?"
    key = f"{client}|{email.lower()}"
    if request.app.state.login_limiter.hit(key):
        return html_page(render.page_html("login.html", pdf=False, user=None,
                                      error="Too many sign-in attempts; wait a minute."), 429)
    try:
        user = auth.check_login(store, email, password)
    except auth.AuthError as exc:
        store.audit("login.failed", email=email.lower(), client=client, via="portal")
        return html_page(render.page_html("login.html", pdf=False, user=None, error=str(exc)), 401)
    store.audit("login", actor=user["id"], client=client, via="portal")
    request.app.state.login_limiter.forget(key)
    from nightlink.cloud.routes.app import landing  # the app imports this module

    return start_session(RedirectResponse(landing(store, user), status_code=303), store,
                         settings, user)


def start_session(resp, store: Store, settings, user: dict):
    """Sign the browser in on `resp`: the access token in the portal's cookie, renewed from
    the session's refresh token while the browser keeps the page open (cloud/session.py).
    Path "/": the patient app (/app) signs in with the same cookies."""
    tokens = auth.issue_tokens(store, user["id"], settings.jwt_secret,
                               settings.access_token_minutes, settings.refresh_token_days)
    return session.start(resp, tokens, settings)


@router.post("/logout")
def logout(request: Request, store: StoreDep, settings: SettingsDep):
    """End the browser's session: revoked, its cookies gone."""
    return session.end(RedirectResponse("/portal/login", status_code=303), store, request,
                       settings)


@router.post("/settings/units")
def set_units(request: Request, raw: RawBody, user: PortalUser, store: StoreDep):
    """The signed-in person's glucose units (mg/dL or mmol/L)."""
    form = form_fields(raw)
    try:
        report_settings.set_user_units(store, user["id"], form.get("units", ""))
    except report_settings.SettingsError as exc:
        raise HTTPException(422, str(exc)) from None
    return RedirectResponse(_back(request.headers.get("referer", "")), status_code=303)


def _back(referer: str) -> str:
    """Where a settings form returns to: the page it was on (its path and query on this
    server, whatever host the Referer names), else the patient list."""
    try:
        parts = urlsplit(referer)
    except ValueError:
        return "/portal"
    if not parts.path.startswith(("/portal", "/app")) or has_control_chars(parts.path):
        return "/portal"
    return parts.path + (f"?{parts.query}" if parts.query else "")


# -- pages ------------------------------------------------------------------------------------


@router.get("")
def patients(user: PortalUser, store: StoreDep):
    """The signed-in person's patients with flags."""
    members = [m for m in store.visible_tenants(user)
               if user["is_admin"] or m["role"] in PORTAL_ROLES]
    rows = []
    for m in members:
        data = store.tenant(m["tenant_id"])
        ps = report_settings.patient_settings(data)
        rows.append({**m, "rep": build_report(data, ps, with_insights=False)})
    unit = report_settings.user_units(store, user["id"])
    return html_page(render.page_html("patients.html", pdf=False, user=user, rows=rows, unit=unit,
                                  days=14))


def _report(store: Store, tenant: str, end: str | None, days: int | None) -> dict:
    data = store.tenant(tenant)
    return build_report(data, report_settings.patient_settings(data), end_day=end, days=days)


DaysQ = Annotated[int | None, Query(ge=1, le=report_settings.MAX_REPORT_DAYS)]


@router.get("/p/{tenant}")
def report_page(tenant: str, user: PortalUser, store: StoreDep, end: str | None = None,
                days: DaysQ = None):
    """A patient's multi-day report (14 days unless the patient's settings say otherwise)."""
    role, row = _access(store, user, tenant)
    rep = _report(store, tenant, night_param("end", end), days)
    store.audit("report.view", actor=user["id"], tenant_id=tenant, start=rep["start_day"],
                end=rep["end_day"])
    return html_page(render.report_html(rep, tenant_name=row["name"],
                                    unit=report_settings.user_units(store, user["id"]), user=user,
                                    can_edit=role in EDIT_ROLES, alerts=_open_alerts(store, tenant)))


def _open_alerts(store: Store, tenant: str) -> list[dict]:
    """The tenant's unacknowledged alerts (the pages show the urgent ones at the top)."""
    return store.tenant(tenant).alerts(limit=ALERTS_SHOWN, unacked=True)


@router.post("/p/{tenant}/settings")
def patient_settings(tenant: str, request: Request, raw: RawBody,
                     user: PortalUser, store: StoreDep):
    """Change the patient's time zone, targets preset or report length."""
    role, _row = _access(store, user, tenant)
    if role not in EDIT_ROLES:
        raise HTTPException(403, f"A {role} may read this patient's reports but not change "
                                 "their settings.")
    form = form_fields(raw, blank=True)
    try:
        days = int(form["report_days"]) if form.get("report_days") else None
    except ValueError:
        raise HTTPException(422, "report_days must be a whole number of days.") from None
    data = store.tenant(tenant)
    budget = {}  # left out of the form: unchanged; empty: the model's default
    if "alarm_budget" in form:
        budget["alarm_budget"] = form["alarm_budget"].strip().replace(",", ".") or None
    try:
        report_settings.set_patient_settings(data, tz=form.get("tz") or None,
                                             targets=form.get("targets") or None,
                                             report_days=days, **budget)
    except report_settings.SettingsError as exc:
        raise HTTPException(422, str(exc)) from None
    store.audit("patient.settings", actor=user["id"], tenant_id=tenant,
                **{k: form[k] for k in ("tz", "targets", "report_days", "alarm_budget")
                   if k in form})
    # a new budget or time zone: the family sees its threshold at once, not tomorrow (made
    # by the alert worker's child process, so that this process's polls do not wait)
    from nightlink.cloud import alert_calibration

    now_ms = int(time.time() * 1000)
    worker = getattr(request.app.state, "alert_worker", None)
    if worker is not None:
        worker.calibrate_now(data, now_ms)
    else:
        alert_calibration.recalibrate_if_due(data, now_ms)
    return RedirectResponse(f"/portal/p/{tenant}", status_code=303)


def _export(store: Store, user: dict, tenant: str, kind: str, fmt: str, **detail) -> None:
    store.audit("export", actor=user["id"], tenant_id=tenant, kind=kind, format=fmt, **detail)


def _download(content, media: str, filename: str) -> Response:
    return Response(content, media_type=media, headers={
        "Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"})


@router.get("/p/{tenant}/report.{fmt}")
def report_export(tenant: str, fmt: str, user: PortalUser, store: StoreDep,
                  end: str | None = None, days: DaysQ = None):
    """The report as PDF, CSV (one row per night) or JSON (everything)."""
    if fmt not in ("pdf", "csv", "json"):
        raise HTTPException(404, f"No {fmt!r} export; use pdf, csv or json.")
    _role, row = _access(store, user, tenant)
    rep = _report(store, tenant, night_param("end", end), days)
    name = f"{tenant}-report-{rep['start_day']}-{rep['end_day']}.{fmt}"
    started = time.perf_counter()
    if fmt == "pdf":
        body, pages = render.report_pdf(rep, tenant_name=row["name"],
                                        unit=report_settings.user_units(store, user["id"]))
        media = "application/pdf"
    elif fmt == "csv":
        body, pages, media = render.report_csv(rep), None, "text/csv; charset=utf-8"
    else:
        body, pages, media = render.to_json(rep), None, "application/json"
    _export(store, user, tenant, "report", fmt, start=rep["start_day"], end=rep["end_day"],
            pages=pages, seconds=round(time.perf_counter() - started, 3))
    return _download(body, media, name)


@router.get("/p/{tenant}/nights")
def night_picker(tenant: str, user: PortalUser, store: StoreDep, night: str | None = None):
    """The night page's date field: on to that night's page."""
    _access(store, user, tenant)
    day = night_param("night", night)
    if day is None:
        return RedirectResponse(f"/portal/p/{tenant}", status_code=303)
    return RedirectResponse(f"/portal/p/{tenant}/nights/{day}", status_code=303)


@router.get("/p/{tenant}/nights/{name}")
def night(tenant: str, name: str, user: PortalUser, store: StoreDep):
    """One night's fused view (nights/2026-01-15), or its export (.pdf, .csv, .json)."""
    night_id, _, fmt = name.partition(".")
    night_param("night", night_id, optional=False)
    if fmt not in ("", "pdf", "csv", "json"):
        raise HTTPException(404, f"No {fmt!r} export; use pdf, csv or json.")
    _role, row = _access(store, user, tenant)
    data = store.tenant(tenant)
    ps = report_settings.patient_settings(data)
    doc = report_settings.patient_night(data, ps, night_id)
    nd = report_settings.loaded_night(data, ps, night_id)
    tl = fusion.timeline(nd, doc)
    unit = report_settings.user_units(store, user["id"])
    if fmt == "":
        store.audit("night.view", actor=user["id"], tenant_id=tenant, night=night_id)
        return html_page(render.night_html(doc, tl, tenant=tenant, tenant_name=row["name"],
                                       unit=unit, user=user, alerts=_open_alerts(store, tenant)))
    filename = f"{tenant}-night-{night_id}.{fmt}"
    if fmt == "pdf":
        body, pages = render.night_pdf(doc, tl, tenant=tenant, tenant_name=row["name"], unit=unit)
        media = "application/pdf"
    elif fmt == "csv":
        body, pages, media = render.night_csv(tl), None, "text/csv; charset=utf-8"
    else:
        body, pages, media = render.to_json({**doc, "timeline": tl}), None, "application/json"
    _export(store, user, tenant, "night", fmt, night=night_id, pages=pages)
    return _download(body, media, filename)
