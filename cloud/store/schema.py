"""The cloud schema as numbered migrations, written once for SQLite and PostgreSQL.

{AUTO_ID}, {BLOB} and {BIGINT} are filled in per backend. Append migrations; never edit
one that has shipped. A tenant is one patient's space, so "patient" in the API is the
tenant; every tenant-owned table carries tenant_id and every query filters on it.
"""

from __future__ import annotations

import json

from nightlink import sql
from nightlink.nightscout import store as ns_store
from nightlink.nightscout.store import SUBJECTS_DDL
from nightlink.sql import Database, Step


def _move_nightscout(db: Database) -> None:
    """Move the four Nightscout tables into the one document table of the Nightscout core,
    keeping each document's `_id`, and read tokens into subjects (role readable)."""
    from nightlink.nightscout import documents

    stamps: dict[str, int] = {}

    def stamp(tenant: str, at: float) -> int:
        stamps[tenant] = max(int(at * 1000), stamps.get(tenant, 0) + 1)
        return stamps[tenant]

    def insert(tenant, coll, oid, ident, dedup, pair, date_ms, kind, value, at, doc):
        s = stamp(tenant, at)
        db.execute(
            f"INSERT INTO {ns_store.TABLE} (tenant_id, coll, oid, identifier, dedup, pair, "
            "date_ms, kind, value, srv_created, srv_modified, valid, doc) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?)",
            (tenant, coll, oid, ident, dedup, pair, int(date_ms), kind or "", value, s, s,
             json.dumps(doc, separators=(",", ":"))))

    for r in db.query("SELECT * FROM entries ORDER BY tenant_id, created_at, id"):
        doc = json.loads(r["doc"])
        oid = doc.pop("_id", None) or documents.entry_oid(r["type"], r["date"])
        insert(r["tenant_id"], "entries", oid, oid, f"{r['type']}|{r['date']}", None,
               r["date"], r["type"], r["sgv"], r["created_at"], doc)
    for r in db.query("SELECT * FROM treatments ORDER BY tenant_id, stored_at, id"):
        doc = json.loads(r["doc"])
        doc.pop("created_at_ms", None)
        oid = doc.pop("_id", None) or documents.new_oid()
        computed = r["identifier"] == _old_treatment_identifier(r["created_at_ms"],
                                                                r["event_type"])
        if computed:
            doc.pop("identifier", None)
        insert(r["tenant_id"], "treatments", oid, oid if computed else r["identifier"], None,
               f"{r['created_at_ms']}|{doc.get('eventType', '')}|" if computed else None,
               r["created_at_ms"], doc.get("eventType", ""), None, r["stored_at"], doc)
    for r in db.query("SELECT * FROM devicestatus ORDER BY tenant_id, stored_at, id"):
        doc = json.loads(r["doc"])
        doc.pop("created_at_ms", None)
        oid = doc.pop("_id", None) or documents.new_oid()
        insert(r["tenant_id"], "devicestatus", oid, oid, None, None, r["created_at_ms"],
               r["device"], None, r["stored_at"], doc)
    for r in db.query("SELECT * FROM profiles ORDER BY tenant_id, stored_at, id"):
        doc = json.loads(r["doc"])
        oid = doc.pop("_id", None) or documents.new_oid()
        insert(r["tenant_id"], "profile", oid, oid, None, None, r["start_ms"], "", None,
               r["stored_at"], doc)
    for r in db.query("SELECT * FROM api_secrets WHERE kind = 'token'"):
        db.execute(
            "INSERT INTO ns_subjects (tenant_id, name, roles, notes, token_hash, created_at, "
            "revoked_at) VALUES (?, ?, ?, '', ?, ?, ?)",
            (r["tenant_id"], r["label"] or "reader", '["readable"]', r["secret_hash"],
             int(r["created_at"] * 1000),
             int(r["revoked_at"] * 1000) if r["revoked_at"] else None))
    db.execute("DELETE FROM api_secrets WHERE kind = 'token'")


def _old_treatment_identifier(created_at_ms: int, event_type: str) -> str:
    """The identifier the cloud gave a treatment without one before migration 7."""
    import hashlib

    return hashlib.sha1(f"treatment:{created_at_ms}:{event_type}".encode()).hexdigest()[:24]


# Append-only, and a number and name never change once a database may hold them: `migrate`
# refuses a database holding a number this list lacks, or has under another name. Number 11
# was once "the zones a tenant's bedside node reported, and since when", withdrawn the same
# day: give the next migration 12, so a database that ran it is not refused.
MIGRATIONS: list[tuple[int, str, list[Step]]] = [
    (1, "tenants, users, roles, audit", [
        """CREATE TABLE tenants (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            public_read INTEGER NOT NULL DEFAULT 0,
            units TEXT NOT NULL DEFAULT 'mg/dl',
            created_at DOUBLE PRECISION NOT NULL,
            deleted_at DOUBLE PRECISION
        )""",
        """CREATE TABLE users (
            id {AUTO_ID},
            email TEXT NOT NULL UNIQUE,
            name TEXT NOT NULL DEFAULT '',
            password_hash TEXT NOT NULL,
            is_admin INTEGER NOT NULL DEFAULT 0,
            created_at DOUBLE PRECISION NOT NULL,
            deleted_at DOUBLE PRECISION
        )""",
        """CREATE TABLE memberships (
            tenant_id TEXT NOT NULL REFERENCES tenants (id),
            user_id {BIGINT} NOT NULL REFERENCES users (id),
            role TEXT NOT NULL,
            granted_by {BIGINT},
            granted_at DOUBLE PRECISION NOT NULL,
            revoked_at DOUBLE PRECISION,
            PRIMARY KEY (tenant_id, user_id)
        )""",
        "CREATE INDEX memberships_user ON memberships (user_id)",
        """CREATE TABLE api_secrets (
            id {AUTO_ID},
            tenant_id TEXT NOT NULL REFERENCES tenants (id),
            secret_hash TEXT NOT NULL UNIQUE,
            kind TEXT NOT NULL,
            label TEXT NOT NULL DEFAULT '',
            created_at DOUBLE PRECISION NOT NULL,
            revoked_at DOUBLE PRECISION
        )""",
        """CREATE TABLE refresh_tokens (
            jti TEXT PRIMARY KEY,
            user_id {BIGINT} NOT NULL REFERENCES users (id),
            expires_at DOUBLE PRECISION NOT NULL,
            revoked_at DOUBLE PRECISION
        )""",
        """CREATE TABLE audit (
            id {AUTO_ID},
            at DOUBLE PRECISION NOT NULL,
            actor_user_id {BIGINT},
            tenant_id TEXT,
            action TEXT NOT NULL,
            detail TEXT NOT NULL DEFAULT '{{}}'
        )""",
        "CREATE INDEX audit_tenant ON audit (tenant_id, at)",
    ]),
    (2, "devices, epoch rows, acks, dead letters", [
        """CREATE TABLE devices (
            id TEXT PRIMARY KEY,
            tenant_id TEXT NOT NULL REFERENCES tenants (id),
            kind TEXT NOT NULL,
            label TEXT NOT NULL DEFAULT '',
            mqtt_username TEXT NOT NULL UNIQUE,
            mqtt_password_hash TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            revoked_at DOUBLE PRECISION
        )""",
        "CREATE INDEX devices_tenant ON devices (tenant_id)",
        """CREATE TABLE epoch_rows (
            tenant_id TEXT NOT NULL,
            device TEXT NOT NULL,
            stream INTEGER NOT NULL,
            boot {BIGINT} NOT NULL,
            seq {BIGINT} NOT NULL,
            epoch {BIGINT} NOT NULL,
            flags INTEGER NOT NULL,
            nfeat INTEGER NOT NULL,
            row_data {BLOB} NOT NULL,
            received_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (device, stream, boot, seq)
        )""",
        "CREATE INDEX epoch_rows_time ON epoch_rows (tenant_id, stream, epoch)",
        "CREATE INDEX epoch_rows_seq ON epoch_rows (device, stream, seq)",
        """CREATE TABLE acks (
            device TEXT NOT NULL,
            stream INTEGER NOT NULL,
            hwm {BIGINT} NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (device, stream)
        )""",
        """CREATE TABLE dead_letters (
            id {AUTO_ID},
            received_at DOUBLE PRECISION NOT NULL,
            topic TEXT NOT NULL,
            tenant_id TEXT,
            device TEXT,
            reason TEXT NOT NULL,
            payload {BLOB}
        )""",
    ]),
    (3, "Nightscout collections", [
        """CREATE TABLE entries (
            id {AUTO_ID},
            tenant_id TEXT NOT NULL REFERENCES tenants (id),
            type TEXT NOT NULL,
            date {BIGINT} NOT NULL,
            sgv INTEGER,
            direction TEXT,
            device TEXT,
            doc TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            UNIQUE (tenant_id, date, type)
        )""",
        "CREATE INDEX entries_tenant_date ON entries (tenant_id, date)",
        # Last-Modified / If-Modified-Since ask for the newest created_at on every read.
        "CREATE INDEX entries_tenant_created ON entries (tenant_id, created_at)",
        """CREATE TABLE treatments (
            id {AUTO_ID},
            tenant_id TEXT NOT NULL REFERENCES tenants (id),
            identifier TEXT NOT NULL,
            created_at_ms {BIGINT} NOT NULL,
            event_type TEXT NOT NULL DEFAULT '',
            doc TEXT NOT NULL,
            stored_at DOUBLE PRECISION NOT NULL,
            UNIQUE (tenant_id, identifier)
        )""",
        "CREATE INDEX treatments_tenant_time ON treatments (tenant_id, created_at_ms)",
        """CREATE TABLE devicestatus (
            id {AUTO_ID},
            tenant_id TEXT NOT NULL REFERENCES tenants (id),
            created_at_ms {BIGINT} NOT NULL,
            device TEXT NOT NULL DEFAULT '',
            doc TEXT NOT NULL,
            stored_at DOUBLE PRECISION NOT NULL
        )""",
        "CREATE INDEX devicestatus_tenant_time ON devicestatus (tenant_id, created_at_ms)",
        """CREATE TABLE profiles (
            id {AUTO_ID},
            tenant_id TEXT NOT NULL REFERENCES tenants (id),
            start_ms {BIGINT} NOT NULL,
            doc TEXT NOT NULL,
            stored_at DOUBLE PRECISION NOT NULL
        )""",
        "CREATE INDEX profiles_tenant ON profiles (tenant_id, start_ms)",
    ]),
    (4, "nights, alerts", [
        """CREATE TABLE nights (
            tenant_id TEXT NOT NULL REFERENCES tenants (id),
            night TEXT NOT NULL,
            doc TEXT NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (tenant_id, night)
        )""",
        """CREATE TABLE alert_settings (
            tenant_id TEXT NOT NULL REFERENCES tenants (id),
            user_id {BIGINT} NOT NULL REFERENCES users (id),
            rule TEXT NOT NULL,
            enabled INTEGER NOT NULL DEFAULT 1,
            threshold DOUBLE PRECISION,
            PRIMARY KEY (tenant_id, user_id, rule)
        )""",
        """CREATE TABLE alerts (
            id {AUTO_ID},
            tenant_id TEXT NOT NULL REFERENCES tenants (id),
            rule TEXT NOT NULL,
            level TEXT NOT NULL,
            at_ms {BIGINT} NOT NULL,
            message TEXT NOT NULL,
            detail TEXT NOT NULL DEFAULT '{{}}',
            acked_by {BIGINT},
            acked_at DOUBLE PRECISION
        )""",
        "CREATE INDEX alerts_tenant_time ON alerts (tenant_id, at_ms)",
    ]),
    (5, "device health reports and rows devices dropped", [
        """CREATE TABLE device_status (
            device TEXT PRIMARY KEY,
            tenant_id TEXT NOT NULL,
            doc TEXT NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL
        )""",
        """CREATE TABLE dropped_ranges (
            device TEXT NOT NULL,
            stream INTEGER NOT NULL,
            first_seq {BIGINT} NOT NULL,
            last_seq {BIGINT} NOT NULL,
            reported_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (device, stream, first_seq)
        )""",
    ]),
    (6, "report settings and the fused-night cache", [
        """CREATE TABLE patient_settings (
            tenant_id TEXT PRIMARY KEY REFERENCES tenants (id),
            tz TEXT NOT NULL DEFAULT 'UTC',
            targets TEXT NOT NULL DEFAULT 'standard',
            report_days INTEGER NOT NULL DEFAULT 14,
            updated_at DOUBLE PRECISION NOT NULL
        )""",
        """CREATE TABLE user_settings (
            user_id {BIGINT} PRIMARY KEY REFERENCES users (id),
            units TEXT NOT NULL DEFAULT 'mg/dL',
            updated_at DOUBLE PRECISION NOT NULL
        )""",
        """CREATE TABLE fused_nights (
            tenant_id TEXT NOT NULL REFERENCES tenants (id),
            night TEXT NOT NULL,
            stamp TEXT NOT NULL,
            doc TEXT NOT NULL,
            computed_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (tenant_id, night)
        )""",
    ]),
    (7, "one Nightscout document table and subjects (the Nightscout core)", [
        *ns_store.DDL,
        *SUBJECTS_DDL,
        _move_nightscout,
        "DROP TABLE entries",
        "DROP TABLE treatments",
        "DROP TABLE devicestatus",
        "DROP TABLE profiles",
    ]),
    (8, "dead letters keep a payload's length and hash; capped per sender", [
        "ALTER TABLE dead_letters ADD COLUMN payload_size {BIGINT}",
        "ALTER TABLE dead_letters ADD COLUMN payload_sha256 TEXT",
        "CREATE INDEX dead_letters_sender ON dead_letters (tenant_id, device, id)",
    ]),
    (9, "sign-up with e-mail verification, invitations, members' alert scope", [
        "ALTER TABLE users ADD COLUMN verified_at DOUBLE PRECISION",
        # Accounts so far were made by an administrator, who vouches for the address.
        "UPDATE users SET verified_at = created_at",
        "ALTER TABLE memberships ADD COLUMN alerts INTEGER NOT NULL DEFAULT 1",
        """CREATE TABLE email_tokens (
            token_hash TEXT PRIMARY KEY,
            user_id {BIGINT} NOT NULL REFERENCES users (id),
            purpose TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            expires_at DOUBLE PRECISION NOT NULL,
            used_at DOUBLE PRECISION
        )""",
        """CREATE TABLE invites (
            id {AUTO_ID},
            tenant_id TEXT NOT NULL REFERENCES tenants (id),
            code_hash TEXT NOT NULL UNIQUE,
            role TEXT NOT NULL,
            alerts INTEGER NOT NULL,
            email TEXT NOT NULL DEFAULT '',
            created_by {BIGINT},
            created_at DOUBLE PRECISION NOT NULL,
            expires_at DOUBLE PRECISION NOT NULL,
            accepted_by {BIGINT},
            accepted_at DOUBLE PRECISION,
            revoked_at DOUBLE PRECISION
        )""",
        "CREATE INDEX invites_tenant ON invites (tenant_id, id)",
    ]),
    (10, "a document synced from an edge node keeps the node's change number", [
        # The edge node that last changed the document and the sequence number of that
        # change (TenantStore.apply_changes): an older change of the same node that arrives
        # later (a resent batch on another ingest worker) is ignored. NULL for documents no
        # node has changed; a deleted row keeps them.
        "ALTER TABLE ns_docs ADD COLUMN src_device TEXT",
        "ALTER TABLE ns_docs ADD COLUMN src_seq {BIGINT}",
    ]),
    (11, "the predicted-low threshold the cloud calibrates for a person without a bedside node", [
        # false alarms a week the person accepts (NULL: the model's default budget)
        "ALTER TABLE patient_settings ADD COLUMN alarm_budget DOUBLE PRECISION",
        """CREATE TABLE alarm_calibrations (
            tenant_id TEXT PRIMARY KEY REFERENCES tenants (id),
            doc TEXT NOT NULL,
            computed_at DOUBLE PRECISION NOT NULL
        )""",
    ]),
    (12, "an alert ends on its own when its condition does", [
        # when (Unix ms) the condition ended; such an alert is also closed (acked_at set,
        # acked_by NULL), so every list of open alerts leaves it out
        "ALTER TABLE alerts ADD COLUMN ended_ms {BIGINT}",
    ]),
    (13, "Web Push subscriptions: alerts reach a locked phone", [
        # one per browser (its push service's endpoint) and tenant; the keys encrypt the
        # messages for that browser alone (RFC 8291); the last delivery's outcome is shown to
        # the person who subscribed
        """CREATE TABLE push_subscriptions (
            id {AUTO_ID},
            tenant_id TEXT NOT NULL REFERENCES tenants (id),
            user_id {BIGINT} NOT NULL REFERENCES users (id),
            endpoint TEXT NOT NULL,
            p256dh TEXT NOT NULL,
            auth TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            ok_at DOUBLE PRECISION,
            error TEXT NOT NULL DEFAULT '',
            error_at DOUBLE PRECISION,
            UNIQUE (tenant_id, endpoint)
        )""",
        "CREATE INDEX push_subscriptions_user ON push_subscriptions (user_id)",
    ]),
    (14, "an open urgent alert is pushed again until someone acknowledges it", [
        # when (Unix ms) the alert was last pushed to locked phones; claimed with a
        # conditional UPDATE, so of several API processes one pushes it
        "ALTER TABLE alerts ADD COLUMN pushed_ms {BIGINT}",
    ]),
    (15, "a pushed alert's notification is replaced once it closes", [
        # when (Unix ms) the news that the pushed alert closed (acknowledged, or ended on its
        # own) went to the locked phones; claimed as pushed_ms is
        "ALTER TABLE alerts ADD COLUMN closed_pushed_ms {BIGINT}",
        # the push endpoint of the browser it was acknowledged on, if it said: that one took
        # its notification off itself and is not told
        "ALTER TABLE alerts ADD COLUMN acked_endpoint TEXT",
    ]),
    (16, "an edge's undone imports: the rows of their boots are gone and kept out", [
        # (device, boot) of an import the edge undid (its status report's `retracted`), and
        # the epochs its rows held (NULL: all): rows of that boot there arriving later are
        # acknowledged and not stored (a boot number given again after the edge's store was
        # put back from an older copy records elsewhere: now)
        """CREATE TABLE retracted_boots (
            tenant_id TEXT NOT NULL,
            device TEXT NOT NULL,
            boot {BIGINT} NOT NULL,
            first_epoch {BIGINT},
            last_epoch {BIGINT},
            retracted_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (device, boot)
        )""",
    ]),
    (17, "a refresh token spent twice ends every token of its sign-in", [
        # the sign-in a refresh token descends from (the jti of its first token; NULL before
        # this migration: its own jti)
        "ALTER TABLE refresh_tokens ADD COLUMN family TEXT",
        "UPDATE refresh_tokens SET family = jti WHERE family IS NULL",
        "CREATE INDEX refresh_tokens_family ON refresh_tokens (family)",
    ]),
    (18, "one API process at a time calibrates a tenant's predicted-low threshold", [
        # held while a calibration runs (claimed_at: Unix s); a claim older than the lease
        # (its process died) may be taken over
        """CREATE TABLE calibration_claims (
            tenant_id TEXT PRIMARY KEY REFERENCES tenants (id),
            claimed_at DOUBLE PRECISION NOT NULL
        )""",
    ]),
    (19, "the time zones and sleep schedules a bedside node reported, each from when", [
        # A node's status report field (`timezone`, `night_schedule`) as of since_ms (Unix
        # ms; 0: since before its first change was seen): the nights before a trip or a
        # change of shifts stay as they were recorded (cloud/zones.py, reports/settings.py).
        """CREATE TABLE status_changes (
            tenant_id TEXT NOT NULL,
            device TEXT NOT NULL,
            field TEXT NOT NULL,
            since_ms {BIGINT} NOT NULL,
            value TEXT NOT NULL,
            PRIMARY KEY (tenant_id, device, field, since_ms)
        )""",
    ]),
]


def migrate(db: Database) -> int:
    """Apply every cloud migration not yet applied; return the schema version."""
    return sql.migrate(db, MIGRATIONS, label="cloud")
