"""Sites and the directory that finds them: what a tier gives the Nightscout APIs.

A site is one Nightscout: its collections, its subjects (access tokens with roles) and its
settings. The edge node has one site; the cloud has one per tenant. A `Directory` finds a site
by the key in the URL (`/t/{key}/…`, or a subdomain the cloud rewrites to it) and, at the root
URL where apps that replace the URL's path send everything, by the credential alone: every API
secret and access token belongs to exactly one site.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Protocol

from nightlink.nightscout import auth
from nightlink.nightscout.store import Database, DocumentStore

SUBJECTS_TABLE = "ns_subjects"
SUBJECTS_DDL = [
    f"""CREATE TABLE {SUBJECTS_TABLE} (
        id {{AUTO_ID}},
        tenant_id TEXT NOT NULL,
        name TEXT NOT NULL,
        roles TEXT NOT NULL,
        notes TEXT NOT NULL DEFAULT '',
        token_hash TEXT NOT NULL UNIQUE,
        token_sha1_hash TEXT UNIQUE,
        created_at {{BIGINT}} NOT NULL,
        revoked_at {{BIGINT}}
    )""",
    f"CREATE INDEX ns_subjects_tenant ON {SUBJECTS_TABLE} (tenant_id)",
]
# Nightscout's default alarm thresholds (mg/dL), as status.json reports them.
THRESHOLDS = {"bgHigh": 260, "bgTargetTop": 180, "bgTargetBottom": 70, "bgLow": 55}


@dataclass
class Subject:
    """A named holder of an access token and its roles."""

    id: int
    site_key: str
    name: str
    roles: tuple[str, ...]
    notes: str = ""
    created_at: int = 0

    def public(self) -> dict:
        return {"_id": str(self.id), "name": self.name, "roles": list(self.roles),
                "notes": self.notes, "created_at": self.created_at}


class Subjects:
    """A site's subjects, kept with hashes of their tokens (a token is shown once)."""

    def __init__(self, db: Database, site_key: str):
        self.db = db
        self.site_key = site_key

    def create(self, name: str, roles: list[str], notes: str = "") -> tuple[Subject, str]:
        """A new subject and its access token (the only time the token is seen)."""
        unknown = [r for r in roles if r not in auth.ROLES]
        if unknown:
            raise ValueError(f"{unknown[0]!r} is not a role; use one of "
                             f"{', '.join(auth.ROLES)}.")
        if not name.strip() or len(name) > 64:
            raise ValueError("A subject needs a name of 1 to 64 characters.")
        token = auth.new_access_token(name)
        now = int(time.time() * 1000)
        rows = self.db.query(
            f"INSERT INTO {SUBJECTS_TABLE} (tenant_id, name, roles, notes, token_hash, "
            "token_sha1_hash, created_at) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (self.site_key, name.strip(), json.dumps(roles), notes[:500],
             auth.kept_hash(token), auth.kept_hash(auth.sha1_hex(token)), now))
        return Subject(int(rows[0]["id"]), self.site_key, name.strip(), tuple(roles), notes,
                       now), token

    def list(self) -> list[Subject]:
        rows = self.db.query(
            f"SELECT * FROM {SUBJECTS_TABLE} WHERE tenant_id = ? AND revoked_at IS NULL "
            "ORDER BY id", (self.site_key,))
        return [_subject(r) for r in rows]

    def revoke(self, subject_id: int) -> bool:
        return bool(self.db.execute(
            f"UPDATE {SUBJECTS_TABLE} SET revoked_at = ? WHERE tenant_id = ? AND id = ? "
            "AND revoked_at IS NULL", (int(time.time() * 1000), self.site_key, subject_id)))

    def revoke_all(self) -> int:
        return self.db.execute(
            f"UPDATE {SUBJECTS_TABLE} SET revoked_at = ? WHERE tenant_id = ? "
            "AND revoked_at IS NULL", (int(time.time() * 1000), self.site_key))


def _subject(r: dict) -> Subject:
    try:
        roles = tuple(str(x) for x in json.loads(r["roles"]))
    except (TypeError, ValueError):
        roles = ()
    return Subject(int(r["id"]), r["tenant_id"], r["name"], roles, r["notes"] or "",
                   int(r["created_at"]))


def find_token(db: Database, presented: str) -> Subject | None:
    """The subject whose token (or the token's SHA-1) is presented, on any site."""
    kept = auth.kept_hash(presented)
    rows = db.query(
        f"SELECT * FROM {SUBJECTS_TABLE} WHERE (token_hash = ? OR token_sha1_hash = ?) "
        "AND revoked_at IS NULL LIMIT 1", (kept, kept))
    return _subject(rows[0]) if rows else None


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
