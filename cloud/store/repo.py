"""The cloud repository: one interface over SQLite or PostgreSQL.

`Store` holds what is not any one tenant's (tenants, users, devices for authentication,
dead letters, audit). Everything a tenant owns is reached only through
`Store.tenant(tenant_id)`, a `TenantStore` whose every statement filters on that tenant:
code that holds one tenant's handle cannot read or write another's data.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from nightlink.cloud.store.schema import migrate
from nightlink.nightscout import documents as ns_documents
from nightlink.nightscout import store as ns_store
from nightlink.nightscout.auth import kept_hash
from nightlink.nightscout.query import Cond, Instant
from nightlink.nightscout.store import DocumentStore
from nightlink.shared import codec
from nightlink.sql import Database, IntegrityError, connect

_LOGGER = logging.getLogger(__name__)
ROLES = ("patient", "caregiver", "doctor", "admin")


class NotFoundError(LookupError):
    """The tenant, user or device does not exist (or is not visible to the caller)."""


class ConflictError(ValueError):
    """The write clashes with what is stored (a taken email, slug or device id)."""


def secret_hash(value: str) -> str:
    """How secrets and tokens are kept: SHA-256 of what the client sends, never the value."""
    return kept_hash(value)


def _json(doc) -> str:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class Row:
    """One stored epoch row (one epoch of one stream from one device)."""

    device: str
    stream: int
    boot: int
    seq: int
    epoch: int
    flags: int
    nfeat: int
    row_data: bytes


class Store:
    def __init__(self, db: Database):
        self.db = db
        self.version = migrate(db)
        self.notify = None  # set by the app: Nightscout document changes to the live hub
        self.access_listeners: list = []  # called when who may reach a tenant changes

    def access_changed(self) -> None:
        """Tell the caches of credentials and sites that access changed (grants, secrets,
        tokens, tenants or accounts deleted)."""
        for listener in self.access_listeners:
            listener()

    @classmethod
    def open(cls, url: str) -> Store:
        return cls(connect(url))

    def close(self) -> None:
        self.db.close()

    # -- tenants ------------------------------------------------------------------------

    def create_tenant(self, tenant_id: str, name: str, *, public_read: bool = False) -> dict:
        from nightlink.shared import topics

        topics.check_name("tenant", tenant_id)
        try:
            self.db.execute(
                "INSERT INTO tenants (id, name, public_read, created_at) VALUES (?, ?, ?, ?)",
                (tenant_id, name, int(public_read), time.time()),
            )
        except IntegrityError:
            raise ConflictError(f"The tenant {tenant_id!r} already exists.") from None
        return self.get_tenant(tenant_id)

    def get_tenant(self, tenant_id: str, *, include_deleted: bool = False) -> dict:
        row = self.db.one("SELECT * FROM tenants WHERE id = ?", (tenant_id,))
        if row is None or (row["deleted_at"] and not include_deleted):
            raise NotFoundError(f"No tenant {tenant_id!r}.")
        row["public_read"] = bool(row["public_read"])
        return row

    def set_tenant(self, tenant_id: str, **fields) -> None:
        allowed = {"name", "public_read", "units", "deleted_at"}
        for key, value in fields.items():
            if key not in allowed:
                raise ValueError(f"{key} is not a tenant setting.")
            self.db.execute(f"UPDATE tenants SET {key} = ? WHERE id = ?",
                            (int(value) if key == "public_read" else value, tenant_id))
        self.access_changed()

    def tenant(self, tenant_id: str, *, include_deleted: bool = False) -> TenantStore:
        """The handle for one tenant's data (the tenant must exist; a soft-deleted one only
        with include_deleted, which only administrators get)."""
        self.get_tenant(tenant_id, include_deleted=include_deleted)
        return TenantStore(self.db, tenant_id, self.notify)

    # -- users and roles ----------------------------------------------------------------

    def create_user(self, email: str, password_hash: str, *, name: str = "",
                    is_admin: bool = False) -> dict:
        try:
            self.db.execute(
                "INSERT INTO users (email, name, password_hash, is_admin, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (email.lower(), name, password_hash, int(is_admin), time.time()),
            )
        except IntegrityError:
            raise ConflictError(f"An account for {email} already exists.") from None
        return self.user_by_email(email)

    def user_by_email(self, email: str) -> dict:
        row = self.db.one("SELECT * FROM users WHERE email = ? AND deleted_at IS NULL",
                          (email.lower(),))
        if row is None:
            raise NotFoundError(f"No account for {email}.")
        return row

    def user(self, user_id: int) -> dict:
        row = self.db.one("SELECT * FROM users WHERE id = ? AND deleted_at IS NULL", (user_id,))
        if row is None:
            raise NotFoundError(f"No user {user_id}.")
        return row

    def set_user(self, user_id: int, **fields) -> None:
        for key, value in fields.items():
            if key not in {"name", "password_hash", "deleted_at", "email"}:
                raise ValueError(f"{key} is not a user field.")
            self.db.execute(f"UPDATE users SET {key} = ? WHERE id = ?", (value, user_id))
        self.access_changed()

    def grant(self, tenant_id: str, user_id: int, role: str, *, by: int | None) -> None:
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}.")
        self.get_tenant(tenant_id)
        self.db.execute(
            "INSERT INTO memberships (tenant_id, user_id, role, granted_by, granted_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (tenant_id, user_id) DO UPDATE SET "
            "role = excluded.role, granted_by = excluded.granted_by, "
            "granted_at = excluded.granted_at, revoked_at = NULL",
            (tenant_id, user_id, role, by, time.time()),
        )
        self.access_changed()

    def revoke(self, tenant_id: str, user_id: int) -> bool:
        done = bool(self.db.execute(
            "UPDATE memberships SET revoked_at = ? WHERE tenant_id = ? AND user_id = ? "
            "AND revoked_at IS NULL", (time.time(), tenant_id, user_id)))
        self.access_changed()
        return done

    def role(self, tenant_id: str, user_id: int) -> str | None:
        """The user's current role in the tenant, None if none (or revoked, or deleted)."""
        row = self.db.one(
            "SELECT m.role FROM memberships m JOIN tenants t ON t.id = m.tenant_id "
            "WHERE m.tenant_id = ? AND m.user_id = ? AND m.revoked_at IS NULL "
            "AND t.deleted_at IS NULL", (tenant_id, user_id))
        return row["role"] if row else None

    def memberships(self, user_id: int) -> list[dict]:
        return self.db.query(
            "SELECT m.tenant_id, m.role, t.name FROM memberships m JOIN tenants t "
            "ON t.id = m.tenant_id WHERE m.user_id = ? AND m.revoked_at IS NULL "
            "AND t.deleted_at IS NULL ORDER BY m.tenant_id", (user_id,))

    def visible_tenants(self, user: dict) -> list[dict]:
        """The tenants a user may open, with the role they hold there (admins: every tenant)."""
        if user["is_admin"]:
            return [{"tenant_id": r["id"], "name": r["name"], "role": "admin"} for r in
                    self.db.query("SELECT id, name FROM tenants WHERE deleted_at IS NULL "
                                  "ORDER BY id")]
        return self.memberships(user["id"])

    def members(self, tenant_id: str) -> list[dict]:
        return self.db.query(
            "SELECT u.id AS user_id, u.email, u.name, m.role, m.granted_at FROM memberships m "
            "JOIN users u ON u.id = m.user_id WHERE m.tenant_id = ? AND m.revoked_at IS NULL "
            "AND u.deleted_at IS NULL ORDER BY u.email", (tenant_id,))

    # -- secrets and tokens ---------------------------------------------------------------

    def add_api_secret(self, tenant_id: str, presented: str, *, kind: str = "api-secret",
                       label: str = "") -> None:
        """Keep a credential (the SHA1 hex an uploader sends, or a token) for a tenant."""
        try:
            self.db.execute(
                "INSERT INTO api_secrets (tenant_id, secret_hash, kind, label, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (tenant_id, secret_hash(presented), kind, label, time.time()),
            )
        except IntegrityError:
            raise ConflictError("That secret is already in use.") from None

    def set_api_secret(self, tenant_id: str, secret: str) -> None:
        """Make `secret` the tenant's upload secret (the previous one stops working): kept as
        the hashes of the two forms uploaders send, its SHA-1 and its SHA-512."""
        from nightlink.nightscout.auth import secret_forms

        with self.db.transaction():
            self.revoke_api_secrets(tenant_id, "api-secret")
            for form in secret_forms(secret):
                self.add_api_secret(tenant_id, form, kind="api-secret")

    def api_secret(self, presented: str) -> dict | None:
        """The tenant and kind a presented secret or token belongs to, or None."""
        return self.db.one(
            "SELECT tenant_id, kind, label FROM api_secrets WHERE secret_hash = ? "
            "AND revoked_at IS NULL", (secret_hash(presented),))

    def revoke_api_secrets(self, tenant_id: str, kind: str) -> int:
        n = self.db.execute(
            "UPDATE api_secrets SET revoked_at = ? WHERE tenant_id = ? AND kind = ? "
            "AND revoked_at IS NULL", (time.time(), tenant_id, kind))
        self.access_changed()
        return n

    def add_refresh_token(self, jti: str, user_id: int, expires_at: float) -> None:
        self.db.execute("INSERT INTO refresh_tokens (jti, user_id, expires_at) VALUES (?, ?, ?)",
                        (jti, user_id, expires_at))

    def revoke_refresh_tokens(self, user_id: int) -> int:
        """End every session of a user (password changed, account deleted)."""
        return self.db.execute("UPDATE refresh_tokens SET revoked_at = ? WHERE user_id = ? "
                               "AND revoked_at IS NULL", (time.time(), user_id))

    def use_refresh_token(self, jti: str) -> int | None:
        """Spend a refresh token once: its user id, or None if unknown, used or expired."""
        with self.db.transaction():
            row = self.db.one("SELECT user_id, expires_at, revoked_at FROM refresh_tokens "
                              "WHERE jti = ?", (jti,))
            if row is None or row["revoked_at"] or row["expires_at"] < time.time():
                return None
            self.db.execute("UPDATE refresh_tokens SET revoked_at = ? WHERE jti = ?",
                            (time.time(), jti))
            return row["user_id"]

    # -- audit ------------------------------------------------------------------------------

    def audit(self, action: str, *, actor: int | None = None, tenant_id: str | None = None,
              **detail) -> None:
        self.db.execute(
            "INSERT INTO audit (at, actor_user_id, tenant_id, action, detail) VALUES (?, ?, ?, ?, ?)",
            (time.time(), actor, tenant_id, action, _json(detail)),
        )

    def audit_log(self, tenant_id: str | None = None, limit: int = 200) -> list[dict]:
        if tenant_id is None:
            rows = self.db.query("SELECT * FROM audit ORDER BY id DESC LIMIT ?", (limit,))
        else:
            rows = self.db.query("SELECT * FROM audit WHERE tenant_id = ? ORDER BY id DESC "
                                 "LIMIT ?", (tenant_id, limit))
        for r in rows:
            r["detail"] = json.loads(r["detail"])
        return rows

    # -- devices (authentication of MQTT publishers) ------------------------------------

    def add_device(self, device_id: str, tenant_id: str, kind: str, mqtt_username: str,
                   mqtt_password_hash: str, label: str = "") -> dict:
        codec.device_id(device_id)  # 12 lowercase hex digits
        self.get_tenant(tenant_id)
        try:
            self.db.execute(
                "INSERT INTO devices (id, tenant_id, kind, label, mqtt_username, "
                "mqtt_password_hash, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (device_id, tenant_id, kind, label, mqtt_username, mqtt_password_hash,
                 time.time()),
            )
        except IntegrityError:
            raise ConflictError(f"The device {device_id} is already provisioned.") from None
        return self.device(device_id)

    def device(self, device_id: str) -> dict | None:
        return self.db.one("SELECT * FROM devices WHERE id = ? AND revoked_at IS NULL",
                           (device_id,))

    def active_devices(self) -> list[dict]:
        return self.db.query("SELECT * FROM devices WHERE revoked_at IS NULL ORDER BY id")

    def put_device_status(self, device_id: str, tenant_id: str, doc: dict) -> None:
        self.db.execute(
            "INSERT INTO device_status (device, tenant_id, doc, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (device) DO UPDATE SET tenant_id = excluded.tenant_id, "
            "doc = excluded.doc, updated_at = excluded.updated_at",
            (device_id, tenant_id, _json(doc), time.time()))

    def add_dropped(self, device_id: str, stream: int, ranges: list[tuple[int, int]]) -> None:
        """Rows a device reports it dropped (outbox full): the marks step over them."""
        with self.db.transaction():
            for first, last in ranges:
                self.db.execute(
                    "INSERT INTO dropped_ranges (device, stream, first_seq, last_seq, "
                    "reported_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (device, stream, first_seq) "
                    "DO UPDATE SET last_seq = excluded.last_seq",
                    (device_id, stream, int(first), int(last), time.time()))

    def dropped_count(self, device_id: str) -> int:
        return int(self.db.scalar(
            "SELECT coalesce(sum(last_seq - first_seq + 1), 0) AS n FROM dropped_ranges "
            "WHERE device = ?", (device_id,)) or 0)

    def device_status(self, device_id: str) -> dict | None:
        row = self.db.one("SELECT doc, updated_at FROM device_status WHERE device = ?",
                          (device_id,))
        return {**json.loads(row["doc"]), "updated_at": row["updated_at"]} if row else None

    # -- dead letters -----------------------------------------------------------------------

    def dead_letter(self, topic: str, reason: str, payload: bytes | None, *,
                    tenant_id: str | None = None, device: str | None = None) -> None:
        self.db.execute(
            "INSERT INTO dead_letters (received_at, topic, tenant_id, device, reason, payload) "
            "VALUES (?, ?, ?, ?, ?, ?)", (time.time(), topic, tenant_id, device, reason, payload))

    def dead_letters(self, limit: int = 100) -> list[dict]:
        return self.db.query("SELECT * FROM dead_letters ORDER BY id DESC LIMIT ?", (limit,))

    def count_dead_letters(self) -> int:
        return int(self.db.scalar("SELECT count(*) AS n FROM dead_letters") or 0)

    # -- acknowledgements ---------------------------------------------------------------------

    def advance_hwm(self, device: str, stream: int) -> int:
        """Move the device/stream high-water mark over every contiguous stored seq; return it.

        Sequence numbers start at 1, so an empty stream's mark is 0.
        """
        with self.db.transaction():
            row = self.db.one("SELECT hwm FROM acks WHERE device = ? AND stream = ?",
                              (device, stream))
            hwm = row["hwm"] if row else 0
            # Rows the device reported as dropped count as accounted for.
            dropped = [(r["first_seq"], r["last_seq"]) for r in self.db.query(
                "SELECT first_seq, last_seq FROM dropped_ranges WHERE device = ? AND stream = ? "
                "AND last_seq > ? ORDER BY first_seq", (device, stream, hwm))]

            def skip_dropped(mark: int) -> int:
                for first, last in dropped:
                    if first <= mark + 1 <= last:
                        mark = last
                return mark

            hwm = skip_dropped(hwm)
            more = True
            while more:
                seqs = [r["seq"] for r in self.db.query(
                    "SELECT seq FROM epoch_rows WHERE device = ? AND stream = ? AND seq > ? "
                    "ORDER BY seq LIMIT 5000", (device, stream, hwm))]
                more = len(seqs) == 5000
                for s in seqs:
                    hwm = skip_dropped(hwm)
                    if s == hwm + 1:
                        hwm = s
                    elif s > hwm + 1:  # a gap: the mark stops below it
                        more = False
                        break
                hwm = skip_dropped(hwm)
            self.db.execute(
                "INSERT INTO acks (device, stream, hwm, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (device, stream) DO UPDATE SET hwm = CASE WHEN excluded.hwm > "
                "acks.hwm THEN excluded.hwm ELSE acks.hwm END, updated_at = excluded.updated_at",
                (device, stream, hwm, time.time()))
            # Another worker may have moved it further meanwhile: never report less.
            return self.hwm(device, stream)

    def hwm(self, device: str, stream: int) -> int:
        row = self.db.one("SELECT hwm FROM acks WHERE device = ? AND stream = ?", (device, stream))
        return row["hwm"] if row else 0

    def missing_seqs(self, device: str, stream: int, limit: int = 1000) -> list[tuple[int, int]]:
        """Gaps above the high-water mark, as (first, last) seq ranges, to ask again for
        (rows the device reported dropped are not asked for)."""
        hwm = self.hwm(device, stream)
        seqs = [r["seq"] for r in self.db.query(
            "SELECT seq FROM epoch_rows WHERE device = ? AND stream = ? AND seq > ? "
            "ORDER BY seq LIMIT ?", (device, stream, hwm, limit))]
        dropped = [(r["first_seq"], r["last_seq"]) for r in self.db.query(
            "SELECT first_seq, last_seq FROM dropped_ranges WHERE device = ? AND stream = ? "
            "AND last_seq > ? ORDER BY first_seq", (device, stream, hwm))]
        gaps, prev = [], hwm
        for s in seqs:
            if s > prev + 1:
                gaps += _minus((prev + 1, s - 1), dropped)
            prev = s
        return gaps


class TenantStore:
    """One tenant's data. Every statement carries `tenant_id = ?` with this tenant."""

    def __init__(self, db: Database, tenant_id: str, notify=None):
        self.db = db
        self.tenant_id = tenant_id
        self.notify = notify  # the live hub's hook for Nightscout document changes

    # -- epoch rows -------------------------------------------------------------------------

    def put_rows(self, records: Iterable[codec.Record]) -> int:
        """Store every row of these records (one per epoch); return how many were new."""
        now = time.time()
        rows = []
        for rec in records:
            dev = codec.device_name(rec.device)
            for i, row in enumerate(rec.rows):
                rows.append((self.tenant_id, dev, rec.stream, rec.boot, rec.seq + i,
                             rec.epoch + i, rec.flags, rec.nfeat, pack_row(rec.stream, row), now))
        if not rows:
            return 0
        with self.db.transaction():
            return self.db.executemany(
                "INSERT INTO epoch_rows (tenant_id, device, stream, boot, seq, epoch, flags, "
                "nfeat, row_data, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (device, stream, boot, seq) DO NOTHING", rows)

    def count_rows(self, stream: int | None = None) -> int:
        if stream is None:
            return int(self.db.scalar("SELECT count(*) AS n FROM epoch_rows WHERE tenant_id = ?",
                                      (self.tenant_id,)) or 0)
        return int(self.db.scalar(
            "SELECT count(*) AS n FROM epoch_rows WHERE tenant_id = ? AND stream = ?",
            (self.tenant_id, stream)) or 0)

    def rows(self, stream: int, start_epoch: int, end_epoch: int, *, after: tuple | None = None,
             limit: int = 1000) -> list[Row]:
        """Rows of one stream in [start, end), ordered by (epoch, device, boot, seq); `after`
        is the last (epoch, device, boot, seq) of the previous page (cursor pagination)."""
        sql = ("SELECT device, stream, boot, seq, epoch, flags, nfeat, row_data FROM epoch_rows "
               "WHERE tenant_id = ? AND stream = ? AND epoch >= ? AND epoch < ?")
        args: list = [self.tenant_id, stream, start_epoch, end_epoch]
        if after is not None:
            e, d, b, s = after
            sql += (" AND (epoch > ? OR (epoch = ? AND (device > ? OR (device = ? AND "
                    "(boot > ? OR (boot = ? AND seq > ?))))))")
            args += [e, e, d, d, b, b, s]
        sql += " ORDER BY epoch, device, boot, seq LIMIT ?"
        args.append(limit)
        return [Row(r["device"], r["stream"], r["boot"], r["seq"], r["epoch"], r["flags"],
                    r["nfeat"], bytes(r["row_data"])) for r in self.db.query(sql, args)]

    # -- Nightscout documents (the Nightscout core's store) ----------------------------------

    @property
    def docs(self) -> DocumentStore:
        """This tenant's Nightscout collections; every write follows the core's rules."""
        return DocumentStore(self.db, self.tenant_id, notify=self.notify)

    def add_documents(self, coll: str, items: Iterable[dict], *, mode: str = "keep"
                      ) -> tuple[list[dict], int]:
        """Normalise and store documents of a collection; (new documents, the others).

        mode "keep" leaves a matching stored document as it is (what the MQTT ingest and
        importers want: an app's upload is richer than a reading re-derived from features).
        Raises nightscout DocumentError for an invalid document.
        """
        now = int(time.time() * 1000)
        normalized = [ns_documents.normalize(coll, d, now) for d in items]
        outcomes = self.docs.put(normalized, mode=mode)
        stored = [o.row.v1() for o in outcomes if o.action == "created"]
        return stored, len(outcomes) - len(stored)

    def add_entries(self, docs: Iterable[dict]) -> tuple[list[dict], int]:
        """Store entries (an sgv equal to one stored less than a minute away is the same
        reading); return (new entries, duplicates)."""
        return self.add_documents("entries", docs)

    def entries(self, *, count: int = 10, type_: str | None = None,
                where: Sequence[tuple[str, str, object]] = ()) -> list[dict]:
        """Entries newest first; `where` holds (date or sgv, operator, value) conditions."""
        query = ns_store.between("entries", kind=type_)
        for column, op, value in where:
            if column not in _ENTRY_COLUMNS or op not in _OPS:
                raise ValueError(f"{column} {op} is not a supported filter.")
            operand = Instant(int(value)) if column == "date" else float(value)
            query.add(Cond(column, _OPS[op], operand))
        return [r.v1() for r in self.docs.find("entries", query, count=count)]

    def documents(self, coll: str, *, count: int = 10) -> list[dict]:
        """The newest documents of a Nightscout collection (exports, tests)."""
        return [r.v1() for r in self.docs.find(coll, None, count=count)]

    # -- devices, nights, alerts ------------------------------------------------------------

    def devices(self) -> list[dict]:
        return self.db.query(
            "SELECT id, kind, label, mqtt_username, created_at, revoked_at FROM devices "
            "WHERE tenant_id = ? ORDER BY id", (self.tenant_id,))

    def revoke_device(self, device_id: str) -> bool:
        return bool(self.db.execute(
            "UPDATE devices SET revoked_at = ? WHERE tenant_id = ? AND id = ? "
            "AND revoked_at IS NULL", (time.time(), self.tenant_id, device_id)))

    def put_night(self, night: str, doc: dict) -> None:
        self.db.execute(
            "INSERT INTO nights (tenant_id, night, doc, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (tenant_id, night) DO UPDATE SET doc = excluded.doc, "
            "updated_at = excluded.updated_at", (self.tenant_id, night, _json(doc), time.time()))

    def nights(self, *, limit: int = 60) -> list[dict]:
        rows = self.db.query("SELECT night, doc, updated_at FROM nights WHERE tenant_id = ? "
                             "ORDER BY night DESC LIMIT ?", (self.tenant_id, limit))
        return [{"night": r["night"], "updated_at": r["updated_at"], **json.loads(r["doc"])}
                for r in rows]

    def night(self, night: str) -> dict:
        row = self.db.one("SELECT doc FROM nights WHERE tenant_id = ? AND night = ?",
                          (self.tenant_id, night))
        if row is None:
            raise NotFoundError(f"No night {night}.")
        return json.loads(row["doc"])

    def add_alert(self, rule: str, level: str, at_ms: int, message: str, **detail) -> int:
        rows = self.db.query(
            "INSERT INTO alerts (tenant_id, rule, level, at_ms, message, detail) "
            "VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
            (self.tenant_id, rule, level, at_ms, message, _json(detail)))
        return int(rows[0]["id"])

    def alerts(self, *, limit: int = 100, unacked: bool = False) -> list[dict]:
        sql = "SELECT * FROM alerts WHERE tenant_id = ?"
        if unacked:
            sql += " AND acked_at IS NULL"
        rows = self.db.query(sql + " ORDER BY at_ms DESC, id DESC LIMIT ?",
                             (self.tenant_id, limit))
        for r in rows:
            r["detail"] = json.loads(r["detail"])
        return rows

    def ack_alert(self, alert_id: int, user_id: int) -> bool:
        return bool(self.db.execute(
            "UPDATE alerts SET acked_by = ?, acked_at = ? WHERE tenant_id = ? AND id = ? "
            "AND acked_at IS NULL", (user_id, time.time(), self.tenant_id, alert_id)))

    def alert_settings(self, user_id: int) -> dict[str, dict]:
        rows = self.db.query("SELECT rule, enabled, threshold FROM alert_settings "
                             "WHERE tenant_id = ? AND user_id = ?", (self.tenant_id, user_id))
        return {r["rule"]: {"enabled": bool(r["enabled"]), "threshold": r["threshold"]}
                for r in rows}

    def set_alert_setting(self, user_id: int, rule: str, enabled: bool,
                          threshold: float | None) -> None:
        self.db.execute(
            "INSERT INTO alert_settings (tenant_id, user_id, rule, enabled, threshold) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (tenant_id, user_id, rule) DO UPDATE SET "
            "enabled = excluded.enabled, threshold = excluded.threshold",
            (self.tenant_id, user_id, rule, int(enabled), threshold))

    # -- data rights --------------------------------------------------------------------------

    def purge(self) -> int:
        """Delete every row this tenant owns (after the 30-day soft-delete period)."""
        n = 0
        with self.db.transaction():
            for table in ("epoch_rows", ns_store.TABLE, "ns_subjects", "nights", "alerts",
                          "alert_settings", "memberships", "api_secrets", "devices",
                          "fused_nights", "patient_settings"):
                n += self.db.execute(f"DELETE FROM {table} WHERE tenant_id = ?",
                                     (self.tenant_id,))
        return n


def _minus(rng: tuple[int, int], holes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of the seq range rng not covered by any of holes."""
    out = [rng]
    for a, b in holes:
        nxt = []
        for lo, hi in out:
            if b < lo or a > hi:
                nxt.append((lo, hi))
                continue
            if lo < a:
                nxt.append((lo, a - 1))
            if b < hi:
                nxt.append((b + 1, hi))
        out = nxt
    return out


_ENTRY_COLUMNS = {"date", "sgv"}
_OPS = {">=": "$gte", ">": "$gt", "<=": "$lte", "<": "$lt", "=": "$eq", "!=": "$ne"}


def pack_row(stream: int, row: Sequence[int]) -> bytes:
    """One row's raw values in the wire layout (no header, no CRC)."""
    import struct

    from nightlink.shared import features as F

    return struct.pack(F.row_format(stream, len(row)), *row)


def unpack_row(stream: int, nfeat: int, data: bytes) -> tuple[int, ...]:
    import struct

    from nightlink.shared import features as F

    return struct.unpack(F.row_format(stream, nfeat), data)
