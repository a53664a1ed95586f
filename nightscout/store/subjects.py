"""Subjects: named holders of access tokens with Nightscout roles, one table for every site.

A token is shown once, when it is made; the table keeps SHA-256 hashes of the token and of
its SHA-1 (some clients send the SHA-1 of a token in the api-secret header).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from nightlink.errors import has_control_chars
from nightlink.nightscout import auth
from nightlink.shared.apisecret import api_secret_hash
from nightlink.sql import Database

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


@dataclass
class Subject:
    """A named holder of an access token and its roles."""

    id: int
    site_key: str
    name: str
    roles: tuple[str, ...]
    notes: str = ""
    created_at: int = 0
    token_hash: str = ""

    def derived_token(self, secret_sha1: str | None) -> str | None:
        """The subject's token when it was made the Nightscout way from this API secret (see
        auth.derived_access_token), which the holder of the secret may read again."""
        if not secret_sha1:
            return None
        token = auth.derived_access_token(self.name, secret_sha1, self.id)
        return token if auth.kept_hash(token) == self.token_hash else None

    def public(self) -> dict:
        return {"_id": str(self.id), "name": self.name, "roles": list(self.roles),
                "notes": self.notes, "created_at": self.created_at}


class Subjects:
    """A site's subjects, kept with hashes of their tokens (a token is shown once)."""

    def __init__(self, db: Database, site_key: str):
        self.db = db
        self.site_key = site_key

    def create(self, name: str, roles: list[str], notes: str = "",
               secret_sha1: str | None = None) -> tuple[Subject, str]:
        """A new subject and its access token: random, shown only now; or, when it is made
        with the API secret (its SHA-1 hex given), derived from it as Nightscout does."""
        unknown = [r for r in roles if r not in auth.ROLES]
        if unknown:
            raise ValueError(f"{unknown[0]!r} is not a role; use one of "
                             f"{', '.join(auth.ROLES)}.")
        if not name.strip() or len(name) > 64 or has_control_chars(name):
            raise ValueError("A subject needs a name of 1 to 64 characters on one line, "
                             "without control characters.")
        token = auth.new_access_token(name)
        now = int(time.time() * 1000)
        rows = self.db.query(
            f"INSERT INTO {SUBJECTS_TABLE} (tenant_id, name, roles, notes, token_hash, "
            "token_sha1_hash, created_at) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (self.site_key, name.strip(), json.dumps(roles), notes[:500],
             auth.kept_hash(token), auth.kept_hash(api_secret_hash(token)), now))
        subject_id = int(rows[0]["id"])
        if secret_sha1:
            token = auth.derived_access_token(name.strip(), secret_sha1, subject_id)
            self.db.execute(
                f"UPDATE {SUBJECTS_TABLE} SET token_hash = ?, token_sha1_hash = ? WHERE id = ?",
                (auth.kept_hash(token), auth.kept_hash(api_secret_hash(token)), subject_id))
        return Subject(subject_id, self.site_key, name.strip(), tuple(roles), notes, now,
                       auth.kept_hash(token)), token

    def list(self) -> list[Subject]:
        rows = self.db.query(
            f"SELECT * FROM {SUBJECTS_TABLE} WHERE tenant_id = ? AND revoked_at IS NULL "
            "ORDER BY id", (self.site_key,))
        return [_subject(r) for r in rows]

    def revoke(self, subject_id: int) -> bool:
        return bool(self.db.execute(
            f"UPDATE {SUBJECTS_TABLE} SET revoked_at = ? WHERE tenant_id = ? AND id = ? "
            "AND revoked_at IS NULL", (int(time.time() * 1000), self.site_key, subject_id)))

    def revoke_named(self, name: str) -> int:
        """Revoke the subjects of one name (a clock's own read token, `clock-<id>`)."""
        return self.db.execute(
            f"UPDATE {SUBJECTS_TABLE} SET revoked_at = ? WHERE tenant_id = ? AND name = ? "
            "AND revoked_at IS NULL", (int(time.time() * 1000), self.site_key, name))

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
                   int(r["created_at"]), r["token_hash"])


def find_token(db: Database, presented: str) -> Subject | None:
    """The subject whose token (or the token's SHA-1) is presented, on any site."""
    kept = auth.kept_hash(presented)
    rows = db.query(
        f"SELECT * FROM {SUBJECTS_TABLE} WHERE (token_hash = ? OR token_sha1_hash = ?) "
        "AND revoked_at IS NULL LIMIT 1", (kept, kept))
    return _subject(rows[0]) if rows else None
