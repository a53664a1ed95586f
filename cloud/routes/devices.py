"""Clocks and edge nodes: provisioning mints a device's MQTT account (the password is shown
once, the broker keeps its hash), listing, and revoking."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from nightlink.cloud.broker_config import device_username, mosquitto_hash, new_device_password
from nightlink.cloud.deps import ERRORS, MemberAccess, SettingsDep, StoreDep, WriterAccess
from nightlink.cloud.routes.fields import DEVICE_ID
from nightlink.shared import topics

router = APIRouter(prefix="/api/nl/v1", tags=["devices"], responses=ERRORS)


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


def device_public(row: dict, tenant_id: str) -> dict:
    return {"device_id": row["id"], "kind": row["kind"], "label": row["label"],
            "mqtt_username": row["mqtt_username"], "created_at": row["created_at"],
            "revoked_at": row["revoked_at"],
            "topic_prefix": topics.device_prefix(tenant_id, row["id"])}


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
    return DeviceProvisioned(**device_public(row, access.tenant_id), mqtt_password=password,
                             mqtt_host=settings.mqtt_host, mqtt_port=settings.mqtt_port)


@router.get("/tenants/{tenant}/devices", response_model=list[DevicePublic])
def list_devices(access: MemberAccess):
    """The tenant's devices, revoked ones included, without secrets."""
    return [device_public(d, access.tenant_id) for d in access.data.devices()]


@router.delete("/tenants/{tenant}/devices/{device_id}", status_code=204)
def revoke_device(device_id: str, access: WriterAccess, store: StoreDep):
    """Revoke a device's MQTT account (effective when the broker files are rewritten)."""
    if not access.data.revoke_device(device_id):
        raise HTTPException(404, f"No active device {device_id} in this tenant.")
    store.audit("device.revoke", actor=access.user["id"], tenant_id=access.tenant_id,
                device_id=device_id)
