"""Epoch records: this node's own (numbered per stream, queued for sync in the same
transaction) and the desk clocks' (kept for local use), and their retention."""

from __future__ import annotations

import time
from collections.abc import Iterator

from nightlink.shared import codec, features
from nightlink.shared.epoch import EPOCHS_PER_DAY
from nightlink.sql import Database


class Records:
    db: Database
    device: str
    boot: int
    boot_due = False  # a start the store refused to count (a full disk): counted at the next record
    retention_days: int

    def append(
        self, stream: int, epoch: int, rows: list[tuple[int, ...]], *, flags: int = 0
    ) -> codec.Record:
        """Store this node's record for consecutive epochs and queue it for sync, atomically."""
        with self.db.transaction():
            if self.boot_due:  # never an earlier start's boot (an import's, undone with it)
                self.start_boot()
                self.boot_due = False
                self.db.on_rollback(lambda: setattr(self, "boot_due", True))
            seq = self._next_seq(self.device, stream, len(rows))
            rec = codec.Record(
                stream, codec.device_id(self.device), self.boot, seq, epoch, rows, flags
            )
            self._insert(rec, codec.encode(rec))
        return rec

    def put_foreign(self, blob: bytes) -> codec.Record | None:
        """Keep a record another device (a clock) produced, for local use; None if it is
        already here. It is not queued: the clock's own outbox delivers it to the cloud
        through the broker bridge, and the cloud acknowledges it to the clock."""
        rec = codec.decode(blob)
        with self.db.transaction():
            if self._insert(rec, blob, queue=False) is None:
                return None
        return rec

    def _next_seq(self, device: str, stream: int, rows: int = 1) -> int:
        """The seq of the next record's first row, reserving `rows` of them (seq counts rows)."""
        seq = self._seq_to_give(device, stream)
        self._set_seq_to_give(device, stream, seq + rows)
        return seq

    def _seq_to_give(self, device: str, stream: int) -> int:
        """The seq the next row of device/stream will get (every one below it is given)."""
        return self.db.scalar(
            "SELECT next_seq FROM seqs WHERE device = ? AND stream = ?", (device, stream)) or 1

    def _set_seq_to_give(self, device: str, stream: int, seq: int) -> None:
        self.db.execute(
            "INSERT INTO seqs (device, stream, next_seq) VALUES (?, ?, ?) "
            "ON CONFLICT (device, stream) DO UPDATE SET next_seq = excluded.next_seq",
            (device, stream, seq),
        )

    def _insert(self, rec: codec.Record, blob: bytes, queue: bool = True) -> int | None:
        """The new row's id, or None if the record was already stored."""
        now = time.time()
        row = self.db.one(
            "INSERT OR IGNORE INTO records "
            "(stream, device, boot, seq, epoch, count, flags, blob, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (rec.stream, codec.device_name(rec.device), rec.boot, rec.seq, rec.epoch, rec.count,
             rec.flags, blob, now),
        )
        if row is None:
            return None
        if queue:
            self.db.execute(
                "INSERT INTO outbox (record_id, priority, enqueued_at) VALUES (?, ?, ?)",
                (row["id"], features.stream(rec.stream)[features.S_PRIORITY], now),
            )
        return row["id"]

    def records(
        self,
        stream: int | None = None,
        start_epoch: int | None = None,
        end_epoch: int | None = None,
        device: str | None = None,
    ) -> Iterator[codec.Record]:
        """Stored records, oldest epoch first, optionally for one stream, device and epoch range."""
        sql, args = "SELECT blob FROM records WHERE 1=1", []
        if stream is not None:
            sql, args = sql + " AND stream = ?", [*args, stream]
        if device is not None:
            sql, args = sql + " AND device = ?", [*args, device]
        if start_epoch is not None:
            sql, args = sql + " AND epoch + count > ?", [*args, start_epoch]
        if end_epoch is not None:
            sql, args = sql + " AND epoch < ?", [*args, end_epoch]
        for row in self.db.query(sql + " ORDER BY epoch, id", args):
            yield codec.decode(row["blob"])

    def epoch_values(self, stream: int, start_epoch: int, end_epoch: int) -> dict[int, list]:
        """Physical values by epoch index for one stream (None where a feature was missing)."""
        out: dict[int, list] = {}
        for rec in self.records(stream, start_epoch, end_epoch):
            for i, vals in enumerate(rec.values()):
                if start_epoch <= rec.epoch + i < end_epoch:
                    out[rec.epoch + i] = vals
        return out

    def last_own_epoch(self) -> int | None:
        """The latest epoch this node has stored a record for (any stream, any boot)."""
        last = self.db.scalar("SELECT MAX(epoch + count) AS e FROM records WHERE device = ?",
                              (self.device,))
        return None if last is None else int(last) - 1

    def count_records(self, stream: int | None = None) -> int:
        if stream is None:
            return self.db.scalar("SELECT count(*) AS n FROM records")
        return self.db.scalar("SELECT count(*) AS n FROM records WHERE stream = ?", (stream,))

    BEATS_KEPT_DAYS = 3  # the beats wait this long for their night's close, then go

    def add_beats(self, beats: list[tuple[float, float]], *,
                  import_id: int | None = None) -> None:
        """Keep the wearable's beats ((t s, rr ms), a beat's time once) for the night's close:
        the heart-rhythm apnea screen reads them (the wire carries only per-epoch features).
        `import_id`: the import that read them (imports.py)."""
        if beats:
            with self.db.transaction():
                self.db.executemany(
                    "INSERT OR IGNORE INTO beats (t_ms, rr_ms, import_id) VALUES (?, ?, ?)",
                    [(int(round(t * 1000)), float(rr), import_id) for t, rr in beats])

    def beats_between(self, start_s: float, end_s: float):
        """(t s, rr ms) arrays of the beats in [start_s, end_s), in time order."""
        import numpy as np

        rows = self.db.query("SELECT t_ms, rr_ms FROM beats WHERE t_ms >= ? AND t_ms < ? "
                             "ORDER BY t_ms", (int(start_s * 1000), int(end_s * 1000)))
        return (np.array([r["t_ms"] / 1000.0 for r in rows]),
                np.array([r["rr_ms"] for r in rows], dtype=np.float64))

    def prune(self, now_epoch: int) -> int:
        """Delete records older than the retention window that are no longer in the outbox,
        and gaps that ended before it.

        Records still waiting to be synced are kept whatever their age; the sync's
        storage policy decides about those.
        """
        cutoff = now_epoch - self.retention_days * EPOCHS_PER_DAY
        with self.db.transaction():
            pruned = self.db.execute(
                "DELETE FROM records WHERE epoch + count <= ? "
                "AND id NOT IN (SELECT record_id FROM outbox)",
                (cutoff,),
            )
            self.db.execute("DELETE FROM gaps WHERE end_epoch <= ?", (cutoff,))
            self.db.execute("DELETE FROM beats WHERE t_ms < ?",
                            ((now_epoch - self.BEATS_KEPT_DAYS * EPOCHS_PER_DAY) * 30_000,))
        return pruned
