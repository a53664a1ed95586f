"""Clocks and edge nodes: provisioning mints a device's MQTT account (the password is shown
once, the broker keeps its hash), listing, revoking, and the accounts an edge node's LAN
broker needs."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from pydantic import BaseModel, Field

from nightlink.cloud.broker_config import (
    device_acl,
    device_username,
    mosquitto_hash,
    mosquitto_verify,
    new_device_password,
)
from nightlink.cloud.deps import ERRORS, MemberAccess, SettingsDep, StoreDep, WriterAccess
from nightlink.cloud.routes.fields import DEVICE_ID, Label
from nightlink.shared import topics

router = APIRouter(prefix="/api/nl/v1", tags=["devices"], responses=ERRORS)


class DeviceCreate(BaseModel):
    device_id: str = Field(pattern=DEVICE_ID, description="12 lowercase hex digits.")
    kind: Literal["clock", "edge"]
    label: Label = ""


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
    mqtt_tls: bool = Field(description="Whether the cloud's broker speaks TLS "
                           "(NIGHTLINK_MQTT_TLS).")


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
                             mqtt_host=settings.mqtt_host, mqtt_port=settings.mqtt_port,
                             mqtt_tls=settings.mqtt_tls)


@router.get("/tenants/{tenant}/devices", response_model=list[DevicePublic])
def list_devices(access: MemberAccess):
    """The tenant's devices, revoked ones included, without secrets."""
    return [device_public(d, access.tenant_id) for d in access.data.devices()]


@router.delete("/tenants/{tenant}/devices/{device_id}", status_code=204)
def revoke_device(device_id: str, access: WriterAccess, store: StoreDep):
    """Revoke a device: its MQTT account and a clock's cloud-fallback read token.

    The token goes at once; the MQTT account when the broker files are rewritten."""
    if not access.data.revoke_device(device_id):
        raise HTTPException(404, f"No active device {device_id} in this tenant.")
    store.access_changed()  # its cloud-fallback read token goes with it
    store.audit("device.revoke", actor=access.user["id"], tenant_id=access.tenant_id,
                device_id=device_id)


# -- the edge's LAN broker -------------------------------------------------------------------
# The cloud is the one list of a tenant's devices: an edge node fetches its clocks' accounts
# (the `$7$` hashes the cloud keeps, never a password) and writes its LAN broker's
# password_file and acl_file from them (`nightlink edge broker-files`). The edge signs in
# with its own MQTT account, the one its bridge uses, so it needs no person's password.

_basic = HTTPBasic(auto_error=False)
BasicDep = Annotated[HTTPBasicCredentials | None, Depends(_basic)]


class LanAccount(BaseModel):
    device_id: str
    kind: str
    mqtt_username: str
    mqtt_password_hash: str = Field(description="Mosquitto 2 `$7$` hash, as the cloud keeps it.")
    acl: list[str] = Field(description="acl_file lines for this account on the LAN broker.")


class LanAccounts(BaseModel):
    tenant: str
    accounts: list[LanAccount]


def lan_acl(tenant_id: str, device_id: str, kind: str) -> list[str]:
    """ACL lines on an edge's LAN broker. A clock: what the cloud's broker allows it, and the
    edge's feed (glucose, night summary). An edge node: its clocks' data and status in, its
    own feed out; the bridge to the cloud is inside the broker and needs no ACL."""
    if kind == "clock":
        # A clock may publish below its own prefix, but never a feed there: every clock
        # takes the feed from any device of its tenant, so a clock's "glucose" or "time"
        # would reach all the others (deny comes before the grants in Mosquitto).
        return [*device_acl(tenant_id, device_id),
                f"topic deny {topics.device_prefix(tenant_id, device_id)}{topics.CLOCK_FEED}/#",
                f"topic read {topics.clock_feed_filter(tenant_id)}"]
    tenant_prefix = f"{topics.PREFIX}/{tenant_id}/"
    return [f"user {device_username(tenant_id, device_id)}",
            f"topic read {tenant_prefix}+/+",
            f"topic write {topics.device_prefix(tenant_id, device_id)}{topics.CLOCK_FEED}/+"]


def _edge_refused(message: str) -> HTTPException:
    return HTTPException(401, message, headers={"WWW-Authenticate": 'Basic realm="nightlink"'})


@router.get("/tenants/{tenant}/devices/lan-accounts", response_model=LanAccounts)
def lan_accounts(tenant: str, store: StoreDep, creds: BasicDep):
    """The tenant's device accounts and ACL lines for an edge node's LAN broker.

    The accounts carry password hashes only. HTTP Basic with the edge node's own MQTT
    username and password; a clock's account is refused."""
    if creds is None:
        raise _edge_refused("Sign in with the edge node's MQTT account (HTTP Basic).")
    device = store.device(creds.username.rpartition(".")[2])
    if (device is None or device["mqtt_username"] != creds.username
            or device["tenant_id"] != tenant
            or not mosquitto_verify(device["mqtt_password_hash"], creds.password)):
        raise _edge_refused(f"The cloud has no active device account {creds.username!r} in "
                            f"tenant {tenant!r} with that password.")
    if device["kind"] != "edge":
        raise HTTPException(403, f"{creds.username} is a {device['kind']}; only an edge node "
                                 "may read its tenant's LAN accounts.")
    if tenant not in store.tenant_ids():
        raise HTTPException(404, f"No tenant {tenant!r}.")
    accounts = [LanAccount(device_id=d["id"], kind=d["kind"], mqtt_username=d["mqtt_username"],
                           mqtt_password_hash=d["mqtt_password_hash"],
                           acl=lan_acl(tenant, d["id"], d["kind"]))
                for d in store.active_devices()
                if d["tenant_id"] == tenant and d["mqtt_password_hash"].startswith("$7$")]
    return LanAccounts(tenant=tenant, accounts=accounts)
