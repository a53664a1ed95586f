"""The edge node's local store: SQLite through sqlite-utils, WAL, numbered migrations, one writer.

It keeps every epoch record with its sequence number and an outbox row written in the
same transaction (what the sync sends), the CGM entries the local Nightscout endpoint
receives, source status and gaps, night summaries, and dead letters. Retention is bounded.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import sqlite_utils

from nightlink.nightscout import documents as ns_documents
from nightlink.nightscout import store as ns_store
from nightlink.nightscout.site import SUBJECTS_DDL, Subjects
from nightlink.shared import codec
from nightlink.shared import features as F
from nightlink.shared.epoch import EPOCHS_PER_DAY

_LOGGER = logging.getLogger(__name__)

# Numbered migrations: append only; each runs once, in its own transaction.
MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "initial schema",
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE records (
            id INTEGER PRIMARY KEY,
            stream INTEGER NOT NULL,
            device TEXT NOT NULL,
            boot INTEGER NOT NULL,
            seq INTEGER NOT NULL,
            epoch INTEGER NOT NULL,
            count INTEGER NOT NULL,
            flags INTEGER NOT NULL,
            blob BLOB NOT NULL,
            created_at REAL NOT NULL,
            UNIQUE (device, stream, boot, seq)
        );
        CREATE INDEX records_stream_epoch ON records (stream, epoch);
        CREATE TABLE outbox (
            record_id INTEGER PRIMARY KEY REFERENCES records (id) ON DELETE CASCADE,
            priority INTEGER NOT NULL,
            enqueued_at REAL NOT NULL
        );
        CREATE INDEX outbox_order ON outbox (priority, record_id);
        CREATE TABLE seqs (
            device TEXT NOT NULL,
            stream INTEGER NOT NULL,
            next_seq INTEGER NOT NULL,
            PRIMARY KEY (device, stream)
        );
        CREATE TABLE entries (
            id INTEGER PRIMARY KEY,
            type TEXT NOT NULL,
            date INTEGER NOT NULL,
            sgv INTEGER,
            direction TEXT,
            device TEXT,
            doc TEXT NOT NULL,
            created_at REAL NOT NULL,
            UNIQUE (date, type)
        );
        CREATE INDEX entries_date ON entries (date);
        CREATE TABLE sources (
            source TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            state TEXT NOT NULL,
            detail TEXT NOT NULL DEFAULT '',
            updated_at REAL NOT NULL
        );
        CREATE TABLE gaps (
            id INTEGER PRIMARY KEY,
            source TEXT NOT NULL,
            start_epoch INTEGER NOT NULL,
            end_epoch INTEGER NOT NULL,
            reason TEXT NOT NULL
        );
        CREATE INDEX gaps_source ON gaps (source, start_epoch);
        CREATE TABLE nights (
            night TEXT PRIMARY KEY,
            summary TEXT NOT NULL,
            updated_at REAL NOT NULL
        );
        CREATE TABLE dead_letters (
            id INTEGER PRIMARY KEY,
            source TEXT NOT NULL,
            reason TEXT NOT NULL,
            payload BLOB,
            created_at REAL NOT NULL
        );
        """,
    ),
    (
        2,
        "outbox send state and drop counters",
        """
        ALTER TABLE outbox ADD COLUMN sent_at REAL;
        CREATE INDEX records_device_stream_seq ON records (device, stream, seq);
        CREATE TABLE drops (
            stream INTEGER PRIMARY KEY,
            count INTEGER NOT NULL
        );
        CREATE TABLE dropped_ranges (
            device TEXT NOT NULL,
            stream INTEGER NOT NULL,
            first_seq INTEGER NOT NULL,
            last_seq INTEGER NOT NULL,
            PRIMARY KEY (device, stream, first_seq)
        );
        """,
    ),
    (3, "Nightscout documents and subjects (the Nightscout core)", lambda db: _move_entries(db)),
]
SITE = "local"  # the edge's one Nightscout site


def _move_entries(db) -> None:
    """Create the Nightscout core's tables and move the entries into them, each keeping the
    `_id` the cloud gives the same entry."""
    for sql in (*ns_store.DDL, *SUBJECTS_DDL):
        db.execute(sql.format(AUTO_ID="INTEGER PRIMARY KEY AUTOINCREMENT", BIGINT="INTEGER"))
    last = 0
    for type_, date, sgv, doc, created in db.execute(
            "SELECT type, date, sgv, doc, created_at FROM entries ORDER BY id").fetchall():
        last = max(int(created * 1000), last + 1)
        oid = ns_documents.entry_oid(type_, date)
        body = json.loads(doc)
        body.pop("_id", None)
        doc = json.dumps(body, separators=(",", ":"))
        db.execute(
            "INSERT OR IGNORE INTO ns_docs (tenant_id, coll, oid, identifier, dedup, date_ms, "
            "kind, value, srv_created, srv_modified, valid, doc) "
            "VALUES (?, 'entries', ?, ?, ?, ?, ?, ?, ?, ?, 1, ?)",
            [SITE, oid, oid, f"{type_}|{date}", date, type_, sgv, last, last, doc])
    db.execute("DROP TABLE entries")


class StoreError(Exception):
    """The store cannot be opened or used as asked."""


@dataclass(frozen=True)
class OutboxItem:
    record_id: int
    priority: int
    stream: int
    device: str
    boot: int
    seq: int
    blob: bytes


class EdgeStore:
    """The local store. Writes go through one lock (one writer); reads may come from any thread."""

    def __init__(self, path: Path | str, *, retention_days: int = 30):
        if retention_days < 1:
            raise StoreError("retention_days must be at least 1.")
        self.path = Path(path)
        self.retention_days = retention_days
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
            self.db = sqlite_utils.Database(conn)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self.db.execute("PRAGMA busy_timeout=5000")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path} is not a usable SQLite database ({exc}).") from exc
        self._lock = threading.RLock()
        self.notify = None  # the live hub's hook for Nightscout document changes
        self._migrate()
        self.device = self._device_name()
        self.boot = int(self.meta("boot", "0"))

    # -- set-up -------------------------------------------------------------------------

    def _migrate(self) -> None:
        with self._lock:
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS _migrations "
                "(id INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
            )
            done = {row[0] for row in self.db.execute("SELECT id FROM _migrations").fetchall()}
            for number, name, sql in MIGRATIONS:
                if number in done:
                    continue
                with self.transaction():
                    if callable(sql):
                        sql(self.db)
                    for statement in ("" if callable(sql) else sql).split(";"):
                        if statement.strip():
                            self.db.execute(statement)
                    self.db.execute(
                        "INSERT INTO _migrations (id, name, applied_at) VALUES (?, ?, ?)",
                        [number, name, time.time()],
                    )
                _LOGGER.info("applied migration %d (%s) to %s", number, name, self.path)

    def schema_version(self) -> int:
        row = self.db.execute("SELECT max(id) FROM _migrations").fetchone()
        return row[0] or 0

    def _device_name(self) -> str:
        name = self.meta("device")
        if name is None:
            name = codec.device_name(os.urandom(codec.DEVICE_ID_SIZE))
            self.set_meta("device", name)
        return name

    def transaction(self):
        """A write transaction under the writer lock: `with store.transaction(): ...`."""
        return _Transaction(self)

    def close(self) -> None:
        with self._lock:
            self.db.conn.close()

    # -- meta ---------------------------------------------------------------------------

    def meta(self, key: str, default: str | None = None) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction():
            self.db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [key, value],
            )

    def start_boot(self) -> int:
        """Count one more start of the pipeline; records written from now on carry it."""
        with self.transaction():
            self.boot = int(self.meta("boot", "0")) + 1
            self.set_meta("boot", str(self.boot))
        return self.boot

    # -- records and outbox -------------------------------------------------------------

    def append(
        self, stream: int, epoch: int, rows: list[tuple[int, ...]], *, flags: int = 0
    ) -> codec.Record:
        """Store this node's record for consecutive epochs and queue it for sync, atomically."""
        with self.transaction():
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
        with self.transaction():
            if self._insert(rec, blob, queue=False) is None:
                return None
        return rec

    def _next_seq(self, device: str, stream: int, rows: int = 1) -> int:
        """The seq of the next record's first row, reserving `rows` of them (seq counts rows)."""
        row = self.db.execute(
            "SELECT next_seq FROM seqs WHERE device = ? AND stream = ?", [device, stream]
        ).fetchone()
        seq = row[0] if row else 1
        self.db.execute(
            "INSERT INTO seqs (device, stream, next_seq) VALUES (?, ?, ?) "
            "ON CONFLICT (device, stream) DO UPDATE SET next_seq = excluded.next_seq",
            [device, stream, seq + rows],
        )
        return seq

    def _insert(self, rec: codec.Record, blob: bytes, queue: bool = True) -> int | None:
        now = time.time()
        cur = self.db.execute(
            "INSERT OR IGNORE INTO records "
            "(stream, device, boot, seq, epoch, count, flags, blob, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                rec.stream,
                codec.device_name(rec.device),
                rec.boot,
                rec.seq,
                rec.epoch,
                rec.count,
                rec.flags,
                blob,
                now,
            ],
        )
        if cur.rowcount == 0:
            return None
        if not queue:
            return cur.lastrowid
        priority = F.stream(rec.stream)[F.S_PRIORITY]
        self.db.execute(
            "INSERT INTO outbox (record_id, priority, enqueued_at) VALUES (?, ?, ?)",
            [cur.lastrowid, priority, now],
        )
        return cur.lastrowid

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
        for (blob,) in self.db.execute(sql + " ORDER BY epoch, id", args).fetchall():
            yield codec.decode(blob)

    def epoch_values(self, stream: int, start_epoch: int, end_epoch: int) -> dict[int, list]:
        """Physical values by epoch index for one stream (None where a feature was missing)."""
        out: dict[int, list] = {}
        for rec in self.records(stream, start_epoch, end_epoch):
            for i, vals in enumerate(rec.values()):
                if start_epoch <= rec.epoch + i < end_epoch:
                    out[rec.epoch + i] = vals
        return out

    def count_records(self, stream: int | None = None) -> int:
        if stream is None:
            return self.db.execute("SELECT count(*) FROM records").fetchone()[0]
        return self.db.execute(
            "SELECT count(*) FROM records WHERE stream = ?", [stream]
        ).fetchone()[0]

    def outbox(self, limit: int = 100) -> list[OutboxItem]:
        """Records waiting to be sent: highest priority first, then oldest."""
        rows = self.db.execute(
            "SELECT o.record_id, o.priority, r.stream, r.device, r.boot, r.seq, r.blob "
            "FROM outbox o JOIN records r ON r.id = o.record_id "
            "ORDER BY o.priority, o.record_id LIMIT ?",
            [limit],
        ).fetchall()
        return [OutboxItem(*row) for row in rows]

    def outbox_size(self) -> int:
        return self.db.execute("SELECT count(*) FROM outbox").fetchone()[0]

    def mark_sent(self, record_ids: list[int], at: float) -> None:
        with self.transaction():
            self.db.conn.executemany("UPDATE outbox SET sent_at = ? WHERE record_id = ?",
                                     [(at, r) for r in record_ids])

    def due(self, *, resend_after_s: float, now: float, limit: int = 1000,
            max_priority: int | None = None) -> list[OutboxItem]:
        """Rows to send: never sent, or sent longer ago than resend_after_s without an ack.
        Highest priority first, then oldest."""
        sql = ("SELECT o.record_id, o.priority, r.stream, r.device, r.boot, r.seq, r.blob "
               "FROM outbox o JOIN records r ON r.id = o.record_id "
               "WHERE (o.sent_at IS NULL OR o.sent_at < ?)")
        args: list = [now - resend_after_s]
        if max_priority is not None:
            sql, args = sql + " AND o.priority <= ?", [*args, max_priority]
        rows = self.db.execute(sql + " ORDER BY o.priority, o.record_id LIMIT ?",
                               [*args, limit]).fetchall()
        return [OutboxItem(*row) for row in rows]

    def ack(self, device: str, stream: int, hwm: int) -> int:
        """The cloud holds every row of device/stream up to seq hwm: leave the outbox."""
        with self.transaction():
            cur = self.db.execute(
                "DELETE FROM outbox WHERE record_id IN (SELECT id FROM records "
                "WHERE device = ? AND stream = ? AND seq <= ?)", [device, stream, hwm])
        return cur.rowcount

    def resend_range(self, device: str, stream: int, first: int, last: int) -> int:
        """The cloud asks again for seqs first..last: send them on the next pass."""
        with self.transaction():
            cur = self.db.execute(
                "UPDATE outbox SET sent_at = NULL WHERE record_id IN (SELECT id FROM records "
                "WHERE device = ? AND stream = ? AND seq BETWEEN ? AND ?)",
                [device, stream, first, last])
        return cur.rowcount

    def enforce_quota(self, max_rows: int, protected_priority: int = 1) -> dict[int, int]:
        """Keep the outbox at most max_rows long by dropping the oldest rows of the lowest
        priority first; rows at or above protected_priority (glucose, alarms) are never
        dropped. Every drop is counted per stream (`drops()`), for the cloud to be told."""
        dropped: dict[int, int] = {}
        with self.transaction():
            excess = self.outbox_size() - max_rows
            if excess <= 0:
                return dropped
            victims = self.db.execute(
                "SELECT o.record_id, r.stream, r.device, r.seq, r.count FROM outbox o "
                "JOIN records r ON r.id = o.record_id WHERE o.priority > ? "
                "ORDER BY o.priority DESC, o.record_id LIMIT ?",
                [protected_priority, excess]).fetchall()
            seqs: dict[tuple[str, int], list[int]] = {}
            for record_id, stream, device, seq, count in victims:
                self.db.execute("DELETE FROM outbox WHERE record_id = ?", [record_id])
                dropped[stream] = dropped.get(stream, 0) + count
                seqs.setdefault((device, stream), []).extend(range(seq, seq + count))
            for (device, stream), got in seqs.items():
                for first, last in _ranges(sorted(got)):
                    self.db.execute(
                        "INSERT INTO dropped_ranges (device, stream, first_seq, last_seq) "
                        "VALUES (?, ?, ?, ?) ON CONFLICT DO UPDATE SET last_seq = "
                        "max(last_seq, excluded.last_seq)", [device, stream, first, last])
            for stream, n in dropped.items():
                self.db.execute(
                    "INSERT INTO drops (stream, count) VALUES (?, ?) ON CONFLICT (stream) "
                    "DO UPDATE SET count = count + excluded.count", [stream, n])
        if dropped:
            _LOGGER.warning("outbox over its quota of %d rows: dropped %s", max_rows, dropped)
        return dropped

    def drops(self) -> dict[int, int]:
        return dict(self.db.execute("SELECT stream, count FROM drops").fetchall())

    def dropped_ranges(self, device: str, limit: int = 100) -> dict[int, list[list[int]]]:
        """The newest seq ranges dropped per stream, merged, for the cloud to account for."""
        out: dict[int, list[list[int]]] = {}
        rows = self.db.execute(
            "SELECT stream, first_seq, last_seq FROM dropped_ranges WHERE device = ? "
            "ORDER BY stream, first_seq", [device]).fetchall()
        for stream, first, last in rows:
            ranges = out.setdefault(stream, [])
            if ranges and first <= ranges[-1][1] + 1:
                ranges[-1][1] = max(ranges[-1][1], last)
            else:
                ranges.append([first, last])
        return {s: r[-limit:] for s, r in out.items()}

    # -- Nightscout documents (the local Nightscout endpoint, followers, importers) ----------

    @property
    def docs(self) -> ns_store.DocumentStore:
        """The node's Nightscout collections, kept by the Nightscout core's rules."""
        return ns_store.DocumentStore(_NsDatabase(self), SITE, notify=self.notify)

    @property
    def subjects(self) -> Subjects:
        return Subjects(_NsDatabase(self), SITE)

    def add_entries(self, entries: Iterable[dict]) -> tuple[int, int]:
        """Store Nightscout entries (the core's rules: one per (type, date), a reading already
        stored from another source is not stored again); return (stored, not stored)."""
        now = int(time.time() * 1000)
        normalized = []
        for e in entries:
            try:
                normalized.append(ns_documents.normalize("entries", e, now))
            except ns_documents.DocumentError as exc:
                self.dead_letter("entries", str(exc), json.dumps(e, default=str).encode())
        outcomes = self.docs.put(normalized, mode="keep") if normalized else []
        stored = sum(1 for o in outcomes if o.action == "created")
        return stored, len(outcomes) - stored

    def entries(
        self,
        count: int = 10,
        type_: str | None = None,
        date_gte: int | None = None,
        date_lte: int | None = None,
        *,
        ascending: bool = False,
    ) -> list[dict]:
        """Stored entries, newest first (or oldest first)."""
        rows = self.docs.latest("entries", kind=type_, count=count, lo=date_gte, hi=date_lte,
                                ascending=ascending)
        return [r.v1() for r in rows]

    # -- sources, gaps, nights, dead letters ---------------------------------------------

    def set_source(self, source: str, kind: str, state: str, detail: str = "") -> None:
        with self.transaction():
            self.db.execute(
                "INSERT INTO sources (source, kind, state, detail, updated_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (source) DO UPDATE SET kind = excluded.kind, "
                "state = excluded.state, detail = excluded.detail, updated_at = excluded.updated_at",
                [source, kind, state, detail, time.time()],
            )

    def sources(self) -> dict[str, dict]:
        rows = self.db.execute("SELECT source, kind, state, detail FROM sources").fetchall()
        return {r[0]: {"kind": r[1], "state": r[2], "detail": r[3]} for r in rows}

    def add_gap(self, source: str, start_epoch: int, end_epoch: int, reason: str) -> None:
        with self.transaction():
            self.db.execute(
                "INSERT INTO gaps (source, start_epoch, end_epoch, reason) VALUES (?, ?, ?, ?)",
                [source, start_epoch, end_epoch, reason],
            )

    def gaps(self, source: str | None = None) -> list[dict]:
        sql, args = "SELECT source, start_epoch, end_epoch, reason FROM gaps", []
        if source is not None:
            sql, args = sql + " WHERE source = ?", [source]
        rows = self.db.execute(sql + " ORDER BY start_epoch", args).fetchall()
        return [dict(zip(("source", "start_epoch", "end_epoch", "reason"), r, strict=True))
                for r in rows]

    def put_night(self, night: str, summary: dict) -> None:
        with self.transaction():
            self.db.execute(
                "INSERT INTO nights (night, summary, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (night) DO UPDATE SET summary = excluded.summary, "
                "updated_at = excluded.updated_at",
                [night, json.dumps(summary, sort_keys=True, separators=(",", ":")), time.time()],
            )

    def night(self, night: str) -> dict | None:
        row = self.db.execute("SELECT summary FROM nights WHERE night = ?", [night]).fetchone()
        return json.loads(row[0]) if row else None

    def dead_letter(self, source: str, reason: str, payload: bytes | None = None) -> None:
        _LOGGER.warning("dead letter from %s: %s", source, reason)
        with self.transaction():
            self.db.execute(
                "INSERT INTO dead_letters (source, reason, payload, created_at) VALUES (?, ?, ?, ?)",
                [source, reason, payload, time.time()],
            )

    def dead_letters(self) -> list[dict]:
        rows = self.db.execute(
            "SELECT source, reason, payload FROM dead_letters ORDER BY id"
        ).fetchall()
        return [{"source": r[0], "reason": r[1], "payload": r[2]} for r in rows]

    # -- retention ------------------------------------------------------------------------

    def prune(self, now_epoch: int) -> int:
        """Delete records older than the retention window that are no longer in the outbox.

        Records still waiting to be synced are kept whatever their age; the sync's
        storage policy decides about those.
        """
        cutoff = now_epoch - self.retention_days * EPOCHS_PER_DAY
        with self.transaction():
            cur = self.db.execute(
                "DELETE FROM records WHERE epoch + count <= ? "
                "AND id NOT IN (SELECT record_id FROM outbox)",
                [cutoff],
            )
            self.db.execute("DELETE FROM gaps WHERE end_epoch <= ?", [cutoff])
        return cur.rowcount


def _ranges(seqs: list[int]) -> list[tuple[int, int]]:
    """Sorted integers as (first, last) runs."""
    out: list[tuple[int, int]] = []
    for s in seqs:
        if out and s == out[-1][1] + 1:
            out[-1] = (out[-1][0], s)
        else:
            out.append((s, s))
    return out


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT under the store's writer lock; nested use joins the outer one."""

    def __init__(self, store: EdgeStore):
        self.store = store
        self.outer = False

    def __enter__(self):
        self.store._lock.acquire()
        conn = self.store.db.conn
        if not conn.in_transaction:
            conn.execute("BEGIN IMMEDIATE")
            self.outer = True
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            if self.outer:
                conn = self.store.db.conn
                if exc_type is None:
                    conn.execute("COMMIT")
                else:
                    conn.execute("ROLLBACK")
        finally:
            self.store._lock.release()
        return False


class _NsDatabase:
    """The edge store as the Nightscout core's database: `?` statements on its connection,
    writes inside its one-writer transactions."""

    kind = "sqlite"

    def __init__(self, store: EdgeStore):
        self.store = store

    def execute(self, sql: str, params=()) -> int:
        with self.store.transaction():
            return self.store.db.conn.execute(sql, tuple(params)).rowcount

    def query(self, sql: str, params=()) -> list[dict]:
        if sql.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE")):
            with self.store.transaction():
                cur = self.store.db.conn.execute(sql, tuple(params))
                return _dicts(cur)
        return _dicts(self.store.db.conn.execute(sql, tuple(params)))

    def transaction(self):
        return self.store.transaction()


def _dicts(cursor) -> list[dict]:
    names = [d[0] for d in cursor.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
