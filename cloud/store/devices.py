"""Devices that publish over MQTT: their credentials and status, what they reported
dropped, the per-stream high-water marks the ingest acknowledges, and dead letters."""

from __future__ import annotations

import time

from nightlink.cloud.store.base import ConflictError, from_json, to_json
from nightlink.shared import codec
from nightlink.sql import Database, IntegrityError


class Devices:
    """The part of `Store` about publishing devices (mixed into `Store`)."""

    db: Database

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
            (device_id, tenant_id, to_json(doc), time.time()))

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
