"""Sign-in for people: password login, token refresh, who am I."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field

from nightlink.cloud import auth
from nightlink.cloud.deps import ERRORS, CurrentUser, SettingsDep, StoreDep

router = APIRouter(prefix="/api/nl/v1/auth", tags=["auth"], responses=ERRORS)


class LoginIn(BaseModel):
    email: str = Field(min_length=3, max_length=254)
    password: str = Field(min_length=1, max_length=1024)


class RefreshIn(BaseModel):
    refresh_token: str


class TokensOut(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str = "bearer"
    expires_in: int


class MeOut(BaseModel):
    id: int
    email: str
    name: str
    is_admin: bool
    verified: bool  # the address was confirmed (or an administrator made the account)
    tenants: list[dict]


@router.post("/login", response_model=TokensOut)
def login(body: LoginIn, request: Request, store: StoreDep, settings: SettingsDep):
    """Exchange email and password for an access and a refresh token."""
    client = request.client.host if request.client else "?"
    key = f"{client}|{body.email.lower()}"
    wait = request.app.state.login_limiter.hit(key)
    if wait:
        raise HTTPException(429, "Too many sign-in attempts; wait a minute.",
                            headers={"Retry-After": str(int(wait) + 1)})
    try:
        user = auth.check_login(store, body.email, body.password)
    except auth.AuthError:
        store.audit("login.failed", email=body.email.lower(), client=client)
        raise
    store.audit("login", actor=user["id"], client=client)
    request.app.state.login_limiter.forget(key)
    return auth.issue_tokens(store, user["id"], settings.jwt_secret,
                             settings.access_token_minutes, settings.refresh_token_days)


@router.post("/refresh", response_model=TokensOut)
def refresh(body: RefreshIn, store: StoreDep, settings: SettingsDep):
    """Trade a refresh token (once) for new tokens."""
    return auth.refresh(store, body.refresh_token, settings.jwt_secret,
                        settings.access_token_minutes, settings.refresh_token_days)


@router.get("/me", response_model=MeOut)
def me(user: CurrentUser, store: StoreDep):
    """The signed-in account and the tenants it belongs to."""
    return MeOut(id=user["id"], email=user["email"], name=user["name"],
                 is_admin=bool(user["is_admin"]), verified=bool(user.get("verified_at")),
                 tenants=store.memberships(user["id"]))
