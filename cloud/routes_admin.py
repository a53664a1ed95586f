"""Accounts, tenants, grants, audit, uploader secrets, device provisioning and data rights.

Who may do what: an administrator everything; a tenant's patient grants caregivers and
doctors, makes keys, provisions devices, exports and deletes the tenant; caregivers and
doctors read. Every grant, revoke, key, device, export and deletion is written to the audit
log. Secrets (api-secret, read tokens, device passwords) are shown once and stored hashed.
"""

from __future__ import annotations

import csv
import io
import json
import secrets
import struct
import time
import zipfile
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Response
from pydantic import BaseModel, Field

from nightlink.cloud import auth
from nightlink.cloud.broker_config import device_username, mosquitto_hash, new_device_password
from nightlink.cloud.deps import (
    ERRORS,
    AdminUser,
    CurrentUser,
    MemberAccess,
    SettingsDep,
    StoreDep,
    TenantAccess,
    WriterAccess,
    member_access,
    writer_access,
)
from nightlink.cloud.store import NotFoundError, Store, TenantStore, row_values
from nightlink.nightscout.auth import sha1_hex
from nightlink.shared import epoch as E
from nightlink.shared import features as F
from nightlink.shared import topics

router = APIRouter(prefix="/api/nl/v1", tags=["accounts"], responses=ERRORS)

EMAIL = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
SLUG = r"^[a-z0-9][a-z0-9_-]{0,31}$"
DEVICE_ID = r"^[0-9a-f]{12}$"
GrantRole = Literal["patient", "caregiver", "doctor", "admin"]
# Global audit rows (no tenant) of a tenant's members that the tenant's audit view includes.
_ALL = 2**31 - 1  # "no limit" for the store's LIMIT arguments


# -- models: *Create is what a client sends, *Public what it gets back -----------------------


class AccountCreate(BaseModel):
    email: str = Field(pattern=EMAIL, max_length=254)
    name: str = Field("", max_length=100)
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


class TenantCreate(BaseModel):
    id: str = Field(pattern=SLUG, description="Slug; also the MQTT topic segment.")
    name: str = Field(min_length=1, max_length=100)
    public_read: bool = False
    patient_email: str | None = Field(None, pattern=EMAIL, max_length=254)
    patient_name: str = Field("", max_length=100)
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


class AuditPublic(BaseModel):
    id: int
    at: float
    actor_user_id: int | None
    tenant_id: str | None
    action: str
    detail: dict


class ApiSecretPublic(BaseModel):
    secret: str = Field(description="The upload secret, shown once.")
    sha1: str = Field(description="What uploaders send in the api-secret header.")


class ReadTokenCreate(BaseModel):
    label: str = Field("", max_length=64)
    role: Literal["readable", "careportal", "devicestatus-upload", "admin"] = "readable"


class ReadTokenPublic(BaseModel):
    token: str = Field(description="Send as ?token=…, or exchange for a JWT; shown once.")
    label: str
    role: str = "readable"


class DeviceCreate(BaseModel):
    device_id: str = Field(pattern=DEVICE_ID, description="12 lowercase hex digits.")
    kind: Literal["clock", "edge"]
    label: str = Field("", max_length=64)


class DevicePublic(BaseModel):
    device_id: str
    kind: str
    label: str
    mqtt_username: str
    topic_prefix: str
    created_at: float
    revoked_at: float | None = None


class DeviceProvisioned(DevicePublic):
    mqtt_password: str = Field(description="Shown once; the broker keeps only its hash.")
    mqtt_host: str
    mqtt_port: int


class GlucosePublic(BaseModel):
    sgv: int | None
    date: int
    direction: str | None = None


class PatientSummary(BaseModel):
    tenant_id: str
    name: str
    role: str
    latest_glucose: GlucosePublic | None
    last_night: str | None


# -- helpers ---------------------------------------------------------------------------------


def _account(user: dict) -> AccountPublic:
    return AccountPublic(id=user["id"], email=user["email"], name=user["name"],
                         is_admin=bool(user["is_admin"]), created_at=user["created_at"])


def _device(row: dict, tenant_id: str) -> dict:
    return {"device_id": row["id"], "kind": row["kind"], "label": row["label"],
            "mqtt_username": row["mqtt_username"], "created_at": row["created_at"],
            "revoked_at": row["revoked_at"],
            "topic_prefix": topics.device_prefix(tenant_id, row["id"])}




def owner_access(tenant: str, store: StoreDep, user: CurrentUser) -> TenantAccess:
    """The tenant's patient, or an administrator, who also reaches a soft-deleted tenant."""
    return writer_access(member_access(tenant, store, user))


OwnerAccess = Annotated[TenantAccess, Depends(owner_access)]


def _only_admin_for(role: str | None, access: TenantAccess, verb: str) -> None:
    if role in ("patient", "admin") and access.role != "admin":
        raise HTTPException(403, f"Only an administrator may {verb} the {role} role.")


# -- accounts --------------------------------------------------------------------------------


@router.post("/accounts", status_code=201, response_model=AccountPublic)
def create_account(body: AccountCreate, admin: AdminUser, store: StoreDep):
    """Create an account (administrators only)."""
    user = store.create_user(body.email, auth.hash_password(body.password), name=body.name,
                             is_admin=body.is_admin)
    store.audit("account.create", actor=admin["id"], user_id=user["id"], email=user["email"],
                is_admin=body.is_admin)
    return _account(user)


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


# -- tenants ---------------------------------------------------------------------------------


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
    return TenantCreated(**tenant, patient=_account(patient) if patient else None,
                         initial_password=initial)


@router.delete("/tenants/{tenant}", status_code=204)
def delete_tenant(access: WriterAccess, store: StoreDep, settings: SettingsDep):
    """Delete the tenant (soft): gone for all but administrators, purged after the period."""
    store.set_tenant(access.tenant_id, deleted_at=time.time())
    store.audit("tenant.delete", actor=access.user["id"], tenant_id=access.tenant_id,
                purge_after_days=settings.purge_after_days)


@router.post("/tenants/{tenant}/restore", response_model=TenantPublic)
def restore_tenant(tenant: str, admin: AdminUser, store: StoreDep, settings: SettingsDep):
    """Undo a tenant's deletion within the purge period (administrators only)."""
    row = store.get_tenant(tenant, include_deleted=True)
    if not row["deleted_at"]:
        raise HTTPException(409, f"The tenant {tenant!r} is not deleted.")
    if time.time() - row["deleted_at"] > settings.purge_after_days * 86400:
        raise HTTPException(410, f"The tenant {tenant!r} was deleted more than "
                            f"{settings.purge_after_days} days ago and cannot be restored.")
    store.set_tenant(tenant, deleted_at=None)
    store.audit("tenant.restore", actor=admin["id"], tenant_id=tenant)
    return store.get_tenant(tenant)


# -- members and grants ----------------------------------------------------------------------


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
def revoke(user_id: int, access: WriterAccess, store: StoreDep):
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


# -- uploader secrets and read tokens --------------------------------------------------------


@router.post("/tenants/{tenant}/api-secret", status_code=201, response_model=ApiSecretPublic)
def new_api_secret(access: WriterAccess, store: StoreDep):
    """Make a new upload secret (the previous one stops working); shown once."""
    secret = secrets.token_urlsafe(24)
    with store.transaction():
        store.set_api_secret(access.tenant_id, secret)
        store.audit("key.create", actor=access.user["id"], tenant_id=access.tenant_id,
                    kind="api-secret")
    return ApiSecretPublic(secret=secret, sha1=sha1_hex(secret))


@router.post("/tenants/{tenant}/read-tokens", status_code=201, response_model=ReadTokenPublic)
def new_read_token(access: WriterAccess, store: StoreDep, body: ReadTokenCreate | None = None):
    """Make an access token for a clock, a follower or an app; shown once.

    Read-only unless a role says otherwise: `admin` for AndroidAPS, `careportal` to add
    treatments."""
    label = body.label if body else ""
    role = body.role if body else "readable"
    subject, token = access.data.subjects.create(label or role, [role])
    store.audit("key.create", actor=access.user["id"], tenant_id=access.tenant_id,
                kind="token", label=label, role=role)
    return ReadTokenPublic(token=token, label=label, role=role)


@router.delete("/tenants/{tenant}/read-tokens", status_code=204)
def revoke_read_tokens(access: WriterAccess, store: StoreDep):
    """Revoke every access token of the tenant."""
    n = access.data.subjects.revoke_all()
    store.access_changed()
    store.audit("key.revoke", actor=access.user["id"], tenant_id=access.tenant_id,
                kind="token", count=n)


# -- devices ---------------------------------------------------------------------------------


@router.post("/tenants/{tenant}/devices", status_code=201, response_model=DeviceProvisioned)
def provision_device(body: DeviceCreate, access: WriterAccess, store: StoreDep,
                     settings: SettingsDep):
    """Register a clock or edge node and mint its MQTT account; the password is shown once."""
    password = new_device_password()
    row = store.add_device(body.device_id, access.tenant_id, body.kind,
                           device_username(access.tenant_id, body.device_id),
                           mosquitto_hash(password), body.label)
    store.audit("device.provision", actor=access.user["id"], tenant_id=access.tenant_id,
                device_id=body.device_id, kind=body.kind)
    return DeviceProvisioned(**_device(row, access.tenant_id), mqtt_password=password,
                             mqtt_host=settings.mqtt_host, mqtt_port=settings.mqtt_port)


@router.get("/tenants/{tenant}/devices", response_model=list[DevicePublic])
def list_devices(access: MemberAccess):
    """The tenant's devices, revoked ones included, without secrets."""
    return [_device(d, access.tenant_id) for d in access.data.devices()]


@router.delete("/tenants/{tenant}/devices/{device_id}", status_code=204)
def revoke_device(device_id: str, access: WriterAccess, store: StoreDep):
    """Revoke a device's MQTT account (effective when the broker files are rewritten)."""
    if not access.data.revoke_device(device_id):
        raise HTTPException(404, f"No active device {device_id} in this tenant.")
    store.audit("device.revoke", actor=access.user["id"], tenant_id=access.tenant_id,
                device_id=device_id)


# -- data rights -----------------------------------------------------------------------------


def _epoch_rows(data: TenantStore) -> dict[str, list[dict]]:
    """Every stored epoch row, decoded to feature values, per stream name."""
    out: dict[str, list[dict]] = {}
    streams = data.streams()
    for stream in streams:
        info = F.stream(stream)
        rows, after = [], None
        while True:
            page = data.rows(stream, -(2**62), 2**62, after=after, limit=5000)
            for r in page:
                doc = {"device": r.device, "boot": r.boot, "seq": r.seq, "epoch": r.epoch,
                       "time": E.iso_epoch(r.epoch), "flags": r.flags}
                try:
                    values = row_values(stream, r.nfeat, r.row_data)
                except struct.error:
                    values = {}
                if values:
                    doc.update(values)
                else:  # a stream this version does not know, or bytes that do not fit
                    doc["raw_hex"] = r.row_data.hex()
                rows.append(doc)
            if len(page) < 5000:
                break
            last = page[-1]
            after = (last.epoch, last.device, last.boot, last.seq)
        out[info[F.S_NAME] if info else f"stream{stream}"] = rows
    return out


def export_doc(store: Store, access: TenantAccess) -> dict:
    """Everything the tenant holds, as one JSON-ready document."""
    data = access.data
    return {
        "tenant": store.get_tenant(access.tenant_id, include_deleted=True),
        "exported_at": time.time(),
        "entries": data.documents("entries", count=_ALL),
        "treatments": data.documents("treatments", count=_ALL),
        "devicestatus": data.documents("devicestatus", count=_ALL),
        "profiles": data.documents("profile", count=_ALL),
        "food": data.documents("food", count=_ALL),
        "activity": data.documents("activity", count=_ALL),
        "nights": data.nights(limit=_ALL),
        "epochs": _epoch_rows(data),
        "alerts": data.alerts(limit=_ALL),
        "members": store.members(access.tenant_id),
        "devices": [_device(d, access.tenant_id) for d in data.devices()],
    }


def _csv(rows: list[dict]) -> str:
    columns: dict[str, None] = {}
    for r in rows:
        columns.update(dict.fromkeys(r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns))
    writer.writeheader()
    for r in rows:
        writer.writerow({k: json.dumps(v, sort_keys=True) if isinstance(v, dict | list)
                         else ("" if v is None else v) for k, v in r.items()})
    return buf.getvalue()


def export_zip(doc: dict) -> bytes:
    """The export as a zip of CSV files, one per collection (and one per epoch stream)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("tenant.csv", _csv([doc["tenant"]]))
        for name in ("entries", "treatments", "devicestatus", "profiles", "food", "activity",
                     "nights", "alerts", "members", "devices"):
            z.writestr(f"{name}.csv", _csv(doc[name]))
        for stream, rows in doc["epochs"].items():
            z.writestr(f"epochs_{stream}.csv", _csv(rows))
    return buf.getvalue()


@router.get("/tenants/{tenant}/export", response_class=Response,
            responses={200: {"content": {"application/json": {}, "application/zip": {}}}})
def export(access: OwnerAccess, store: StoreDep, format: Literal["json", "csv"] = "json"):
    """All the tenant's data as JSON, or as a zip of CSV files (patient or administrator)."""
    doc = export_doc(store, access)
    store.audit("export", actor=access.user["id"], tenant_id=access.tenant_id, format=format)
    stem = f"nightlink-{access.tenant_id}-{time.strftime('%Y%m%d', time.gmtime())}"
    if format == "csv":
        return Response(export_zip(doc), media_type="application/zip",
                        headers={"Content-Disposition": f'attachment; filename="{stem}.zip"'})
    return Response(json.dumps(doc, sort_keys=True), media_type="application/json",
                    headers={"Content-Disposition": f'attachment; filename="{stem}.json"'})


# -- the doctor's view over several patients -------------------------------------------------


@router.get("/patients", response_model=list[PatientSummary])
def patients(user: CurrentUser, store: StoreDep):
    """The tenants you may read, with your role, the latest glucose and the last night."""
    visible = store.visible_tenants(user)
    out = []
    for m in visible:
        try:
            data = store.tenant(m["tenant_id"])
        except NotFoundError:  # deleted meanwhile
            continue
        latest = data.entries(count=1, type_="sgv")
        nights = data.nights(limit=1)
        out.append(PatientSummary(
            tenant_id=m["tenant_id"], name=m["name"], role=m["role"],
            latest_glucose=GlucosePublic(sgv=latest[0].get("sgv"), date=latest[0]["date"],
                                         direction=latest[0].get("direction"))
            if latest else None,
            last_night=nights[0]["night"] if nights else None))
    return out
