"""Sites and the directory that finds them: what a tier gives the Nightscout APIs.

A site is one Nightscout: its collections, its subjects (access tokens with roles) and its
settings. The edge node has one site; the cloud has one per tenant. A `Directory` finds a site
by the key in the URL (`/t/{key}/…`, or a subdomain the cloud rewrites to it) and, at the root
URL where apps that replace the URL's path send everything, by the credential alone: every API
secret and access token belongs to exactly one site.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from nightlink.nightscout import auth
from nightlink.nightscout.store import DocumentStore, Subjects
from nightlink.shared import units

# The alarm thresholds (mg/dL) status.json reports, which follower apps colour and alarm by:
# the consensus levels the desk clock and the cloud's alerts use (urgent low below 54, high
# above 250, in range 70-180), not Nightscout's own defaults (55, 260), so that a 54 is urgent
# and a 255 alarms everywhere alike.
THRESHOLDS = {"bgHigh": units.VERY_HIGH, "bgTargetTop": units.HIGH,
              "bgTargetBottom": units.LOW, "bgLow": units.VERY_LOW}


@dataclass
class Site:
    """One Nightscout site."""

    key: str
    name: str
    docs: DocumentStore
    subjects: Subjects
    units: str = "mg/dl"  # Nightscout's spelling: "mg/dl" or "mmol"
    public_read: bool = False
    base_url: str = ""
    thresholds: dict = field(default_factory=lambda: dict(THRESHOLDS))
    stale_minutes: tuple[int, int] = (15, 30)

    def default_grant(self) -> auth.Grant:
        """What anyone may do without credentials."""
        roles = ("readable",) if self.public_read else ("denied",)
        return auth.Grant(self.key, "anonymous", auth.Permissions.of_roles(roles), "anonymous",
                          roles=roles)

    def unknown_token_grant(self) -> auth.Grant | None:
        """What a token nobody has gets here: on a site everyone may read, what anyone may do
        (as Nightscout drops a token no subject has: a watch face sending a mistyped secret's
        hash, a URL whose token an app garbles; still counted as a guess by the caller);
        elsewhere None, a refusal. HTTP and socket.io both ask this."""
        return self.default_grant() if self.public_read else None


class Directory(Protocol):
    """How the APIs find sites and check credentials; the edge and the cloud implement it."""

    jwt_secret: str
    version: str  # Nightlink's, reported beside the Nightscout API version
    storage_name: str  # "sqlite" or "postgresql", for API v3's status

    def site(self, key: str) -> Site | None:
        """The site with this key, None when there is none (or it is gone)."""

    def default_site(self) -> Site | None:
        """The site of the root URL when no credential names one (the edge's only site)."""

    def credential(self, presented: str, key: str | None) -> auth.Grant | None:
        """The grant of an API secret hash or access token, on the site `key` or (None) on
        whichever site it belongs to; None when it is not valid there."""

    def bearer(self, token: str, key: str | None) -> auth.Grant | None:
        """The grant of a Bearer token the tier issues itself (the cloud's sign-in tokens)."""

    def dead_letter(self, site_key: str, source: str, reason: str, payload: bytes) -> None:
        """Keep a refused upload with the reason, for the operator."""
