"""The outbox: this node's records waiting for the cloud's acknowledgement, what the sync
sends and resends, and the quota that drops the least important rows first (counted)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from nightlink.shared import features
from nightlink.sql import Database

_LOGGER = logging.getLogger(__name__)
_ITEM = ("SELECT o.record_id, o.priority, r.stream, r.device, r.boot, r.seq, r.blob "
         "FROM outbox o JOIN records r ON r.id = o.record_id")


@dataclass(frozen=True)
class OutboxItem:
    record_id: int
    priority: int
    stream: int
    device: str
    boot: int
    seq: int
    blob: bytes


class Outbox:
    db: Database

    def outbox(self, limit: int = 100) -> list[OutboxItem]:
        """Records waiting to be sent: highest priority first, then oldest."""
        rows = self.db.query(_ITEM + " ORDER BY o.priority, o.record_id LIMIT ?", (limit,))
        return [OutboxItem(**row) for row in rows]

    def outbox_size(self) -> int:
        return self.db.scalar("SELECT count(*) AS n FROM outbox")

    def mark_sent(self, record_ids: list[int], at: float) -> None:
        with self.db.transaction():
            self.db.executemany("UPDATE outbox SET sent_at = ?, sent_once = 1 WHERE record_id = ?",
                                [(at, r) for r in record_ids])

    def mark_all_unsent(self) -> None:
        """Whatever was in flight may be lost (a new connection): send every row again."""
        self.db.execute("UPDATE outbox SET sent_at = NULL")

    def due(self, *, resend_after_s: float, now: float, limit: int = 1000,
            max_priority: int | None = None) -> list[OutboxItem]:
        """Rows to send: never sent, or sent longer ago than resend_after_s without an ack.
        Highest priority first, then oldest."""
        sql = _ITEM + " WHERE (o.sent_at IS NULL OR o.sent_at < ?)"
        args: list = [now - resend_after_s]
        if max_priority is not None:
            sql, args = sql + " AND o.priority <= ?", [*args, max_priority]
        rows = self.db.query(sql + " ORDER BY o.priority, o.record_id LIMIT ?", [*args, limit])
        return [OutboxItem(**row) for row in rows]

    def ack(self, device: str, stream: int, hwm: int, *,
            sent_before: float | None = None) -> int:
        """The cloud holds every row of device/stream up to seq hwm: the rows sent leave the
        outbox. One never sent stays to be sent: the cloud cannot hold it, only another row
        under its seq (this store put back from an older copy), and sending it lets the cloud
        say so (`catch_up`). `sent_before`: a mark kept from before the session that began
        then releases only the rows sent before it."""
        before, args = ("", ()) if sent_before is None else \
            (" AND (sent_at IS NULL OR sent_at < ?)", (sent_before,))
        return self.db.execute(
            f"DELETE FROM outbox WHERE sent_once = 1{before} AND record_id IN (SELECT id FROM "
            "records WHERE device = ? AND stream = ? AND seq <= ?)", (*args, device, stream, hwm))

    def catch_up(self, device: str, stream: int, hwm: int,
                 reused: list[tuple[int, int]] = ()) -> int:
        """The store was put back from an older copy (or lost its counters): its new records
        carry seqs the cloud already holds for other rows, which it takes as resends and
        drops. Seen when the cloud's mark hwm is at or past the next seq this store would
        give (every queued record numbered up to hwm), or when the cloud names `reused` seq
        ranges it holds with other epochs (every queued record from the first seq it names
        up to the mark: all were numbered after the copy). Those records get new seqs after
        both, and numbering goes on from there. Returns the records renumbered."""
        from nightlink.shared import codec

        with self.db.transaction():
            nxt = self._seq_to_give(device, stream)
            behind = hwm >= nxt
            if not behind and not reused:
                return 0
            # Every record numbered since the first seq named reused came after the copy:
            # all of them at once, before a later ack's mark (moved on by the first ones
            # renumbered) takes the others for rows the cloud holds.
            where = " OR ".join(["r.seq <= ?"] * behind
                                + ["(r.seq <= ? AND r.seq + r.count - 1 >= ?)"] * bool(reused))
            args = [hwm] * behind + ([max(hwm, *(b for _a, b in reused)),
                                      min(a for a, _b in reused)] if reused else [])
            queued = self.db.query(
                "SELECT r.id, r.blob FROM records r JOIN outbox o ON o.record_id = r.id "
                f"WHERE r.device = ? AND r.stream = ? AND ({where}) ORDER BY r.seq",
                (device, stream, *args))
            seq = max(nxt, hwm + 1)
            for row in queued:
                rec = codec.decode(row["blob"])
                moved = codec.Record(rec.stream, rec.device, rec.boot, seq, rec.epoch, rec.rows,
                                     rec.flags)
                self.db.execute("UPDATE records SET seq = ?, blob = ? WHERE id = ?",
                                (seq, codec.encode(moved), row["id"]))
                self.db.execute("UPDATE outbox SET sent_at = NULL WHERE record_id = ?",
                                (row["id"],))
                seq += rec.count
            if queued or behind:
                self._set_seq_to_give(device, stream, max(seq, nxt))
        if queued:
            _LOGGER.warning("the cloud holds other rows under seqs of stream %d this store "
                            "gave again (was the store put back from an older copy?): %d "
                            "queued records renumbered from %d", stream, len(queued),
                            max(nxt, hwm + 1))
        return len(queued)

    def resend_range(self, device: str, stream: int, first: int, last: int) -> int:
        """The cloud asks again for seqs first..last: send them on the next pass. Records it
        had acknowledged go back in the outbox (the cloud lost them: its database restored
        from a backup); seqs this store no longer holds (pruned after retention_days) are
        given up as dropped ranges, so the cloud's mark can step over them instead of asking
        for ever. Returns the records queued to go again."""
        overlap = ("device = ? AND stream = ? AND seq <= ? AND seq + count - 1 >= ?",
                   (device, stream, last, first))
        now = time.time()
        with self.db.transaction():
            held = self.db.query(
                f"SELECT id, seq, count, created_at, id IN (SELECT record_id FROM outbox) "
                f"AS queued FROM records WHERE {overlap[0]} ORDER BY seq", overlap[1])
            dropped = self.db.query(
                "SELECT first_seq, last_seq FROM dropped_ranges WHERE device = ? AND "
                "stream = ? AND first_seq <= ? AND last_seq >= ?", (device, stream, last, first))
            # Not queued and not dropped by the quota: acknowledged before, lost since.
            again = {r["id"] for r in held if not r["queued"] and not any(
                d["first_seq"] <= r["seq"] and r["seq"] + r["count"] - 1 <= d["last_seq"]
                for d in dropped)}
            if again:
                # The treatments changed since went up then too: they are sent again.
                since = min(r["created_at"] for r in held if r["id"] in again)
                docs = self.requeue_docs_since(int(since * 1000))
                _LOGGER.warning("the cloud asks again for %d records of stream %d that had "
                                "left the outbox (its database put back from a backup?): they "
                                "are sent again, and %d treatments changed since", len(again),
                                stream, docs)
            self.db.executemany(
                "INSERT INTO outbox (record_id, priority, enqueued_at) VALUES (?, ?, ?)",
                [(rid, features.stream(stream)[features.S_PRIORITY], now)
                 for rid in sorted(again)])
            n = self.db.execute(
                f"UPDATE outbox SET sent_at = NULL WHERE record_id IN (SELECT id FROM records "
                f"WHERE {overlap[0]})", overlap[1])
            issued = self._seq_to_give(device, stream) - 1
            gone, at = [], first
            for r in held:
                if r["seq"] > at:
                    gone.append((at, min(r["seq"] - 1, last, issued)))
                at = max(at, r["seq"] + r["count"])
            if at <= min(last, issued):
                gone.append((at, min(last, issued)))
            gone = [(a, b) for a, b in gone if a <= b and not self.db.scalar(
                "SELECT count(*) FROM dropped_ranges WHERE device = ? AND stream = ? AND "
                "first_seq <= ? AND last_seq >= ?", (device, stream, a, b))]
            for a, b in gone:
                self.db.execute(
                    "INSERT INTO dropped_ranges (device, stream, first_seq, last_seq) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT (device, stream, first_seq) DO UPDATE "
                    "SET last_seq = max(last_seq, excluded.last_seq)", (device, stream, a, b))
            if gone:
                _LOGGER.warning("the cloud asks for %d rows of stream %d this store no longer "
                                "holds (past retention): given up, so its mark can pass them",
                                sum(b - a + 1 for a, b in gone), stream)
        return n

    def enforce_quota(self, max_rows: int, protected_priority: int = 1) -> dict[int, int]:
        """Keep the outbox at most max_rows long by dropping the oldest rows of the lowest
        priority first; rows at or above protected_priority (glucose, alarms) are never
        dropped. Every drop is counted per stream (`drops()`), for the cloud to be told."""
        dropped: dict[int, int] = {}
        with self.db.transaction():
            excess = self.outbox_size() - max_rows
            if excess <= 0:
                return dropped
            victims = self.db.query(
                "SELECT o.record_id, r.stream, r.device, r.seq, r.count FROM outbox o "
                "JOIN records r ON r.id = o.record_id WHERE o.priority > ? "
                "ORDER BY o.priority DESC, o.record_id LIMIT ?",
                (protected_priority, excess))
            seqs: dict[tuple[str, int], list[int]] = {}
            for v in victims:
                self.db.execute("DELETE FROM outbox WHERE record_id = ?", (v["record_id"],))
                dropped[v["stream"]] = dropped.get(v["stream"], 0) + v["count"]
                seqs.setdefault((v["device"], v["stream"]), []).extend(
                    range(v["seq"], v["seq"] + v["count"]))
            for (device, stream), got in seqs.items():
                self.give_up(device, stream, got)
            for stream, n in dropped.items():
                self.db.execute(
                    "INSERT INTO drops (stream, count) VALUES (?, ?) ON CONFLICT (stream) "
                    "DO UPDATE SET count = count + excluded.count", (stream, n))
        if dropped:
            _LOGGER.warning("outbox over its quota of %d rows: dropped %s", max_rows, dropped)
        return dropped

    def give_up(self, device: str, stream: int, seqs: list[int]) -> None:
        """These seqs will never be sent: kept as dropped ranges (merged into runs), for the
        cloud's mark to step over them (inside the caller's transaction)."""
        for first, last in seq_runs(sorted(seqs)):
            self.db.execute(
                "INSERT INTO dropped_ranges (device, stream, first_seq, last_seq) "
                "VALUES (?, ?, ?, ?) ON CONFLICT DO UPDATE SET last_seq = "
                "max(last_seq, excluded.last_seq)", (device, stream, first, last))

    def drops(self) -> dict[int, int]:
        return {r["stream"]: r["count"] for r in self.db.query("SELECT stream, count FROM drops")}

    def dropped_ranges(self, device: str, limit: int = 100) -> dict[int, list[list[int]]]:
        """The newest seq ranges dropped per stream, merged, for the cloud to account for."""
        out: dict[int, list[list[int]]] = {}
        rows = self.db.query(
            "SELECT stream, first_seq, last_seq FROM dropped_ranges WHERE device = ? "
            "ORDER BY stream, first_seq", (device,))
        for r in rows:
            ranges = out.setdefault(r["stream"], [])
            if ranges and r["first_seq"] <= ranges[-1][1] + 1:
                ranges[-1][1] = max(ranges[-1][1], r["last_seq"])
            else:
                ranges.append([r["first_seq"], r["last_seq"]])
        return {s: r[-limit:] for s, r in out.items()}


def seq_runs(seqs: list[int]) -> list[tuple[int, int]]:
    """Sorted integers as (first, last) runs."""
    out: list[tuple[int, int]] = []
    for s in seqs:
        if out and s == out[-1][1] + 1:
            out[-1] = (out[-1][0], s)
        else:
            out.append((s, s))
    return out
