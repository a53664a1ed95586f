"""What apps and uploaders present: the tenant's upload secret (api-secret) and access
tokens with a Nightscout role. Each is shown once and kept only as hashes."""

from __future__ import annotations

import secrets
from typing import Literal

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from nightlink.cloud.deps import ERRORS, StoreDep, WriterAccess
from nightlink.cloud.routes.fields import RowId
from nightlink.cloud.store import NotFoundError
from nightlink.errors import has_control_chars
from nightlink.nightscout.auth import TOKEN_ROLES
from nightlink.shared.apisecret import api_secret_hash

router = APIRouter(prefix="/api/nl/v1", tags=["credentials"], responses=ERRORS)


class ApiSecretPublic(BaseModel):
    secret: str = Field(description="The upload secret, shown once.")
    sha1: str = Field(description="What uploaders send in the api-secret header.")


class ReadTokenCreate(BaseModel):
    label: str = Field("", max_length=64)
    role: Literal[TOKEN_ROLES] = "readable"


class ReadTokenPublic(BaseModel):
    token: str = Field(description="Send as ?token=…, or exchange for a JWT; shown once.")
    label: str
    role: str = "readable"


def make_api_secret(store, tenant_id: str, actor_id: int, **audit) -> str:
    """A new upload secret for a tenant (the previous one stops working), audited."""
    secret = secrets.token_urlsafe(24)
    with store.transaction():
        store.set_api_secret(tenant_id, secret)
        store.audit("key.create", actor=actor_id, tenant_id=tenant_id, kind="api-secret",
                    **audit)
    return secret


@router.post("/tenants/{tenant}/api-secret", status_code=201, response_model=ApiSecretPublic)
def new_api_secret(access: WriterAccess, store: StoreDep):
    """Make a new upload secret (the previous one stops working); shown once."""
    secret = make_api_secret(store, access.tenant_id, access.user["id"])
    return ApiSecretPublic(secret=secret, sha1=api_secret_hash(secret))


class ReadTokenListed(BaseModel):
    id: int
    label: str
    roles: list[str]
    created_at: int = Field(description="When it was made, ms since the epoch.")


def make_token(store, access, label: str, roles: list[str], **audit) -> str:
    """A new access token of the tenant (a subject named `label`), audited; shown once."""
    _, token = access.data.subjects.create(label, roles)
    store.audit("key.create", actor=access.user["id"], tenant_id=access.tenant_id,
                kind="token", label=label, role=",".join(roles), **audit)
    return token


def revoke_token(store, access, subject_id: int, **audit) -> bool:
    """Revoke one access token; sockets it opened are dropped. False: no such token."""
    if not access.data.subjects.revoke(subject_id):
        return False
    store.access_changed()
    store.audit("key.revoke", actor=access.user["id"], tenant_id=access.tenant_id,
                kind="token", id=subject_id, **audit)
    return True


@router.post("/tenants/{tenant}/read-tokens", status_code=201, response_model=ReadTokenPublic)
def new_read_token(access: WriterAccess, store: StoreDep, body: ReadTokenCreate | None = None):
    """Make an access token for a clock, a follower or an app; shown once.

    Read-only unless a role says otherwise: `admin` for AndroidAPS, `careportal` to add
    treatments."""
    label = " ".join((body.label if body else "").split())
    role = body.role if body else "readable"
    if has_control_chars(label):
        raise HTTPException(422, "label: control characters have no place in a name.")
    token = make_token(store, access, label or role, [role])
    return ReadTokenPublic(token=token, label=label, role=role)


@router.get("/tenants/{tenant}/read-tokens", response_model=list[ReadTokenListed])
def list_read_tokens(access: WriterAccess):
    """The tenant's access tokens in use (never the tokens themselves)."""
    return [ReadTokenListed(id=s.id, label=s.name, roles=list(s.roles), created_at=s.created_at)
            for s in access.data.subjects.list()]


@router.delete("/tenants/{tenant}/read-tokens/{token_id}", status_code=204)
def revoke_read_token(token_id: RowId, access: WriterAccess, store: StoreDep):
    """Revoke one access token (a lost clock, a follower who should no longer see)."""
    if not revoke_token(store, access, token_id):
        raise NotFoundError(f"No access token {token_id}.")


@router.delete("/tenants/{tenant}/read-tokens", status_code=204)
def revoke_read_tokens(access: WriterAccess, store: StoreDep):
    """Revoke every access token of the tenant."""
    n = access.data.subjects.revoke_all()
    store.access_changed()
    store.audit("key.revoke", actor=access.user["id"], tenant_id=access.tenant_id,
                kind="token", count=n)
