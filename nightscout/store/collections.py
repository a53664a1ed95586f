"""The Nightscout document store: every collection of one site in one table, over SQLite or
PostgreSQL, with deduplication enforced here so that every writer (an app over HTTP, a socket,
the MQTT ingest, an importer) gets the same rule, as cgm-remote-monitor's upsert keys do.

One row per document: the collection, the `_id` (oid), the API v3 `identifier`, the keys the
rules in `documents` computed (`dedup` unique, `pair` for documents without a client
identity), the time the collection sorts by, and the server's `srvCreated`/`srvModified`.
`srvModified` strictly increases per site, so an API v3 `history/{since}` cursor never loses a
document that changed in the same millisecond as the last one it saw. Deletion is soft (the
row stays with `valid = 0` so that history reports it) unless asked to be permanent.

The database is a `nightlink.sql.Database` (the cloud's SQLite or PostgreSQL, the edge's
SQLite). `DDL` holds the schema both tiers put into their migrations.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from nightlink.nightscout import documents, jsonsafe, times
from nightlink.nightscout.query import Cond, Instant, Query, regex_budget
from nightlink.sql import Database

TABLE = "ns_docs"
MAX_SCAN = 1_000_000  # rows one find may read before it gives up (a filter matching nothing)
_ORDERS = ("date_ms", "srv_modified", "srv_created", "identifier")
_COLUMNS = "id, coll, oid, identifier, date_ms, kind, srv_created, srv_modified, valid, doc"
COLUMNS = _COLUMNS  # what Row.of reads (the cloud's live change feed selects it too)
# PostgreSQL: every write transaction NOTIFYs its site here, at commit, so the live hub of
# every process (API workers, the ingest) hears of it.
LIVE_CHANNEL = "nightlink_live"

DDL = [
    f"""CREATE TABLE {TABLE} (
        id {{AUTO_ID}},
        tenant_id TEXT NOT NULL,
        coll TEXT NOT NULL,
        oid TEXT NOT NULL,
        identifier TEXT NOT NULL,
        dedup TEXT,
        pair TEXT,
        date_ms {{BIGINT}} NOT NULL,
        kind TEXT NOT NULL DEFAULT '',
        value DOUBLE PRECISION,
        srv_created {{BIGINT}} NOT NULL,
        srv_modified {{BIGINT}} NOT NULL,
        valid INTEGER NOT NULL DEFAULT 1,
        doc TEXT NOT NULL
    )""",
    f"CREATE UNIQUE INDEX ns_docs_oid ON {TABLE} (tenant_id, coll, oid)",
    f"CREATE UNIQUE INDEX ns_docs_identifier ON {TABLE} (tenant_id, coll, identifier)",
    f"CREATE UNIQUE INDEX ns_docs_dedup ON {TABLE} (tenant_id, coll, dedup)",
    f"CREATE INDEX ns_docs_pair ON {TABLE} (tenant_id, coll, pair)",
    f"CREATE INDEX ns_docs_time ON {TABLE} (tenant_id, coll, date_ms)",
    f"CREATE INDEX ns_docs_kind_time ON {TABLE} (tenant_id, coll, kind, date_ms)",
    f"CREATE INDEX ns_docs_modified ON {TABLE} (tenant_id, coll, srv_modified)",
    f"CREATE INDEX ns_docs_site_modified ON {TABLE} (tenant_id, srv_modified)",
]


@dataclass
class Row:
    """One stored document."""

    id: int
    coll: str
    oid: str
    identifier: str
    date_ms: int
    kind: str
    srv_created: int
    srv_modified: int
    valid: bool
    doc: dict

    @classmethod
    def of(cls, r: dict) -> Row:
        doc = jsonsafe.load_stored(r["doc"])
        return cls(int(r["id"]), r["coll"], r["oid"], r["identifier"], int(r["date_ms"]),
                   r["kind"] or "", int(r["srv_created"]), int(r["srv_modified"]),
                   bool(r["valid"]), doc if isinstance(doc, dict) else {})

    def view(self) -> dict:
        """The document as queries see it: fields plus `_id`, identifier and server times."""
        out = dict(self.doc)
        out["_id"] = self.oid
        out.setdefault("identifier", self.identifier)
        out["srvModified"] = self.srv_modified
        out["srvCreated"] = self.srv_created
        if self.coll in (documents.TREATMENTS, documents.ENTRIES):
            out["mills"] = self.date_ms  # what API v1 answers can be asked for (diasend)
        return out

    def v1(self) -> dict:
        """The document as API v1 answers it (entries get their `mills` as JSON replies:
        api_v1.py)."""
        out = {"_id": self.oid, **self.doc}
        if self.coll == documents.TREATMENTS:  # nightguard and Nightscout's own client read
            out["mills"] = self.date_ms  # it; its time now, whatever a PUT sent back
        return out

    def v3(self) -> dict:
        """The document as API v3 answers it: identifier and server times, no `_id`."""
        out = {**self.doc, "identifier": self.identifier, "srvCreated": self.srv_created,
               "srvModified": self.srv_modified}
        if not self.valid:
            out["isValid"] = False
        elif out.get("isValid") is False:
            del out["isValid"]
        return out


@dataclass
class Outcome:
    """What happened to one uploaded document."""

    action: str  # created, updated, unchanged, duplicate, near_duplicate
    row: Row
    previous_identifier: str | None = None  # API v3: the identifier a deduplication replaced


Notify = Callable[[str, str, str, list[Row]], None]  # (site, coll, action, rows)


class DocumentStore:
    """One site's Nightscout collections (a cloud tenant, or the edge node)."""

    def __init__(self, db: Database, site: str, *, notify: Notify | None = None):
        self.db = db
        self.site = site
        self.notify = notify

    # -- writes -----------------------------------------------------------------------------

    def put(self, items: Sequence[documents.Normalized], *, mode: str = "merge",
            near_duplicates: bool = True, subject: str | None = None) -> list[Outcome]:
        """Store documents, each matched against what is stored by the rules of `documents`.

        mode, when a stored document matches: "merge" sets the new fields over the stored ones
        (API v1 entries), "replace" replaces it (treatments, API v3), "keep" leaves it as it is
        (the MQTT ingest, which must not overwrite an app's richer document).
        """
        # Oldest first, so that an entry's delta is computed from its predecessor; the
        # outcomes come back in the order of the items (each followed by its extras).
        order = sorted(range(len(items)), key=lambda i: items[i].date_ms)
        done: dict[int, list[Outcome]] = {}
        with self.writing() as stamp:
            for i in order:
                n = items[i]
                done[i] = [self._put_one(n, mode, near_duplicates, subject, stamp)]
                done[i] += [self._put_one(x, mode, near_duplicates, subject, stamp)
                            for x in n.extra]
        outcomes = [o for i in range(len(items)) for o in done[i]]
        self._announce(outcomes)
        return outcomes

    def _put_one(self, n: documents.Normalized, mode: str, near: bool, subject: str | None,
                 stamp: Callable[[], int]) -> Outcome:
        found, how = self.match(n)
        if found is None and near and n.coll == documents.ENTRIES and n.kind == "sgv" \
                and n.value is not None:
            twin = self._near_duplicate(n)
            if twin is not None:
                return Outcome("near_duplicate", twin)
        if found is None:
            if n.coll == documents.ENTRIES and n.kind == "sgv" and "delta" not in n.doc:
                self._fill_delta(n)
            return Outcome("created", self.insert(n, subject, stamp()))
        if mode == "keep" and found.valid:
            return Outcome("duplicate", found)
        if not found.valid or mode == "replace":
            doc = dict(n.doc)
        else:
            doc = {**found.doc, **n.doc}
        if subject is not None:
            doc["subject"] = subject
        identifier = found.identifier
        previous = None
        if how == "pair" and n.identifier and n.identifier != identifier:
            previous, identifier = identifier, n.identifier  # API v3 re-keys a v1 document
        if doc == found.doc and found.valid and previous is None:
            return Outcome("unchanged", found)
        row = self._update(found, doc, identifier, n, stamp())
        return Outcome("updated", row, previous)

    def match(self, n: documents.Normalized) -> tuple[Row | None, str]:
        """The stored document (deleted ones too) a write of `n` would replace, and how it
        was found ("dedup", "identifier", ...); (None, "") for a new document."""
        if n.dedup is not None:
            row = self._one(n.coll, "dedup = ?", [n.dedup])
            if row is not None:
                return row, "dedup"
            if n.coll == documents.ENTRIES:
                return None, ""
        if n.identifier is not None:
            row = self._one(n.coll, "identifier = ?", [n.identifier])
            if row is None and documents.is_hex_id(n.identifier):
                row = self._one(n.coll, "oid = ?", [n.identifier.lower()])
            if row is not None:
                return row, "identifier"
        if n.oid is not None:
            row = self._one(n.coll, "oid = ?", [n.oid])
            if row is None:  # the `_id` another client gave as its identifier: the same key,
                row = self._one(n.coll, "identifier = ?", [n.oid])  # as looked up by either
            if row is not None:
                return row, "oid"
        # A document its app names (identifier; a treatment's own _id through the API
        # becomes one, documents.name_by_app_id) is never merged by time and type.
        if n.pair is not None and not n.client_identity:
            row = self._one(n.coll, "pair = ?", [n.pair])
            if row is not None:
                return row, "pair"
        return None, ""

    def _near_duplicate(self, n: documents.Normalized) -> Row | None:
        window = documents.NEAR_DUPLICATE_MS - 1
        rows = self.db.query(
            f"SELECT {_COLUMNS} FROM {TABLE} WHERE tenant_id = ? AND coll = ? AND kind = ? "
            "AND valid = 1 AND value = ? AND date_ms BETWEEN ? AND ? ORDER BY date_ms LIMIT 1",
            (self.site, documents.ENTRIES, "sgv", float(n.value), n.date_ms - window,
             n.date_ms + window))
        return Row.of(rows[0]) if rows else None

    def _fill_delta(self, n: documents.Normalized) -> None:
        """delta (mg/dL per 5 minutes) from the previous valid reading 30 s to 10 min older,
        for uploaders that send none (clocks and watch faces show it)."""
        if not isinstance(n.value, int | float) or n.value < 39:
            return
        rows = self.db.query(
            f"SELECT date_ms, value FROM {TABLE} WHERE tenant_id = ? AND coll = 'entries' "
            "AND kind = 'sgv' AND valid = 1 AND value >= 39 AND date_ms BETWEEN ? AND ? "
            "ORDER BY date_ms DESC LIMIT 1",
            (self.site, n.date_ms - documents.DELTA_MAX_GAP_MS, n.date_ms - documents.DELTA_MIN_GAP_MS))
        if rows:
            minutes = (n.date_ms - int(rows[0]["date_ms"])) / 60_000
            n.doc["delta"] = round((n.value - rows[0]["value"]) * 5 / minutes, 1)

    def insert(self, n: documents.Normalized, subject: str | None, stamp: int) -> Row:
        """Store `n` as a new document (inside writing())."""
        taken = n.oid is None or self._one(n.coll, "oid = ?", [n.oid]) is not None
        oid = documents.new_oid(stamp) if taken else n.oid
        identifier = n.identifier or oid
        if n.coll == documents.ENTRIES and n.identifier and self._one(
                n.coll, "identifier = ?", [n.identifier]) is not None:
            identifier = oid  # entries are matched on (type, date); another one has this id
        if identifier == oid and self._one(n.coll, "identifier = ?", [oid]) is not None:
            # an entry whose _id (its type and date's) another entry's uploader gave as its
            # identifier (other documents are matched to that one instead, match()): the _id
            # stays, the identifier is a new one
            identifier = documents.new_oid(stamp)
        doc = dict(n.doc)
        if subject is not None:
            doc["subject"] = subject
        rows = self.db.query(
            f"INSERT INTO {TABLE} (tenant_id, coll, oid, identifier, dedup, pair, date_ms, kind, "
            "value, srv_created, srv_modified, valid, doc) "
            f"VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?) RETURNING {_COLUMNS}",
            (self.site, n.coll, oid, identifier, n.dedup, n.pair, n.date_ms, n.kind[:200],
             n.value, stamp, stamp, jsonsafe.dumps(doc)))
        return Row.of(rows[0])

    def _update(self, found: Row, doc: dict, identifier: str, n: documents.Normalized,
                stamp: int) -> Row:
        """Store new content under a document's identity. Its deduplication key follows the
        content (a change of time or kind): left behind, a later upload at the new time
        would be stored beside it and one at the old time would overwrite it. DocumentError
        when another document already holds the new key."""
        if n.dedup is not None and self._one(
                n.coll, "dedup = ? AND id <> ?", [n.dedup, found.id]) is not None:
            raise documents.DocumentError(
                "Another document already has this time and kind; change that one instead.")
        rows = self.db.query(
            f"UPDATE {TABLE} SET doc = ?, identifier = ?, dedup = ?, date_ms = ?, kind = ?, "
            "value = ?, pair = ?, srv_modified = ?, valid = 1 WHERE id = ? "
            f"RETURNING {_COLUMNS}",
            (jsonsafe.dumps(doc), identifier, n.dedup, n.date_ms, n.kind[:200], n.value,
             n.pair, stamp, found.id))
        return Row.of(rows[0])

    def replace(self, coll: str, key: str, n: documents.Normalized, *,
                subject: str | None = None) -> Outcome:
        """Replace the document whose oid or identifier is `key`, or create it under that key
        (a PUT); the caller decides what a deleted document means."""
        with self.writing() as stamp:
            found = self.get(coll, key)
            if found is None:
                if documents.is_hex_id(key):
                    n.oid = key.lower()
                else:
                    n.identifier, n.client_identity = key, True
                outcome = self._put_one(n, "replace", False, subject, stamp)
            else:
                doc = dict(n.doc)
                if subject is not None:
                    doc["subject"] = subject
                outcome = Outcome("updated", self._update(found, doc, found.identifier, n,
                                                          stamp()))
        self._announce([outcome])
        return outcome

    def update(self, row: Row, n: documents.Normalized, *, modified_by: str | None = None) -> Row:
        """Replace a stored document's content, keeping its identity (API v3 PUT and PATCH)."""
        doc = dict(n.doc)
        if modified_by is not None:
            doc["modifiedBy"] = modified_by
        with self.writing() as stamp:
            out = self._update(row, doc, row.identifier, n, stamp())
        self._announce([Outcome("updated", out)])
        return out

    def delete(self, rows: Sequence[Row], *, permanent: bool = False,
               modified_by: str | None = None) -> int:
        """Delete documents: soft (kept for history, `isValid: false`) unless permanent."""
        if not rows:
            return 0
        gone: list[Row] = []
        with self.writing() as stamp:
            for row in rows:
                if permanent:
                    self.db.execute(f"DELETE FROM {TABLE} WHERE id = ?", (row.id,))
                    gone.append(row)
                    continue
                doc = dict(row.doc)
                if modified_by is not None:
                    doc["modifiedBy"] = modified_by
                new = self.db.query(
                    f"UPDATE {TABLE} SET valid = 0, srv_modified = ?, doc = ? WHERE id = ? "
                    f"RETURNING {_COLUMNS}", (stamp(), jsonsafe.dumps(doc), row.id))
                gone.append(Row.of(new[0]))
        if self.notify is not None:
            by_coll: dict[str, list[Row]] = {}
            for row in gone:
                by_coll.setdefault(row.coll, []).append(row)
            for coll, group in by_coll.items():
                self.notify(self.site, coll, "delete", group)
        return len(gone)

    def purge_deleted(self, older_than_ms: int) -> int:
        """Drop soft-deleted documents whose deletion is older than this (retention)."""
        with self.db.transaction():
            return self.db.execute(f"DELETE FROM {TABLE} WHERE tenant_id = ? AND valid = 0 "
                                   "AND srv_modified < ?", (self.site, older_than_ms))

    def writing(self):
        """The site's write transaction, its lock taken before anything is read, for a
        writer that reads and writes several documents as one step."""
        return _Writing(self)

    def _announce(self, outcomes: list[Outcome]) -> None:
        if self.notify is None:
            return
        for action in ("created", "updated"):
            by_coll: dict[str, list[Row]] = {}
            for o in outcomes:
                if o.action == action:
                    by_coll.setdefault(o.row.coll, []).append(o.row)
            for coll, rows in by_coll.items():
                self.notify(self.site, coll, "create" if action == "created" else "update", rows)

    # -- reads ------------------------------------------------------------------------------

    def _one(self, coll: str, where: str, args: list) -> Row | None:
        """The row of a collection (any validity) matching `where`; used inside writes."""
        rows = self.db.query(
            f"SELECT {_COLUMNS} FROM {TABLE} WHERE tenant_id = ? AND coll = ? AND {where} "
            "LIMIT 1", (self.site, coll, *args))
        return Row.of(rows[0]) if rows else None

    def get(self, coll: str, key: str) -> Row | None:
        """The document whose `_id` or identifier is key (deleted ones too)."""
        rows = self.db.query(
            f"SELECT {_COLUMNS} FROM {TABLE} WHERE tenant_id = ? AND coll = ? "
            "AND (oid = ? OR identifier = ?) ORDER BY valid DESC LIMIT 1",
            (self.site, coll, key.lower() if documents.is_hex_id(key) else key, key))
        return Row.of(rows[0]) if rows else None

    def find(self, coll: str, query: Query | None = None, *, count: int = 10,
             ascending: bool = False, order: str = "date_ms", skip: int = 0,
             include_deleted: bool = False) -> list[Row]:
        """Documents matching the query, newest first (or ascending), at most count."""
        if order not in _ORDERS:
            raise ValueError(f"{order} is not a sort column.")
        query = query or Query(coll)
        out: list[Row] = []
        with regex_budget():  # a slow pattern: SlowQuery (a 400), not minutes of scanning
            for row in self._scan(coll, query, order, ascending, include_deleted):
                if query.where.parts and not query.matches(row.view()):
                    continue
                if skip:
                    skip -= 1
                    continue
                out.append(row)
                if len(out) >= count:
                    break
        return out

    def _scan(self, coll: str, query: Query, order: str, ascending: bool,
              include_deleted: bool) -> Iterator[Row]:
        """Rows in order, page by page (keyset), narrowed by the query's hints."""
        hints = query.hints
        where, args = ["tenant_id = ?", "coll = ?"], [self.site, coll]
        if not include_deleted:
            where.append("valid = 1")
        if hints.lo is not None:
            where.append("date_ms >= ?")
            args.append(hints.lo)
        if hints.hi is not None:
            where.append("date_ms <= ?")
            args.append(hints.hi)
        if hints.kinds is not None:
            if not hints.kinds:
                return
            where.append(f"kind IN ({', '.join('?' * len(hints.kinds))})")
            args += sorted(hints.kinds)
        if hints.ids is not None:
            if not hints.ids:
                return
            marks = ", ".join("?" * len(hints.ids))
            where.append(f"(oid IN ({marks}) OR identifier IN ({marks}))")
            ids = sorted(hints.ids)
            args += [i.lower() if documents.is_hex_id(i) else i for i in ids] + ids
        direction, cmp = ("ASC", ">") if ascending else ("DESC", "<")
        page, seen, after = 200, 0, None
        while seen < MAX_SCAN:
            sql, extra = " AND ".join(where), []
            if after is not None:
                sql += f" AND ({order} {cmp} ? OR ({order} = ? AND id {cmp} ?))"
                extra = [after[0], after[0], after[1]]
            rows = self.db.query(
                f"SELECT {_COLUMNS} FROM {TABLE} WHERE {sql} "
                f"ORDER BY {order} {direction}, id {direction} LIMIT ?",
                (*args, *extra, page))
            for r in rows:
                seen += 1
                yield Row.of(r)
            if len(rows) < page:
                return
            after = (rows[-1][order], rows[-1]["id"])
            page = min(page * 4, 5000)

    def latest(self, coll: str, *, kind: str | None = None, count: int = 1,
               lo: int | None = None, hi: int | None = None,
               ascending: bool = False) -> list[Row]:
        """The newest (or oldest) documents of a kind in a time range: internal readers."""
        return self.find(coll, between(coll, lo, hi, kind), count=count, ascending=ascending)

    def readings(self, lo: int, hi: int) -> list[tuple[int, float]]:
        """(date ms, mg/dL) of the sgv entries in [lo, hi), oldest first, error codes too."""
        rows = self.db.query(
            f"SELECT date_ms, value FROM {TABLE} WHERE tenant_id = ? AND coll = 'entries' "
            "AND kind = 'sgv' AND valid = 1 AND date_ms >= ? AND date_ms < ? "
            "AND value IS NOT NULL ORDER BY date_ms", (self.site, lo, hi))
        return [(int(r["date_ms"]), r["value"]) for r in rows]

    def activity(self, coll: str, kind: str | None, lo: int, hi: int) -> tuple[int, int]:
        """(how many, newest srvModified) of a collection's documents in [lo, hi): what a
        cached summary of that window depends on."""
        sql = (f"SELECT count(*) AS n, max(srv_modified) AS m FROM {TABLE} WHERE tenant_id = ? "
               "AND coll = ? AND valid = 1 AND date_ms >= ? AND date_ms < ?")
        args: list = [self.site, coll, lo, hi]
        if kind is not None:
            sql += " AND kind = ?"
            args.append(kind)
        rows = self.db.query(sql, args)
        return (int(rows[0]["n"]), int(rows[0]["m"] or 0)) if rows else (0, 0)

    def newest_time(self, coll: str, kind: str | None = None) -> int | None:
        """The time (date_ms) of the collection's newest document of a kind."""
        rows = self.latest(coll, kind=kind, count=1)
        return rows[0].date_ms if rows else None

    def history(self, coll: str, since_ms: int, *, inclusive: bool = False,
                limit: int = 1000) -> list[Row]:
        """Documents changed after since_ms (deleted ones too), oldest change first."""
        rows = self.db.query(
            f"SELECT {_COLUMNS} FROM {TABLE} WHERE tenant_id = ? AND coll = ? "
            f"AND srv_modified {'>=' if inclusive else '>'} ? ORDER BY srv_modified, id LIMIT ?",
            (self.site, coll, since_ms, limit))
        return [Row.of(r) for r in rows]

    def last_modified(self, coll: str | None = None) -> int | None:
        """The newest srvModified of a collection (or of the whole site), None when empty."""
        if coll is None:
            rows = self.db.query(f"SELECT max(srv_modified) AS m FROM {TABLE} "
                                 "WHERE tenant_id = ?", (self.site,))
        else:
            rows = self.db.query(f"SELECT max(srv_modified) AS m FROM {TABLE} "
                                 "WHERE tenant_id = ? AND coll = ?", (self.site, coll))
        value = rows[0]["m"] if rows else None
        return int(value) if value is not None else None

    def count(self, coll: str, *, include_deleted: bool = False) -> int:
        rows = self.db.query(
            f"SELECT count(*) AS n FROM {TABLE} WHERE tenant_id = ? AND coll = ?"
            + ("" if include_deleted else " AND valid = 1"), (self.site, coll))
        return int(rows[0]["n"]) if rows else 0

    def all_rows(self, coll: str) -> Iterator[Row]:
        """Every valid document of a collection, oldest first (exports)."""
        yield from self._scan(coll, Query(coll), "date_ms", True, False)


def between(coll: str, lo: int | None = None, hi: int | None = None,
            kind: str | None = None) -> Query:
    """A query for a time range [lo, hi] (ms, inclusive) and optionally one kind."""
    query = Query(coll)
    field = documents.time_field(coll)
    if lo is not None:
        query.add(Cond(field, "$gte", Instant(lo)))
    if hi is not None:
        query.add(Cond(field, "$lte", Instant(hi)))
    if kind is not None:
        query.add(Cond({documents.ENTRIES: "type", documents.TREATMENTS: "eventType",
                        documents.DEVICESTATUS: "device"}.get(coll, "type"), "$eq", kind))
    return query


class _Writing:
    """One write transaction, serialised per site, handing out strictly increasing stamps."""

    def __init__(self, store: DocumentStore):
        self.store = store
        self._tx = None
        self._last = 0

    def __enter__(self) -> Callable[[], int]:
        store = self.store
        self._tx = store.db.transaction()
        self._tx.__enter__()
        if store.db.kind == "postgres":
            store.db.execute("SELECT pg_advisory_xact_lock(hashtext(?))", (f"ns:{store.site}",))
            store.db.execute("SELECT pg_notify(?, ?)", (LIVE_CHANNEL, store.site))
        rows = store.db.query(f"SELECT max(srv_modified) AS m FROM {TABLE} WHERE tenant_id = ?",
                              (store.site,))
        self._last = int(rows[0]["m"] or 0) if rows else 0
        return self.stamp

    def stamp(self) -> int:
        self._last = max(int(time.time() * 1000), self._last + 1)
        return self._last

    def __exit__(self, *exc) -> Any:
        return self._tx.__exit__(*exc)


def now_ms() -> int:
    return int(time.time() * 1000)


__all__ = ["DDL", "DocumentStore", "Outcome", "Row", "between", "times"]
