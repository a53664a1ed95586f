"""Tenants (one patient's space each) and who may reach them: creation by an administrator,
soft deletion and restore, members and their grants, and the tenant's audit log.

A tenant's patient grants caregivers and doctors; only an administrator grants or changes
the patient and admin roles. Every grant and revoke is written to the audit log."""

from __future__ import annotations

import secrets
import time
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field

from nightlink.cloud import auth
from nightlink.cloud.deps import (
    ERRORS,
    AdminUser,
    MemberAccess,
    SettingsDep,
    StoreDep,
    TenantAccess,
    WriterAccess,
)
from nightlink.cloud.routes.accounts import AccountPublic, account_public
from nightlink.cloud.routes.fields import EMAIL, SLUG, Name, RowId
from nightlink.cloud.store import NotFoundError

GrantRole = Literal["patient", "caregiver", "doctor", "admin"]

router = APIRouter(prefix="/api/nl/v1", tags=["tenants"], responses=ERRORS)


class TenantCreate(BaseModel):
    id: str = Field(pattern=SLUG, description="Slug; also the MQTT topic segment.")
    name: Annotated[Name, Field(min_length=1)]
    public_read: bool = False
    patient_email: str | None = Field(None, pattern=EMAIL, max_length=254)
    patient_name: Name = ""
    patient_password: str | None = Field(None, min_length=12, max_length=1024)


class TenantPublic(BaseModel):
    id: str
    name: str
    public_read: bool
    units: str
    created_at: float
    deleted_at: float | None = None


class TenantCreated(TenantPublic):
    patient: AccountPublic | None = None
    initial_password: str | None = Field(
        None, description="Only when a patient account was created without a password; "
        "shown once.")


class GrantCreate(BaseModel):
    email: str = Field(pattern=EMAIL, max_length=254)
    role: GrantRole


class MemberPublic(BaseModel):
    user_id: int
    email: str
    name: str
    role: str
    granted_at: float
    alerts: bool = True  # False: reads, but takes no part in alerts


class AuditPublic(BaseModel):
    id: int
    at: float
    actor_user_id: int | None
    tenant_id: str | None
    action: str
    detail: dict


def _only_admin_for(role: str | None, access: TenantAccess, verb: str) -> None:
    if role in ("patient", "admin") and access.role != "admin":
        raise HTTPException(403, f"Only an administrator may {verb} the {role} role.")


@router.post("/tenants", status_code=201, response_model=TenantCreated)
def create_tenant(body: TenantCreate, admin: AdminUser, store: StoreDep):
    """Create a tenant (administrators only), optionally with its patient's account."""
    patient, initial = None, None
    if body.patient_email:
        try:
            patient = store.user_by_email(body.patient_email)
        except NotFoundError:
            initial = None if body.patient_password else secrets.token_urlsafe(12)
            password_hash = auth.hash_password(body.patient_password or initial)
    with store.transaction():
        tenant = store.create_tenant(body.id, body.name, public_read=body.public_read)
        if body.patient_email and patient is None:
            patient = store.create_user(body.patient_email, password_hash,
                                        name=body.patient_name)
            store.audit("account.create", actor=admin["id"], user_id=patient["id"],
                        email=patient["email"], is_admin=False)
        if patient is not None:
            store.grant(body.id, patient["id"], "patient", by=admin["id"])
        store.audit("tenant.create", actor=admin["id"], tenant_id=body.id,
                    patient_user_id=patient["id"] if patient else None)
    return TenantCreated(**tenant, patient=account_public(patient) if patient else None,
                         initial_password=initial)


@router.delete("/tenants/{tenant}", status_code=204)
def delete_tenant(access: WriterAccess, store: StoreDep, settings: SettingsDep):
    """Delete the tenant (soft): gone for all but administrators, purged after the period.
    Its devices are revoked with it: the broker files leave them out and the ingest
    dead-letters what they still send, the other tenants' ingest going on as before."""
    at = time.time()
    with store.transaction():
        store.set_tenant(access.tenant_id, deleted_at=at)
        revoked = store.revoke_tenant_devices(access.tenant_id, at)
        store.audit("tenant.delete", actor=access.user["id"], tenant_id=access.tenant_id,
                    purge_after_days=settings.purge_after_days, devices_revoked=revoked)


@router.post("/tenants/{tenant}/restore", response_model=TenantPublic)
def restore_tenant(tenant: str, admin: AdminUser, store: StoreDep, settings: SettingsDep):
    """Undo a tenant's deletion within the purge period (administrators only)."""
    row = store.get_tenant(tenant, include_deleted=True)
    if not row["deleted_at"]:
        raise HTTPException(409, f"The tenant {tenant!r} is not deleted.")
    if time.time() - row["deleted_at"] > settings.purge_after_days * 86400:
        raise HTTPException(410, f"The tenant {tenant!r} was deleted more than "
                            f"{settings.purge_after_days} days ago and cannot be restored.")
    with store.transaction():
        store.set_tenant(tenant, deleted_at=None)
        # The devices its deletion revoked come back; those revoked before stay revoked.
        restored = store.restore_tenant_devices(tenant, row["deleted_at"])
        store.audit("tenant.restore", actor=admin["id"], tenant_id=tenant,
                    devices_restored=restored)
    return store.get_tenant(tenant)


@router.get("/tenants/{tenant}/members", response_model=list[MemberPublic])
def list_members(access: MemberAccess, store: StoreDep):
    """The people who may see this tenant, with their roles."""
    return store.members(access.tenant_id)


@router.post("/tenants/{tenant}/grants", status_code=201, response_model=MemberPublic)
def grant(body: GrantCreate, access: WriterAccess, store: StoreDep):
    """Give an account a role here (patients grant caregivers and doctors)."""
    _only_admin_for(body.role, access, "grant")
    try:
        target = store.user_by_email(body.email)
    except NotFoundError:
        raise HTTPException(404, f"No account for {body.email}.") from None
    _only_admin_for(store.role(access.tenant_id, target["id"]), access, "change")
    store.grant(access.tenant_id, target["id"], body.role, by=access.user["id"])
    store.audit("grant", actor=access.user["id"], tenant_id=access.tenant_id,
                user_id=target["id"], email=target["email"], role=body.role)
    return next(m for m in store.members(access.tenant_id) if m["user_id"] == target["id"])


@router.delete("/tenants/{tenant}/grants/{user_id}", status_code=204)
def revoke(user_id: RowId, access: WriterAccess, store: StoreDep):
    """End an account's access here; its next request is refused."""
    role = store.role(access.tenant_id, user_id)
    if role is None:
        raise HTTPException(404, f"User {user_id} is not a member of this tenant.")
    _only_admin_for(role, access, "revoke")
    store.revoke(access.tenant_id, user_id)
    store.audit("revoke", actor=access.user["id"], tenant_id=access.tenant_id,
                user_id=user_id, role=role)


@router.get("/tenants/{tenant}/audit", response_model=list[AuditPublic])
def audit_log(access: WriterAccess, store: StoreDep,
              limit: int = Query(200, ge=1, le=5000)):
    """The tenant's audit log, with its members' sign-ins, newest first."""
    return store.audit_log(access.tenant_id, limit, with_members=True)
