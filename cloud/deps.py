"""FastAPI dependencies: the store, the signed-in person, and who may see which tenant.

Routes receive a `TenantAccess` whose `.data` is the tenant-scoped store handle; they never
build one themselves, so a tenant check cannot be forgotten on a route.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from nightlink.cloud import auth
from nightlink.cloud.access import ACT_ROLES, TenantAccess, may_act, resolve_access
from nightlink.cloud.config import Settings
from nightlink.cloud.store import NotFoundError, Store


class ErrorPublic(BaseModel):
    """Every refusal of the Nightlink API: one sentence saying why."""

    detail: str


_ERROR = {"model": ErrorPublic}
# The answers every Nightlink API route may give besides its own (documented once, so the
# OpenAPI document lists every status a client can see).
ERRORS: dict = {
    400: {**_ERROR, "description": "A malformed request"},
    401: {**_ERROR, "description": "No valid sign-in token"},
    403: {**_ERROR, "description": "Signed in, but this role may not do it"},
    404: {**_ERROR, "description": "No such tenant, person or thing (or not visible to you)"},
    409: {**_ERROR, "description": "It clashes with what is stored"},
    410: {**_ERROR, "description": "It is gone"},
    422: {**_ERROR, "description": "A parameter or body field is not valid"},
    429: {**_ERROR, "description": "Too many attempts; Retry-After says when to try again"},
}
_bearer = HTTPBearer(auto_error=False)


async def get_store(request: Request) -> Store:
    # async: a plain attribute read, not worth a hop to the thread pool
    return request.app.state.store


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


StoreDep = Annotated[Store, Depends(get_store)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def unauthorized(message: str) -> HTTPException:
    return HTTPException(401, message, headers={"WWW-Authenticate": "Bearer"})


def optional_user(store: StoreDep, settings: SettingsDep, creds: BearerDep) -> dict | None:
    """The person behind a Bearer access token, None without one; 401 for a bad one."""
    if creds is None:
        return None
    try:
        claims = auth.decode(creds.credentials, settings.jwt_secret, "access")
        return auth.token_user(store, claims)
    except (auth.AuthError, NotFoundError, ValueError) as exc:
        raise unauthorized(str(exc) if isinstance(exc, auth.AuthError)
                           else "The account no longer exists.") from None


OptionalUser = Annotated[dict | None, Depends(optional_user)]


def current_user(user: OptionalUser) -> dict:
    if user is None:
        raise unauthorized("Sign in first: send an access token as 'Authorization: Bearer …'.")
    return user


CurrentUser = Annotated[dict, Depends(current_user)]


def admin_user(user: CurrentUser) -> dict:
    if not user["is_admin"]:
        raise HTTPException(403, "Only an administrator may do this.")
    return user


AdminUser = Annotated[dict, Depends(admin_user)]


def member_access(tenant: str, store: StoreDep, user: CurrentUser) -> TenantAccess:
    """A signed-in member (or an administrator) of the tenant in the path. A soft-deleted
    tenant is gone for everyone but administrators until it is purged."""
    access = resolve_access(store, user, tenant, include_deleted=True)
    if access is None:
        raise HTTPException(404, f"No tenant {tenant!r}.")
    return access


MemberAccess = Annotated[TenantAccess, Depends(member_access)]


def writer_access(access: MemberAccess) -> TenantAccess:
    if not access.can_write:
        raise HTTPException(403, f"A {access.role} may read this tenant's data but not change it.")
    return access


WriterAccess = Annotated[TenantAccess, Depends(writer_access)]


def require_actor(store: Store, access: TenantAccess, what: str) -> None:
    """403 unless the member may act for the patient (cloud/access.py may_act): acknowledge
    alerts, log treatments. `what` finishes the sentence ("acknowledge its alerts")."""
    if access.role not in ACT_ROLES:
        raise HTTPException(403, f"A {access.role} may see this patient's data but not {what}.")
    if not may_act(store, access):
        raise HTTPException(403, f"Your access to this patient is read-only: you may see the "
                                 f"data but not {what}.")


def owner_access(tenant: str, store: StoreDep, user: CurrentUser) -> TenantAccess:
    """The tenant's patient, or an administrator, who also reaches a soft-deleted tenant."""
    return writer_access(member_access(tenant, store, user))


OwnerAccess = Annotated[TenantAccess, Depends(owner_access)]
