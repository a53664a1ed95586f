"""Devices that publish over MQTT: their credentials and status, what they reported
dropped, the per-stream high-water marks the ingest acknowledges, and dead letters."""

from __future__ import annotations

import hashlib
import time

from nightlink.cloud.store.base import ConflictError, from_json, to_json
from nightlink.shared import codec
from nightlink.sql import Database, IntegrityError

# Status report fields whose every change is kept (status_changes), each from when it was
# first reported: the node's time zone and sleep schedule.
HISTORY_FIELDS = ("timezone", "night_schedule")
CLEARED_BY_ABSENCE = "night_schedule"  # an edge's report without one: none set (noon to noon)

# Dead letters are for reading, not for replay: a device keeps what the cloud has not
# acknowledged and sends it again.
DEAD_LETTER_BYTES = 4096
DEAD_LETTERS_PER_SENDER = 1000
DEAD_LETTERS_KEPT = 100_000


class Devices:
    """The part of `Store` about publishing devices (mixed into `Store`)."""

    db: Database

    # -- devices (authentication of MQTT publishers) ------------------------------------

    def add_device(self, device_id: str, tenant_id: str, kind: str, mqtt_username: str,
                   mqtt_password_hash: str, label: str = "") -> dict:
        codec.device_id(device_id)  # 12 lowercase hex digits
        self.get_tenant(tenant_id)
        # A device revoked in this tenant may be registered again: a new password for the same
        # device (an edge that lost its [sync] section keeps its id, its store and so its
        # sequence numbers). An active one, or another tenant's, stays refused. (Looked up
        # first rather than found by a failed insert: on PostgreSQL that ends the transaction.)
        again = self.db.execute(
            "UPDATE devices SET kind = ?, label = ?, mqtt_username = ?, mqtt_password_hash = ?, "
            "created_at = ?, revoked_at = NULL "
            "WHERE id = ? AND tenant_id = ? AND revoked_at IS NOT NULL",
            (kind, label, mqtt_username, mqtt_password_hash, time.time(), device_id, tenant_id))
        if again:
            return self.device(device_id)
        taken = ConflictError(
            f"The device {device_id} is already provisioned; to give it a new password, "
            "revoke it first (nightlink device revoke), then register it again.")
        if self.db.one("SELECT id FROM devices WHERE id = ?", (device_id,)):
            raise taken
        try:
            self.db.execute(
                "INSERT INTO devices (id, tenant_id, kind, label, mqtt_username, "
                "mqtt_password_hash, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (device_id, tenant_id, kind, label, mqtt_username, mqtt_password_hash,
                 time.time()),
            )
        except IntegrityError:  # registered at this very moment by another request
            raise taken from None
        return self.device(device_id)

    def device(self, device_id: str) -> dict | None:
        return self.db.one("SELECT * FROM devices WHERE id = ? AND revoked_at IS NULL",
                           (device_id,))

    def active_devices(self) -> list[dict]:
        return self.db.query("SELECT * FROM devices WHERE revoked_at IS NULL ORDER BY id")

    def publisher(self, device_id: str) -> dict | None:
        """The device as the ingest sees it, revoked or not, with its tenant's deletion time
        (`tenant_deleted_at`), so a refusal can say why; None if never provisioned."""
        return self.db.one(
            "SELECT d.id, d.tenant_id, d.kind, d.revoked_at, t.deleted_at AS tenant_deleted_at "
            "FROM devices d LEFT JOIN tenants t ON t.id = d.tenant_id WHERE d.id = ?",
            (device_id,))

    def revoke_tenant_devices(self, tenant_id: str, at: float) -> int:
        """Revoke every active device of a tenant (it is being deleted) at time `at`; return
        how many. `cloud broker-files` stops writing their accounts, the ingest refuses them."""
        return self.db.execute(
            "UPDATE devices SET revoked_at = ? WHERE tenant_id = ? AND revoked_at IS NULL",
            (at, tenant_id))

    def restore_tenant_devices(self, tenant_id: str, at: float) -> int:
        """Undo `revoke_tenant_devices(tenant_id, at)`: only the devices revoked at that very
        time (by the tenant's deletion), not those revoked on their own before."""
        return self.db.execute(
            "UPDATE devices SET revoked_at = NULL WHERE tenant_id = ? AND revoked_at = ?",
            (tenant_id, at))

    def highest_seq(self, device_id: str, stream: int) -> int:
        """The highest seq stored for a device's stream (0 when none): what a device has
        really delivered, the bound for what it may report dropped."""
        return int(self.db.scalar(
            "SELECT max(seq) AS n FROM epoch_rows WHERE device = ? AND stream = ?",
            (device_id, stream)) or 0)

    def put_device_status(self, device_id: str, tenant_id: str, doc: dict, *,
                          heard: bool = True) -> None:
        """Keep a device's status report; `updated_at` is when the device was last heard
        from. heard=False (the broker's retained copy, handed out again at every
        subscription): a report already kept leaves that time as it was."""
        update_time = ("updated_at = excluded.updated_at" if heard else
                       "updated_at = CASE WHEN device_status.doc = excluded.doc "
                       "THEN device_status.updated_at ELSE excluded.updated_at END")
        now = time.time()
        with self.db.transaction():
            self._note_changes(device_id, tenant_id, doc, now)
            self.db.execute(
                "INSERT INTO device_status (device, tenant_id, doc, updated_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (device) DO UPDATE SET "
                f"tenant_id = excluded.tenant_id, doc = excluded.doc, {update_time}",
                (device_id, tenant_id, to_json(doc), now))

    def _note_changes(self, device_id: str, tenant_id: str, doc: dict, now: float) -> None:
        """A status report naming another zone or sleep schedule than the node's last one
        (HISTORY_FIELDS): the change is kept, from now on (a field's first change also keeps
        the value before it, since forever), so the nights before it stay as they were."""
        before = None
        for name in HISTORY_FIELDS:
            value = doc.get(name)
            if name == CLEARED_BY_ABSENCE and value is None:
                value = ""  # an edge leaves its schedule out once the person cleared it
            if not isinstance(value, str) or len(value) > 64 or (
                    not value and name != CLEARED_BY_ABSENCE):
                continue
            last = self.db.one("SELECT value FROM status_changes WHERE tenant_id = ? AND "
                               "device = ? AND field = ? ORDER BY since_ms DESC LIMIT 1",
                               (tenant_id, device_id, name))
            if last is None:
                if before is None:
                    row = self.db.one("SELECT doc FROM device_status WHERE device = ? AND "
                                      "tenant_id = ?", (device_id, tenant_id))
                    before = from_json(row["doc"]) if row else {}
                    before = before if isinstance(before, dict) else {}
                # the first value a node reports holds since forever: no change yet
                old = before.get(name)
                if not isinstance(old, str) or not 0 < len(old) <= 64 or old == value:
                    continue
                # two ingest workers may see the same first change: one row of it
                self.db.execute("INSERT INTO status_changes (tenant_id, device, field, "
                                "since_ms, value) VALUES (?, ?, ?, 0, ?) ON CONFLICT "
                                "(tenant_id, device, field, since_ms) DO NOTHING",
                                (tenant_id, device_id, name, old))
            elif last["value"] == value:
                continue
            self.db.execute("INSERT INTO status_changes (tenant_id, device, field, since_ms, "
                            "value) VALUES (?, ?, ?, ?, ?) ON CONFLICT (tenant_id, device, "
                            "field, since_ms) DO UPDATE SET value = excluded.value",
                            (tenant_id, device_id, name, int(now * 1000), value))

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
        return {**from_json(row["doc"]), "updated_at": row["updated_at"]} if row else None


    # -- dead letters -----------------------------------------------------------------------

    def dead_letter(self, topic: str, reason: str, payload: bytes | None, *,
                    tenant_id: str | None = None, device: str | None = None,
                    keep: int = DEAD_LETTERS_PER_SENDER,
                    keep_all: int = DEAD_LETTERS_KEPT) -> None:
        """Keep a refused message for the operator, bounded: at most DEAD_LETTER_BYTES of its
        payload with its full length and SHA-256 (enough to tell two apart and to match one
        against a device's outbox), the topic and reason cut to a readable size. Retention
        is a cap, not an age: the newest `keep` per sender (tenant and device, either may
        be unknown) and the newest `keep_all` overall stay, older ones are deleted."""
        size = sha = None
        if payload is not None:
            payload = bytes(payload)
            size, sha = len(payload), hashlib.sha256(payload).hexdigest()
            payload = payload[:DEAD_LETTER_BYTES]
        with self.db.transaction():
            self.db.execute(
                "INSERT INTO dead_letters (received_at, topic, tenant_id, device, reason, "
                "payload, payload_size, payload_sha256) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (time.time(), _cut(topic, 512), tenant_id and _cut(tenant_id, 64),
                 device and _cut(device, 64), _cut(reason, 1024), payload, size, sha))
            sender, args = [], []
            for column, value in (("tenant_id", tenant_id), ("device", device)):
                sender.append(f"{column} IS NULL" if value is None else f"{column} = ?")
                args += [] if value is None else [_cut(value, 64)]
            where = " AND ".join(sender)
            for clause, params, limit in ((f"WHERE {where}", args, keep), ("", [], keep_all)):
                cutoff = self.db.scalar(
                    f"SELECT id FROM dead_letters {clause} ORDER BY id DESC LIMIT 1 OFFSET ?",
                    (*params, limit))
                if cutoff is not None:
                    self.db.execute(f"DELETE FROM dead_letters {clause or 'WHERE 1 = 1'} "
                                    "AND id <= ?", (*params, cutoff))

    def dead_letter_bytes(self) -> int:
        """Bytes the dead letters' payloads take in the table."""
        return int(self.db.scalar(
            "SELECT coalesce(sum(length(payload)), 0) AS n FROM dead_letters") or 0)

    def dead_letters(self, limit: int = 100) -> list[dict]:
        return self.db.query("SELECT * FROM dead_letters ORDER BY id DESC LIMIT ?", (limit,))

    def count_dead_letters(self) -> int:
        return int(self.db.scalar("SELECT count(*) AS n FROM dead_letters") or 0)


    # -- acknowledgements ---------------------------------------------------------------------

    def advance_hwm(self, device: str, stream: int) -> int:
        """Move the device/stream high-water mark over every contiguous stored seq; return it.

        Sequence numbers start at 1, so an empty stream's mark is 0. Rows the device
        reported dropped count as accounted for, but only up to the highest seq stored for
        it (a clamp, applied here rather than when the report arrives, because a device
        reports its drops before it sends the rows above them): the mark never passes a
        row the cloud has not seen, whatever a report claims.
        """
        with self.db.transaction():
            row = self.db.one("SELECT hwm FROM acks WHERE device = ? AND stream = ?",
                              (device, stream))
            hwm = row["hwm"] if row else 0
            top = self.highest_seq(device, stream)
            dropped = [(r["first_seq"], min(r["last_seq"], top)) for r in self.db.query(
                "SELECT first_seq, last_seq FROM dropped_ranges WHERE device = ? AND stream = ? "
                "AND last_seq > ? AND first_seq <= ? ORDER BY first_seq",
                (device, stream, hwm, top))]

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

    def forget_device_marks(self, device: str) -> None:
        """Drop a device's acknowledgement marks (its tenant is purged)."""
        self.db.execute("DELETE FROM acks WHERE device = ?", (device,))

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


def _cut(text: str, limit: int) -> str:
    """text, shortened to limit characters with a mark that it was."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


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
