"""Who may reach which tenant: the one place the cloud decides it.

Every door asks `resolve_access()`: the REST API's dependencies (`deps.py`), the portal, the
live WebSocket and the Nightscout site of a member's sign-in token. A tenant the caller may
not see answers None, and each door refuses as if the tenant did not exist, so tenants
cannot be discovered by probing.
"""

from __future__ import annotations

from dataclasses import dataclass

from nightlink.cloud.store import NotFoundError, Store, TenantStore

WRITE_ROLES = ("patient", "admin")
ACT_ROLES = ("patient", "caregiver", "admin")  # who acknowledges alerts and logs treatments


@dataclass
class TenantAccess:
    """Who is asking for which tenant, and what they may do there."""

    tenant_id: str
    data: TenantStore
    role: str  # patient, caregiver, doctor, admin
    user: dict | None = None

    @property
    def can_write(self) -> bool:
        return self.role in WRITE_ROLES


def resolve_access(store: Store, user: dict, tenant_id: str, *,
                   include_deleted: bool = False) -> TenantAccess | None:
    """The signed-in user's access to a tenant, None if they may not see it.

    Administrators reach every tenant (a soft-deleted one too with include_deleted, until it
    is purged); anyone else needs a current membership of a tenant that is not deleted.
    """
    try:
        if user["is_admin"]:
            return TenantAccess(tenant_id, store.tenant(tenant_id, include_deleted=include_deleted),
                                "admin", user)
        data = store.tenant(tenant_id)
    except NotFoundError:
        return None
    role = store.role(tenant_id, user["id"])
    return None if role is None else TenantAccess(tenant_id, data, role, user)


def may_act(store: Store, access: TenantAccess) -> bool:
    """Whether a member may acknowledge alerts and log treatments: not a doctor, nor a
    caregiver invited read-only (`alerts: false`, docs/sharing.md)."""
    return access.role in ACT_ROLES and (access.role != "caregiver" or store.member_alerts(
        access.tenant_id, access.user["id"]))
