"""Accounts: administrators create them; everyone changes their own password or deletes
their own account (the last administrator cannot)."""

from __future__ import annotations

import time

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from nightlink.cloud import auth
from nightlink.cloud.deps import ERRORS, AdminUser, CurrentUser, StoreDep
from nightlink.cloud.routes.fields import EMAIL, Name

router = APIRouter(prefix="/api/nl/v1", tags=["accounts"], responses=ERRORS)


class AccountCreate(BaseModel):
    email: str = Field(pattern=EMAIL, max_length=254)
    name: Name = ""
    password: str = Field(min_length=12, max_length=1024)
    is_admin: bool = False


class AccountPublic(BaseModel):
    id: int
    email: str
    name: str
    is_admin: bool
    created_at: float


class PasswordChange(BaseModel):
    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=12, max_length=1024)


def account_public(user: dict) -> AccountPublic:
    return AccountPublic(id=user["id"], email=user["email"], name=user["name"],
                         is_admin=bool(user["is_admin"]), created_at=user["created_at"])


@router.post("/accounts", status_code=201, response_model=AccountPublic)
def create_account(body: AccountCreate, admin: AdminUser, store: StoreDep):
    """Create an account (administrators only)."""
    user = store.create_user(body.email, auth.hash_password(body.password), name=body.name,
                             is_admin=body.is_admin)
    store.audit("account.create", actor=admin["id"], user_id=user["id"], email=user["email"],
                is_admin=body.is_admin)
    return account_public(user)


@router.post("/accounts/me/password", status_code=204)
def change_password(body: PasswordChange, user: CurrentUser, store: StoreDep):
    """Change your own password; the current one is needed."""
    if not auth.verify_password(user["password_hash"], body.current_password):
        raise HTTPException(403, "The current password is wrong.")
    store.set_user(user["id"], password_hash=auth.hash_password(body.new_password))
    store.revoke_refresh_tokens(user["id"])  # other sessions end with the old password
    store.audit("password.change", actor=user["id"])


@router.delete("/accounts/me", status_code=204)
def delete_account(user: CurrentUser, store: StoreDep):
    """Delete your own account (soft) and end every membership it holds."""
    if user["is_admin"] and not store.other_admins(user["id"]):
        raise HTTPException(409, "The last administrator cannot delete their account.")
    with store.transaction():
        for m in store.memberships(user["id"]):
            store.revoke(m["tenant_id"], user["id"])
        store.set_user(user["id"], deleted_at=time.time())
        store.revoke_refresh_tokens(user["id"])
        store.audit("account.delete", actor=user["id"])
