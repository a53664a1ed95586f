"""The edge schema as numbered migrations, run by `nightlink.sql.migrate` into `_migrations`.

Append migrations; never edit one that has shipped (edge databases in the field have run it).
"""

from __future__ import annotations

import json

from nightlink import sql
from nightlink.nightscout import documents as ns_documents
from nightlink.nightscout import store as ns_store
from nightlink.nightscout.store import SUBJECTS_DDL
from nightlink.sql import Database, Step

SITE = "local"  # the edge's one Nightscout site
MIGRATIONS_TABLE = "_migrations"


def _move_entries(db: Database) -> None:
    """Move the entries into the Nightscout core's table, each keeping the `_id` the cloud
    gives the same entry."""
    last = 0
    for row in db.query("SELECT type, date, sgv, doc, created_at FROM entries ORDER BY id"):
        type_, date = row["type"], row["date"]
        last = max(int(row["created_at"] * 1000), last + 1)
        oid = ns_documents.entry_oid(type_, date)
        body = json.loads(row["doc"])
        body.pop("_id", None)
        doc = json.dumps(body, separators=(",", ":"))
        db.execute(
            "INSERT OR IGNORE INTO ns_docs (tenant_id, coll, oid, identifier, dedup, date_ms, "
            "kind, value, srv_created, srv_modified, valid, doc) "
            "VALUES (?, 'entries', ?, ?, ?, ?, ?, ?, ?, ?, 1, ?)",
            (SITE, oid, oid, f"{type_}|{date}", date, type_, row["sgv"], last, last, doc))


# The Nightscout collections whose every change goes to the cloud (`doc_outbox.py`).
SYNCED = ("treatments",)
_NOW = "((julianday('now') - 2440587.5) * 86400.0)"  # unix seconds, inside a trigger


def _doc_outbox_triggers() -> list[str]:
    """Triggers that queue every change of a synced collection's document in the same
    transaction as the change, whoever writes it (the Nightscout APIs, the app's careportal,
    an importer): a new or changed document (a soft deletion too) by its oid, read when it is
    sent; one removed for good with its last content. A document's older queued change is
    replaced, so each document is queued once with its newest state under a new sequence
    number. Changes made while doc_sync_quiet names the collection (the cloud's own documents
    being applied) are not queued, so they are not sent back."""
    synced = ", ".join(f"'{c}'" for c in SYNCED)
    out = []
    for event, row, gone, extra in (("INSERT", "NEW", "NULL", ""),
                                    ("UPDATE", "NEW", "NULL", ""),
                                    ("DELETE", "OLD", "OLD.doc", " AND OLD.valid = 1")):
        out.append(
            f"CREATE TRIGGER doc_outbox_{event.lower()} AFTER {event} ON ns_docs "
            f"WHEN {row}.tenant_id = '{SITE}' AND {row}.coll IN ({synced}){extra} "
            f"AND NOT EXISTS (SELECT 1 FROM doc_sync_quiet WHERE coll = {row}.coll) "
            f"BEGIN DELETE FROM doc_outbox WHERE coll = {row}.coll AND oid = {row}.oid; "
            f"INSERT INTO doc_outbox (coll, oid, identifier, gone, enqueued_at) VALUES "
            f"({row}.coll, {row}.oid, {row}.identifier, {gone}, {_NOW}); END")
    return out


MIGRATIONS: list[tuple[int, str, list[Step]]] = [
    (1, "initial schema", sql.statements("""
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
        )
        """)),
    (2, "outbox send state and drop counters", sql.statements("""
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
        )
        """)),
    (3, "Nightscout documents and subjects (the Nightscout core)", [
        *ns_store.DDL,
        *SUBJECTS_DDL,
        _move_entries,
        "DROP TABLE entries",
    ]),
    (4, "the outbox of treatments for the cloud", [
        """CREATE TABLE doc_outbox (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            coll TEXT NOT NULL,
            oid TEXT NOT NULL,
            identifier TEXT NOT NULL,
            gone TEXT,
            enqueued_at REAL NOT NULL,
            sent_at REAL,
            UNIQUE (coll, oid)
        )""",
        "CREATE TABLE doc_sync_quiet (coll TEXT PRIMARY KEY)",
        *_doc_outbox_triggers(),
        "INSERT INTO doc_outbox (coll, oid, identifier, enqueued_at) "
        f"SELECT coll, oid, identifier, {_NOW} FROM ns_docs WHERE tenant_id = '{SITE}' "
        "AND coll IN (" + ", ".join(f"'{c}'" for c in SYNCED) + ") AND valid = 1 ORDER BY id",
    ]),
    (5, "the wearable's beats of the last nights, for the heart-rhythm apnea screen", [
        "CREATE TABLE beats (t_ms INTEGER PRIMARY KEY, rr_ms REAL NOT NULL)",
    ]),
    # An ack removes only rows sent at least once: a mark covering a row never sent names
    # another row under its seq (a store put back from an older copy), so the row goes.
    (6, "outbox rows sent at least once", [
        "ALTER TABLE outbox ADD COLUMN sent_once INTEGER NOT NULL DEFAULT 0",
        "UPDATE outbox SET sent_once = 1 WHERE sent_at IS NOT NULL",
    ]),
    # edge/store/imports.py: an import's epochs and nights carry its boot; its entries and
    # beats are listed, so that it can be undone.
    (7, "imports, so that one can be undone", sql.statements("""
        CREATE TABLE imports (
            id INTEGER PRIMARY KEY,
            boot INTEGER NOT NULL,
            source TEXT NOT NULL,
            format TEXT NOT NULL,
            tz TEXT NOT NULL,
            at REAL NOT NULL,
            first_s REAL,
            last_s REAL,
            samples INTEGER NOT NULL DEFAULT 0,
            nights TEXT NOT NULL DEFAULT '[]',
            undone_at REAL,
            first_epoch INTEGER,
            last_epoch INTEGER
        );
        CREATE TABLE import_docs (
            import_id INTEGER NOT NULL REFERENCES imports (id),
            oid TEXT NOT NULL,
            created INTEGER NOT NULL,
            PRIMARY KEY (import_id, oid)
        );
        CREATE INDEX import_docs_oid ON import_docs (oid);
        CREATE TABLE live_docs (oid TEXT PRIMARY KEY);
        ALTER TABLE beats ADD COLUMN import_id INTEGER;
        CREATE INDEX beats_import ON beats (import_id) WHERE import_id IS NOT NULL;
    """)),
]


def migrate(db: Database) -> int:
    """Apply every edge migration not yet applied; return the schema version."""
    return sql.migrate(db, MIGRATIONS, table=MIGRATIONS_TABLE, label="edge")


def schema_version(db: Database) -> int:
    return db.scalar(f"SELECT max(id) AS version FROM {MIGRATIONS_TABLE}") or 0
