"""Sign-up and sharing: a person creates their own account and tenant, proves their address,
and invites family or a doctor with a link or a code, choosing whether the invited person
only reads or also takes part in alerts; invitations can be withdrawn before use and access
revoked after (tenants.py). Every step is written to the audit log.

An invitation code is 8 characters from an alphabet without look-alikes (about 40 bits),
kept only as a hash, spent once, and valid for NIGHTLINK_INVITE_DAYS; wrong codes count
against the person's sign-in rate limit, so codes cannot be guessed by trying.
"""

from __future__ import annotations

import functools
import re
import secrets
import time
from typing import Literal

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from nightlink.cloud import auth, mail
from nightlink.cloud.deps import ERRORS, CurrentUser, SettingsDep, StoreDep, WriterAccess
from nightlink.cloud.routes import credentials, portal
from nightlink.cloud.routes.accounts import AccountPublic, account_public
from nightlink.cloud.routes.fields import EMAIL, NAME_MAX, ROW_ID_MAX, Name, RowId
from nightlink.cloud.store import ConflictError
from nightlink.errors import has_control_chars
from nightlink.webapp.routes import RawBody, form_fields

router = APIRouter(prefix="/api/nl/v1", tags=["sharing"], responses=ERRORS)

CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I/L
CODE_LENGTH = 8
VERIFY_HOURS = 48
_NOT_A_CODE = re.compile(r"[^A-Z0-9]")


class SignUp(BaseModel):
    email: str = Field(pattern=EMAIL, max_length=254)
    password: str = Field(min_length=12, max_length=1024)
    name: Name = ""
    tenant_name: str = Field("", max_length=NAME_MAX, description="Shown to those you share with; "
                             "your name by default.")
    tz: str = Field("", max_length=64, description="The person's IANA time zone (their nights "
                    "and days in reports and alarm calibration); UTC until set.")


class SignedUp(BaseModel):
    account: AccountPublic
    tenant_id: str
    verification_sent: bool
    message: str


class Verify(BaseModel):
    token: str = Field(min_length=8, max_length=200)


class InviteCreate(BaseModel):
    role: Literal["caregiver", "doctor"]
    alerts: bool = Field(True, description="False: the invited person reads the data but "
                         "takes no part in alerts (cannot acknowledge them).")
    email: str | None = Field(None, pattern=EMAIL, max_length=254,
                              description="Also mail the link to this address.")
    days: int | None = Field(None, ge=1, le=90, description="How long the invitation holds.")


class InvitePublic(BaseModel):
    id: int
    role: str
    alerts: bool
    email: str
    created_at: float
    expires_at: float


class InviteCreated(InvitePublic):
    code: str = Field(description="Shown once; the invited person types it or opens the link.")
    link: str
    mailed: bool


class InviteAccept(BaseModel):
    code: str = Field(min_length=4, max_length=40)


class Joined(BaseModel):
    tenant_id: str
    name: str = Field("", description="Whose data it is: the space's name.")
    role: str
    alerts: bool


def new_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def normalise_code(text: str) -> str:
    """What a person types ("abcd-efgh", "ABCD EFGH") as the stored form ("ABCDEFGH")."""
    return _NOT_A_CODE.sub("", text.upper())


def show_code(code: str) -> str:
    return f"{code[:4]}-{code[4:]}"


def _tenant_slug(email: str) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", email.split("@")[0].lower()).strip("-_")[:20] or "me"
    return f"{base}-{secrets.token_hex(3)}"


def _rate(request: Request, key: str) -> None:
    wait = request.app.state.login_limiter.hit(key)
    if wait:
        raise HTTPException(429, "Too many attempts; wait a minute.",
                            headers={"Retry-After": str(int(wait) + 1)})


def _send_verification(settings, store, user: dict) -> bool:
    token = secrets.token_urlsafe(32)
    store.add_email_token(token, user["id"], "verify", VERIFY_HOURS * 3600)
    link = f"{settings.public_base_url.rstrip('/')}/portal/verify?token={token}"
    body = (f"Hello {user['name'] or user['email']},\n\n"
            f"open this link within {VERIFY_HOURS} hours to confirm this address for your "
            f"Nightlink account:\n\n{link}\n\nIf you did not sign up, ignore this message.\n")
    try:
        mail.send(settings, user["email"], "Confirm your Nightlink address", body)
    except mail.MailError:
        return False
    return True


@router.post("/signup", status_code=201, response_model=SignedUp)
def sign_up(body: SignUp, request: Request, store: StoreDep, settings: SettingsDep):
    """Create an account with its own tenant, where it is the patient.

    The account works at once; a link sent to the address confirms it (needed before
    sharing the tenant)."""
    if not settings.signup_enabled:
        raise HTTPException(403, "This server does not take sign-ups; ask its operator for an "
                            "account.")
    client = request.client.host if request.client else "?"
    if request.app.state.signup_limiter.hit(client):
        raise HTTPException(429, "Too many sign-ups from this address; try again later.",
                            headers={"Retry-After": "3600"})
    space = _space_name(body.tenant_name) if body.tenant_name.strip() else ""
    from nightlink.cloud.reports import settings as report_settings

    try:
        zone = report_settings.zone(body.tz.strip()).key if body.tz.strip() else ""
    except report_settings.SettingsError as exc:
        raise HTTPException(422, str(exc)) from None
    password_hash = auth.hash_password(body.password)
    for _attempt in range(3):
        tenant_id = _tenant_slug(body.email)
        try:
            with store.transaction():
                user = store.create_user(body.email, password_hash, name=body.name,
                                         verified=False)
                store.create_tenant(tenant_id, space or body.name or body.email)
                store.grant(tenant_id, user["id"], "patient", by=user["id"])
                store.audit("account.signup", actor=user["id"], tenant_id=tenant_id,
                            email=user["email"])
            break
        except ConflictError as exc:
            if "account" in str(exc):
                raise
    else:
        raise HTTPException(503, "No free tenant name was found; try again.")
    if zone:
        report_settings.set_patient_settings(store.tenant(tenant_id), tz=zone)
    sent = _send_verification(settings, store, user)
    message = (f"Account created. A confirmation link was sent to {user['email']}." if sent
               else "Account created, but the confirmation mail could not be sent; sign in and "
                    "ask for a new link on your sharing page.")
    return SignedUp(account=account_public(user), tenant_id=tenant_id, verification_sent=sent,
                    message=message)


@router.post("/verify", status_code=204)
def verify(body: Verify, request: Request, store: StoreDep):
    """Confirm an address with the token from the mailed link."""
    client = request.client.host if request.client else "?"
    _rate(request, f"verify|{client}")
    user_id = store.use_email_token(body.token, "verify")
    if user_id is None:
        raise HTTPException(400, "This confirmation link is not valid: it is unknown, used or "
                            "older than 48 hours.")
    store.set_user(user_id, verified_at=time.time())
    store.audit("account.verify", actor=user_id)


@router.post("/accounts/me/verification", status_code=202)
def resend_verification(request: Request, user: CurrentUser, store: StoreDep,
                        settings: SettingsDep) -> dict:
    """Send the confirmation link again."""
    if user.get("verified_at"):
        raise HTTPException(409, "This address is already confirmed.")
    _rate(request, f"verify-mail|{user['id']}")
    if not _send_verification(settings, store, user):
        raise HTTPException(503, "The confirmation mail could not be sent; try again later.")
    return {"detail": f"A confirmation link was sent to {user['email']}."}


def _invite_public(row: dict) -> dict:
    return {"id": row["id"], "role": row["role"], "alerts": bool(row["alerts"]),
            "email": row["email"], "created_at": row["created_at"],
            "expires_at": row["expires_at"]}


@router.post("/tenants/{tenant}/invites", status_code=201, response_model=InviteCreated)
def create_invite(body: InviteCreate, access: WriterAccess, store: StoreDep,
                  settings: SettingsDep):
    """Invite a caregiver or a doctor: a code and a link, shown once.

    The link is also mailed when an address is given. A patient must have confirmed their
    own address first."""
    user = access.user
    if access.role != "admin" and not user.get("verified_at"):
        raise HTTPException(403, "Confirm your address first (the link mailed at sign-up) "
                            "before sharing your data.")
    code = new_code()
    days = body.days or settings.invite_days
    row = store.create_invite(access.tenant_id, code, body.role, alerts=body.alerts,
                              email=body.email or "", by=user["id"], ttl_s=days * 86400)
    link = f"{settings.public_base_url.rstrip('/')}/portal/invite/{code}"
    store.audit("invite.create", actor=user["id"], tenant_id=access.tenant_id,
                invite_id=row["id"], role=body.role, alerts=body.alerts, email=body.email or "")
    mailed = False
    if body.email:
        name = user["name"] or user["email"]
        # whose data: the space's name (a parent invites to follow their child's), else theirs
        space = store.get_tenant(access.tenant_id)["name"]
        whose = f"{space}'s" if space and space.casefold() != name.casefold() else "their"
        text = (f"{name} invites you to follow {whose} Nightlink data as a {body.role}"
                f"{' (with alerts)' if body.alerts else ' (read only)'}.\n\n"
                f"Open {link}\nor enter the code {show_code(code)} after signing in.\n"
                f"The invitation holds for {days} days.\n")
        try:
            mail.send(settings, body.email, f"{name} shares {whose} Nightlink data with you",
                      text)
            mailed = True
        except mail.MailError:
            mailed = False
    return InviteCreated(**_invite_public(row), code=show_code(code), link=link, mailed=mailed)


@router.get("/tenants/{tenant}/invites", response_model=list[InvitePublic])
def list_invites(access: WriterAccess, store: StoreDep):
    """Invitations not yet used, withdrawn or expired (their codes are not kept)."""
    return [_invite_public(r) for r in store.invites(access.tenant_id)]


@router.delete("/tenants/{tenant}/invites/{invite_id}", status_code=204)
def withdraw_invite(invite_id: RowId, access: WriterAccess, store: StoreDep):
    """Withdraw an invitation before it is used."""
    if not store.revoke_invite(access.tenant_id, invite_id):
        raise HTTPException(404, f"No open invitation {invite_id}.")
    store.audit("invite.revoke", actor=access.user["id"], tenant_id=access.tenant_id,
                invite_id=invite_id)


@router.post("/invites/accept", response_model=Joined)
def accept_invite(body: InviteAccept, request: Request, user: CurrentUser, store: StoreDep):
    """Join a tenant with an invitation code (or the code from the link)."""
    return join(request, store, user, body.code)


def join(request: Request, store, user: dict, typed: str) -> Joined:
    """Spend an invitation for the user and grant what it names; HTTPException if it cannot."""
    _rate(request, f"invite|{user['id']}")
    with store.transaction():
        return _join(store, user, typed)


def join_new(request: Request, store, settings, body: SignUp, typed: str) -> tuple[dict, Joined]:
    """An account made to accept an invitation (someone invited who has none): created with
    the invitation spent, in one transaction, so a wrong code makes no account; no space of
    its own (it follows the inviter's). Sign-ups closed on the server do not stop it: the
    invitation is the patient's leave. The address is confirmed by the link mailed."""
    client = request.client.host if request.client else "?"
    if request.app.state.signup_limiter.hit(client):
        raise HTTPException(429, "Too many sign-ups from this address; try again later.",
                            headers={"Retry-After": "3600"})
    password_hash = auth.hash_password(body.password)
    with store.transaction():
        try:
            user = store.create_user(body.email, password_hash, name=body.name, verified=False)
        except ConflictError:
            raise HTTPException(409, "There is an account with this address already: sign in "
                                "with it to accept.") from None
        store.audit("account.signup", actor=user["id"], email=user["email"], invited=True)
        joined = _join(store, user, typed)
    _send_verification(settings, store, user)
    return user, joined


def _join(store, user: dict, typed: str) -> Joined:
    """join's work, inside the caller's transaction."""
    code = normalise_code(typed)
    row = store.take_invite(code, user["id"]) if len(code) == CODE_LENGTH else None
    if row is None:
        raise HTTPException(404, "This invitation code is not valid: it is unknown, used, "
                            "withdrawn or expired.")
    current = store.role(row["tenant_id"], user["id"])
    if current in ("patient", "admin"):
        raise HTTPException(409, f"You are already this tenant's {current}.")
    store.grant(row["tenant_id"], user["id"], row["role"], by=row["created_by"],
                alerts=bool(row["alerts"]))
    store.audit("invite.accept", actor=user["id"], tenant_id=row["tenant_id"],
                invite_id=row["id"], role=row["role"], alerts=bool(row["alerts"]))
    return Joined(tenant_id=row["tenant_id"], name=store.get_tenant(row["tenant_id"])["name"],
                  role=row["role"], alerts=bool(row["alerts"]))


# -- the pages the mailed links open ---------------------------------------------------------

pages = APIRouter(prefix="/portal", tags=["portal"], include_in_schema=False)


def _page(name: str, status: int = 200, **context) -> HTMLResponse:
    from nightlink.cloud.reports import render

    context.setdefault("user", None)
    return portal.html_page(render.page_html(name, pdf=False, **context), status)


@functools.cache
def _zones() -> tuple[str, ...]:
    """The IANA zones this server knows, for the sign-up form's suggestions (read from the
    zone database once, not at every page)."""
    from zoneinfo import available_timezones

    return tuple(sorted(z for z in available_timezones()
                        if "/" in z and not z.startswith("Etc/")))


@pages.get("/signup")
def signup_page(settings: SettingsDep):
    """The sign-up form (404 where the server takes no sign-ups)."""
    if not settings.signup_enabled:
        raise HTTPException(404, "This server does not take sign-ups.")
    return _page("signup.html", form={}, error=None, done=None, zones=_zones())


@pages.post("/signup")
def signup_form(request: Request, raw: RawBody, store: StoreDep, settings: SettingsDep):
    form = form_fields(raw)
    shown = {"name": form.get("name", "")[:100], "email": form.get("email", "")[:254],
             "tenant_name": form.get("tenant_name", "")[:100], "tz": form.get("tz", "")[:64]}
    try:
        body = SignUp(email=form.get("email", ""), password=form.get("password", ""),
                      name=form.get("name", ""), tenant_name=form.get("tenant_name", ""),
                      tz=form.get("tz", ""))
        got = sign_up(body, request, store, settings)
    except HTTPException as exc:
        return _page("signup.html", exc.status_code, form=shown, error=exc.detail, done=None,
                     zones=_zones())
    except ConflictError as exc:
        return _page("signup.html", 409, form=shown, error=str(exc), done=None, zones=_zones())
    except ValueError as exc:  # pydantic's ValidationError is one
        return _page("signup.html", 422, form=shown, error=_first_error(exc), done=None,
                     zones=_zones())
    return _page("signup.html", 201, form=shown, error=None, done=got.message)


@pages.get("/verify")
def verify_page(token: str = ""):
    """A button that confirms the address (a GET does not: mail scanners open links)."""
    return _page("verify.html", token=token[:200], done=False, error=None)


@pages.post("/verify")
def verify_form(request: Request, raw: RawBody, store: StoreDep):
    form = form_fields(raw)
    try:
        verify(Verify(token=form.get("token", "")[:200] or "-" * 8), request, store)
    except HTTPException as exc:
        return _page("verify.html", exc.status_code, token="", done=False, error=exc.detail)
    except ValueError:
        return _page("verify.html", 400, token="", done=False,
                     error="This confirmation link is not valid.")
    return _page("verify.html", token="", done=True, error=None)


@pages.get("/invite/{code}")
def invite_page(code: str, request: Request, store: StoreDep, settings: SettingsDep):
    """The invitation: accept as the signed-in person, or sign in here and accept."""
    return _page("invite.html", code=show_code(normalise_code(code)[:CODE_LENGTH]),
                 user=_session_user(request, store, settings), error=None, joined=None)


@pages.post("/invite/{code}")
def invite_form(code: str, request: Request, raw: RawBody, store: StoreDep, settings: SettingsDep):
    from nightlink.cloud.routes.portal import start_session

    form = form_fields(raw)
    shown = show_code(normalise_code(code)[:CODE_LENGTH])
    user = _session_user(request, store, settings)
    fresh = user is None
    try:
        if fresh:
            client = request.client.host if request.client else "?"
            email = form.get("email", "").strip()
            if request.app.state.login_limiter.hit(f"{client}|{email.lower()}"):
                raise HTTPException(429, "Too many sign-in attempts; wait a minute.")
            try:
                user = auth.check_login(store, email, form.get("password", ""))
            except auth.AuthError as exc:
                raise HTTPException(401, str(exc)) from None
            request.app.state.login_limiter.forget(f"{client}|{email.lower()}")
        joined = join(request, store, user, code)
    except HTTPException as exc:
        return _page("invite.html", exc.status_code, code=shown, user=None if fresh else user,
                     error=exc.detail, joined=None)
    resp = _page("invite.html", code=shown, user=user, error=None, joined=joined)
    return start_session(resp, store, settings, user) if fresh else resp


@pages.post("/invite/{code}/new")
def invite_new_account(code: str, request: Request, raw: RawBody,
                       store: StoreDep, settings: SettingsDep):
    """Someone invited who has no account: make one and accept, then sign them in."""
    from nightlink.cloud.routes.portal import start_session

    form = form_fields(raw)
    shown = show_code(normalise_code(code)[:CODE_LENGTH])
    typed = {"name": form.get("name", "")[:100], "email": form.get("email", "")[:254]}
    try:
        body = SignUp(email=form.get("email", ""), password=form.get("password", ""),
                      name=form.get("name", ""))
        user, joined = join_new(request, store, settings, body, code)
    except HTTPException as exc:
        return _page("invite.html", exc.status_code, code=shown, error=exc.detail,
                     joined=None, new=typed)
    except ValueError as exc:  # pydantic's ValidationError is one
        return _page("invite.html", 422, code=shown, error=_first_error(exc), joined=None,
                     new=typed)
    resp = _page("invite.html", code=shown, user=user, error=None, joined=joined)
    return start_session(resp, store, settings, user)


def _session_user(request: Request, store, settings) -> dict | None:
    from nightlink.cloud.routes.portal import SignIn, portal_user

    try:
        return portal_user(request, store, settings)
    except SignIn:
        return None


@pages.get("/p/{tenant}/sharing")
def sharing_page(tenant: str, request: Request, store: StoreDep, settings: SettingsDep):
    """Who follows this patient, the open invitations, and a form for a new one."""
    user, access = _owner(request, store, settings, tenant)
    return _sharing(store, access, user, created=None, error=None,
                    site=_site_url(request, tenant))


@pages.post("/p/{tenant}/sharing")
def sharing_form(tenant: str, request: Request, raw: RawBody,
                 store: StoreDep, settings: SettingsDep):
    """The page's three buttons: invite, withdraw an invitation, end someone's access."""
    from nightlink.cloud.routes import tenants as tenant_routes

    user, access = _owner(request, store, settings, tenant)
    form = form_fields(raw)
    created, status, error, notice, uploader, reader = None, 200, None, None, None, None
    try:
        if form.get("action") == "invite":
            body = InviteCreate(role=form.get("role", ""), alerts=form.get("alerts") == "yes",
                                email=form.get("email") or None)
            created = create_invite(body, access, store, settings)
        elif form.get("action") == "withdraw":
            withdraw_invite(_int(form.get("invite")), access, store)
        elif form.get("action") == "revoke":
            tenant_routes.revoke(_int(form.get("user")), access, store)
        elif form.get("action") == "uploader":
            uploader = _new_uploader_secret(request, store, access, user)
        elif form.get("action") == "token":
            reader = _new_token(request, store, access, form)
        elif form.get("action") == "revoke-token":
            if not credentials.revoke_token(store, access, _int(form.get("token")),
                                            via="sharing page"):
                raise HTTPException(404, "That access token was already revoked.")
            notice = "The access token was revoked: what used it can no longer read."
        elif form.get("action") == "rename":
            name = _space_name(form.get("name", ""))
            store.set_tenant(access.tenant_id, name=name)
            store.audit("tenant.rename", actor=user["id"], tenant_id=access.tenant_id, name=name)
            notice = f"This space is now called {name}."
        elif form.get("action") == "units":
            unit = {"mg/dl": "mg/dl", "mmol": "mmol", "mmol/l": "mmol"}.get(
                form.get("units", "").strip().lower())
            if unit is None:
                raise HTTPException(422, "Units must be mg/dL or mmol/L.")
            store.set_tenant(access.tenant_id, units=unit)
            store.audit("tenant.units", actor=user["id"], tenant_id=access.tenant_id, units=unit)
            notice = ("Its Nightscout address now reports "
                      f"{'mmol/L' if unit == 'mmol' else 'mg/dL'} to clocks and followers.")
        elif form.get("action") == "resend" and not user.get("verified_at"):
            _rate(request, f"verify-mail|{user['id']}")
            if not _send_verification(settings, store, user):
                raise HTTPException(503, "The confirmation mail could not be sent; try again "
                                    "later.")
            notice = f"A new confirmation link was sent to {user['email']}."
        else:
            raise HTTPException(400, "The form did not say what to do.")
    except HTTPException as exc:
        status, error = exc.status_code, exc.detail
    except ValueError as exc:  # pydantic's ValidationError is one
        status, error = 422, _first_error(exc)
    return _sharing(store, access, user, created=created, error=error, status=status,
                    notice=notice, uploader=uploader, reader=reader,
                    site=_site_url(request, tenant))


def _space_name(typed: str) -> str:
    """A space's name as typed (a child's name, say): 1 to 100 characters, no control ones."""
    name = " ".join(typed.split())
    if not name:
        raise HTTPException(422, "Give the space a name: whose data it holds.")
    if len(name) > NAME_MAX or has_control_chars(name):
        raise HTTPException(422, f"A space's name is 1 to {NAME_MAX} characters, without "
                            "control characters.")
    return name


def _site_url(request: Request, tenant: str) -> str:
    """The tenant's Nightscout site as uploaders are given it."""
    return f"{str(request.base_url).rstrip('/')}/t/{tenant}"


def _new_uploader_secret(request: Request, store, access, user) -> dict:
    """A new API secret for the patient's CGM apps (the one before stops working), shown
    once on the page with the site's address in the forms the apps take."""
    from nightlink.shared.apisecret import api_secret_hash

    secret = credentials.make_api_secret(store, access.tenant_id, user["id"], via="sharing page")
    site = _site_url(request, access.tenant_id)
    scheme, _, rest = site.partition("://")
    return {"secret": secret, "sha1": api_secret_hash(secret),
            "xdrip": f"{scheme}://{secret}@{rest}/api/v1/"}


# What an access token made on the page may do: its Nightscout roles.
TOKEN_KINDS = {
    "read": ("readable",),  # clocks, followers, reports
    "careportal": ("readable", "careportal"),  # Nightguard, a careportal: read, log treatments
    "rig": ("oref0rig",),  # an OpenAPS rig: treatments, statuses and entries
    "admin": ("admin",),  # AndroidAPS' NSClient v3 uploads only with every permission
}
TOKEN_NAME_MAX = 64


def _int(typed: str | None) -> int:
    """A row's id from a form field; 422 unless it is one (1 to 2**63-1)."""
    try:
        value = int(typed or "")
    except ValueError:
        value = 0
    if not 1 <= value <= ROW_ID_MAX:
        raise HTTPException(422, "The form did not say which one.")
    return value


def _new_token(request: Request, store, access, form) -> dict:
    """A new access token named by the family (the grandparent's phone, the desk clock),
    shown once on the page with the site's read link."""
    name = " ".join(form.get("name", "").split())
    if not name or len(name) > TOKEN_NAME_MAX or has_control_chars(name):
        raise HTTPException(422, f"Name what will use the token (1 to {TOKEN_NAME_MAX} "
                                 "characters): a phone, a clock, an app.")
    roles = TOKEN_KINDS.get(form.get("may", ""))
    if roles is None:
        raise HTTPException(422, "Say what the token may do: read, read and log treatments, "
                                 "an OpenAPS rig's, or everything.")
    token = credentials.make_token(store, access, name, list(roles), via="sharing page")
    return {"name": name, "token": token, "roles": roles,
            "link": f"{_site_url(request, access.tenant_id)}?token={token}"}


def _first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors) and errors():
        err = errors()[0]
        field = ".".join(str(x) for x in err.get("loc", ()))
        return f"{field}: {err.get('msg', 'is not valid')}."
    return "A field of the form is not valid."


def _owner(request: Request, store, settings, tenant: str):
    """The signed-in patient (or an administrator) of the tenant; others are sent to sign in
    or get 404, as for every tenant page."""
    from nightlink.cloud.access import resolve_access
    from nightlink.cloud.routes.portal import portal_user

    user = portal_user(request, store, settings)  # SignIn redirects to the sign-in page
    access = resolve_access(store, user, tenant)
    if access is None:
        raise HTTPException(404, f"No patient {tenant!r}.")
    if not access.can_write:
        raise HTTPException(403, f"Only the patient shares their data; a {access.role} cannot.")
    return user, access


def _sharing(store, access, user, *, created, error, status: int = 200,
             notice: str | None = None, uploader: dict | None = None,
             reader: dict | None = None, site: str = "") -> HTMLResponse:
    tokens = [{"id": t.id, "name": t.name, "roles": t.roles,
               "made": time.strftime("%Y-%m-%d", time.gmtime(t.created_at / 1000))}
              for t in access.data.subjects.list()]
    return _page("sharing.html", status, user=user, tenant=store.get_tenant(access.tenant_id),
                 uploader=uploader, reader=reader, tokens=tokens, site=site,
                 members=[m for m in store.members(access.tenant_id) if m["user_id"] != user["id"]],
                 invites=store.invites(access.tenant_id), created=created, error=error,
                 notice=notice,
                 until=(time.strftime("%Y-%m-%d", time.gmtime(created.expires_at))
                        if created else None),
                 verified=bool(user.get("verified_at")) or access.role == "admin")
