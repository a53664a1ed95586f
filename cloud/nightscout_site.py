"""The cloud's Nightscout sites: one per tenant, for the Nightscout core's APIs.

A tenant is reached at `/t/{tenant}/…`, at its subdomain (rewritten to that path), or at the
root URL by its credentials: the upload secret (kept as hashes of its SHA-1 and SHA-512
forms), an access token (a subject of the tenant) or a member's sign-in token (a member of
exactly one tenant). Patients and administrators may write; caregivers and doctors read.
"""

from __future__ import annotations

import threading
import time

from nightlink import __version__
from nightlink.cloud import alerts
from nightlink.cloud import auth as cloud_auth
from nightlink.cloud.access import resolve_access
from nightlink.cloud.config import Settings, subdomain_tenant
from nightlink.cloud.store import NotFoundError, Store
from nightlink.nightscout import auth
from nightlink.nightscout.site import Site

SITE_CACHE_S = 5.0
_MEMBER_ROLES = {"patient": ("admin",), "admin": ("admin",), "caregiver": ("readable",),
                 "doctor": ("readable",)}


class CloudDirectory:
    """The Directory of the Nightscout core over the cloud's store."""

    def __init__(self, store: Store, settings: Settings):
        self.store = store
        self.settings = settings
        self.jwt_secret = auth.derived_secret(settings.jwt_secret, "nightscout-jwt")
        self.version = __version__
        self.storage_name = "postgresql" if store.backend == "postgres" else "sqlite"
        self._sites: dict[str, tuple[float, Site | None]] = {}
        self._lock = threading.Lock()
        self.events = None  # the app's hub, for alerts acknowledged over socket.io

    def site(self, key: str) -> Site | None:
        now = time.monotonic()
        with self._lock:
            hit = self._sites.get(key)
            if hit is not None and hit[0] > now:
                return hit[1]
        try:
            tenant = self.store.get_tenant(key)
        except NotFoundError:
            site = None
        else:
            units = "mmol" if str(tenant.get("units") or "").lower().startswith("mmol") \
                else "mg/dl"
            data = self.store.tenant(key)
            site = Site(key, tenant["name"], data.docs, data.subjects, units=units,
                        public_read=tenant["public_read"], base_url=self._base_url(key))
        with self._lock:
            self._sites[key] = (now + SITE_CACHE_S, site)
            if len(self._sites) > 10_000:
                self._sites.clear()
        return site

    def _base_url(self, key: str) -> str:
        base = self.settings.public_base_url.rstrip("/")
        domain = self.settings.tenant_domain.strip(".")
        if domain:
            scheme = base.split("://", 1)[0] if "://" in base else "https"
            return f"{scheme}://{key}.{domain}"
        return f"{base}/t/{key}"

    def forget(self) -> None:
        """Drop cached sites (a tenant's settings changed or it was deleted)."""
        with self._lock:
            self._sites.clear()

    def default_site(self) -> Site | None:
        return None  # at the root URL a credential names the tenant

    def credential(self, presented: str, key: str | None) -> auth.Grant | None:
        found = self.store.api_secret(presented)
        if found is not None and found["kind"] == "api-secret":
            if key is not None and found["tenant_id"] != key or self.site(
                    found["tenant_id"]) is None:
                return None
            return auth.Grant(found["tenant_id"], "api-secret", auth.Permissions(["*"]),
                              "secret", roles=("admin",))
        subject = self.store.find_token(presented)
        if subject is None or key is not None and subject.site_key != key:
            return None
        site = self.site(subject.site_key)
        if site is None:
            return None
        roles = (*subject.roles, *site.default_grant().roles)
        return auth.Grant(site.key, subject.name, auth.Permissions.of_roles(roles), "token",
                          token=presented, roles=subject.roles)

    def bearer(self, token: str, key: str | None) -> auth.Grant | None:
        """A member's sign-in token: their role in the tenant of the URL (or their only one);
        else a site's access token sent as a Bearer (nightscout-tray's token mode), as the
        edge takes it."""
        try:
            claims = cloud_auth.decode(token, self.settings.jwt_secret, "access")
            user = cloud_auth.token_user(self.store, claims)
        except (cloud_auth.AuthError, NotFoundError, ValueError, KeyError):
            return auth.token_only(self.credential(auth.normalise_presented(token), key))
        if key is None:
            tenants = [m["tenant_id"] for m in self.store.visible_tenants(user)]
            if len(tenants) != 1:
                return None
            key = tenants[0]
        access = resolve_access(self.store, user, key)
        if access is None or self.site(key) is None:
            return None
        roles = _MEMBER_ROLES.get(access.role, ("readable",))
        return auth.Grant(key, user["email"], auth.Permissions.of_roles(roles), "member",
                          roles=roles)

    def alarm_acked(self, site_key: str, level: int, group: str, silence_ms: int,
                    grant: auth.Grant) -> int:
        """A Nightscout client acknowledged the site's alarms over socket.io (`ack`: the
        Nightscout web page, AndroidAPS' NSClient, followers): the tenant's open alerts of that
        level and below are acknowledged as in the app, so the family's apps take them off
        their lists too; the audit log names the credential (the API secret or a token's
        subject). Ours are all in the `default` group. The socket calls this only for a
        credential that may acknowledge (`notifications:*:ack`). How many."""
        if group != "default":
            return 0
        acked = 0
        for alert in self.store.tenant(site_key).alerts(limit=200, unacked=True):
            if (level >= 2 or alert["level"] != "urgent") and alerts.acknowledge(
                    self.store, self.events, site_key, alert["id"], user_id=None,
                    via="nightscout", credential=grant.subject):
                acked += 1
        return acked

    def dead_letter(self, site_key: str, source: str, reason: str, payload: bytes) -> None:
        self.store.dead_letter(source, reason, payload, tenant_id=site_key)

    def site_key_for_host(self, host: str) -> str | None:
        """The tenant a Host header names through its subdomain (socket.io at the root)."""
        return subdomain_tenant(host, self.settings.tenant_domain)
