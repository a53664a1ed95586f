"""The imports the store holds, so that one can be undone (`nightlink edge imports --undo`).

An import writes its epochs, its nights' summaries and classifier rows under a boot of its
own (the wire's boot number), so they are found by (device, boot) here and in the cloud. Its
Nightscout entries and beats are listed beside it. Undoing removes them all; the rows still
waiting in the outbox are given up as dropped ranges (the cloud's mark steps over them), and
the node's status report names the boot as retracted, so the cloud deletes its copy of the
rows, the entries derived from them and the nights' apnea screens (cloud/store/tenant.py
retract_boot), and refuses rows of that boot arriving late.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

from nightlink.edge.store.schema import SITE
from nightlink.shared.epoch import EPOCHS_PER_DAY as DAY_EPOCHS
from nightlink.sql import Database, DatabaseError

_LOGGER = logging.getLogger(__name__)
RETRACTIONS_REPORTED = 32  # the newest undone imports the status report names,
RETRACTIONS_BYTES = 16384  # while they take no more than this
UNDO_BATCH = 5000  # entries or beats deleted per transaction
UNDO_PAUSE_S = 0.02  # between them: SQLite's busy handler of a live writer finds a gap
IMPORT_DEVICE = "import-"  # how an imported entry's device begins (importer.py _storable)


class ImportUndoError(LookupError):
    """An import that cannot be undone: not stored, or undone already."""


@dataclass
class ImportRow:
    id: int
    boot: int
    source: str
    format: str
    tz: str
    at: float  # when it was imported (Unix s)
    first_s: float | None  # the span of what it stored
    last_s: float | None
    samples: int
    nights: list[str]  # the nights it summarised
    undone_at: float | None
    first_epoch: int | None = None  # where its records lie, recorded as they are written
    last_epoch: int | None = None

    @classmethod
    def of(cls, r: dict) -> ImportRow:
        try:
            nights = json.loads(r["nights"])
        except ValueError:
            nights = []
        return cls(int(r["id"]), int(r["boot"]), r["source"], r["format"], r["tz"], r["at"],
                   r["first_s"], r["last_s"], int(r["samples"]),
                   [n for n in nights if isinstance(n, str)] if isinstance(nights, list)
                   else [], r["undone_at"], r["first_epoch"], r["last_epoch"])


class Imports:
    db: Database
    device: str
    boot: int

    def begin_import(self, source: str, fmt: str, tz: str, span: tuple[float, float],
                     samples: int) -> int:
        """List an import of `samples` readings over `span` (Unix s) and give it a boot of its
        own (what this store writes from now on carries it); returns its id."""
        with self.transaction():
            boot = self.start_boot()
            return int(self.db.scalar(
                "INSERT INTO imports (boot, source, format, tz, at, first_s, last_s, samples) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (boot, source[:500], fmt, tz, time.time(), span[0], span[1], samples)))

    def imported(self, import_id: int, *, nights: list[str] | None = None,
                 doc_ids: list[str] | None = None, found_ids: list[str] | None = None,
                 epochs: tuple[int, int] | None = None) -> None:
        """Record what import `import_id` stored: the nights it summarised (added to those
        listed), the Nightscout documents it created (`doc_ids`) and those it found stored
        (`found_ids`: undoing another import that created them leaves them), epochs its
        records lie in (first, last; the span widened: the cloud is told it on an undo, after
        retention may have pruned the records here)."""
        with self.transaction():
            if epochs is not None:
                self.db.execute(
                    "UPDATE imports SET first_epoch = min(coalesce(first_epoch, ?), ?), "
                    "last_epoch = max(coalesce(last_epoch, ?), ?) WHERE id = ?",
                    (epochs[0], epochs[0], epochs[1], epochs[1], import_id))
            if nights:
                had = self.import_row(import_id).nights
                self.db.execute("UPDATE imports SET nights = ? WHERE id = ?",
                                (json.dumps(sorted(set(had) | set(nights))), import_id))
            rows = [(import_id, oid, 1) for oid in doc_ids or ()] + [
                (import_id, oid, 0) for oid in found_ids or ()]
            if rows:
                self.db.executemany(
                    "INSERT OR IGNORE INTO import_docs (import_id, oid, created) "
                    "VALUES (?, ?, ?)", rows)

    def keep_docs(self, oids: list[str]) -> None:
        """These entries, found stored when a live source (an uploader, the follower) brought
        them, are its too: undoing the import that stored them leaves them. A store refusing
        this (a full disk) is said, the live source's write itself having been done."""
        try:
            for at in range(0, len(oids), UNDO_BATCH // 10):
                part = oids[at:at + UNDO_BATCH // 10]
                marks = ", ".join("?" for _ in part)
                self.db.execute(f"INSERT OR IGNORE INTO live_docs (oid) SELECT DISTINCT oid "
                                f"FROM import_docs WHERE created = 1 AND oid IN ({marks})", part)
        except DatabaseError as exc:
            _LOGGER.warning("the store refused to note %d readings brought again as a live "
                            "source's (%s): undoing the import that stored them first would "
                            "remove them", len(oids), exc)

    def import_row(self, import_id: int) -> ImportRow:
        r = self.db.one("SELECT * FROM imports WHERE id = ?", (import_id,))
        if r is None:
            raise ImportUndoError(f"There is no import {import_id} in {self.path}.")
        return ImportRow.of(r)

    def imports(self) -> list[ImportRow]:
        """Every import, oldest first."""
        return [ImportRow.of(r) for r in self.db.query("SELECT * FROM imports ORDER BY id")]

    def import_counts(self, row: ImportRow) -> dict[str, int]:
        """What an import still holds in the store: epoch records, entries (it stored, or
        found stored), beats, nights."""
        return {
            "records": int(self.db.scalar(
                "SELECT count(*) FROM records WHERE device = ? AND boot = ?",
                (self.device, row.boot))),
            "entries": int(self.db.scalar(
                "SELECT count(*) FROM import_docs i JOIN ns_docs d ON d.oid = i.oid AND "
                "d.valid = 1 AND d.tenant_id = ? WHERE i.import_id = ?", (SITE, row.id))),
            "beats": int(self.db.scalar("SELECT count(*) FROM beats WHERE import_id = ?",
                                        (row.id,))),
            "nights": len(row.nights),
        }

    def overlapping(self, row: ImportRow) -> list[ImportRow]:
        """The other imports not undone whose span meets this one's."""
        if row.first_s is None:
            return []
        return [ImportRow.of(r) for r in self.db.query(
            "SELECT * FROM imports WHERE id != ? AND undone_at IS NULL AND first_s <= ? AND "
            "last_s >= ? ORDER BY id", (row.id, row.last_s, row.first_s))]

    def undo_import(self, import_id: int) -> dict[str, int]:
        """Remove what import `import_id` stored (module docstring); what was removed, by
        kind. A day of records per transaction, so a live node sharing the store waits for
        one, not for the whole undo; interrupted, it is finished by undoing it again. Raises
        ImportUndoError for an import not stored or undone already."""
        row = self.import_row(import_id)
        if row.undone_at is not None:
            raise ImportUndoError(f"Import {import_id} was undone already.")
        mine = ("device = ? AND boot = ?", (self.device, row.boot))
        held = self.db.one(f"SELECT min(epoch) AS a, max(epoch + count - 1) AS b FROM records "
                           f"WHERE {mine[0]}", mine[1])
        out = {"records": 0, "queued": 0, "entries": 0, "beats": 0, "nights": 0}
        if held["a"] is not None:
            self.imported(import_id, epochs=(held["a"], held["b"]))  # (stores of before)
            for lo in range(held["a"], held["b"] + 1, DAY_EPOCHS):
                with self.transaction():
                    self._undo_records(mine, lo, lo + DAY_EPOCHS, out)
                time.sleep(UNDO_PAUSE_S)  # a live node sharing the store gets its turn
        # Its entries that an import stored (this one, or one undone before that this one
        # found them from) and no other import not undone holds: a reading an uploader or
        # the follower stored, before or after, stays
        oids = [r["oid"] for r in self.db.query(
            "SELECT i.oid FROM import_docs i WHERE i.import_id = ? AND EXISTS (SELECT 1 FROM "
            "import_docs c WHERE c.oid = i.oid AND c.created = 1) AND NOT EXISTS (SELECT 1 "
            "FROM import_docs o JOIN imports m ON m.id = o.import_id WHERE o.oid = i.oid AND "
            "o.import_id != i.import_id AND m.undone_at IS NULL) AND NOT EXISTS (SELECT 1 "
            "FROM live_docs l WHERE l.oid = i.oid)", (import_id,))]
        docs = self.docs
        for at in range(0, len(oids), UNDO_BATCH):
            if at:
                time.sleep(UNDO_PAUSE_S)
            with self.transaction():
                part = oids[at:at + UNDO_BATCH]
                marks = ", ".join("?" for _ in part)
                # a live source may have brought some again during the pauses
                kept = {r["oid"] for r in self.db.query(
                    f"SELECT oid FROM live_docs WHERE oid IN ({marks})", part)}
                # (an uploader's copy sent through the Nightscout API merged into it: its
                # device then names the uploader, and it stays)
                found = [d for d in (docs.get("entries", oid) for oid in part
                                     if oid not in kept)
                         if d is not None and d.valid
                         and str(d.doc.get("device", "")).startswith(IMPORT_DEVICE)]
                out["entries"] += docs.delete(found)
        while True:
            with self.transaction():
                n = self.db.execute("DELETE FROM beats WHERE t_ms IN (SELECT t_ms FROM beats "
                                    "WHERE import_id = ? LIMIT ?)", (import_id, UNDO_BATCH))
            out["beats"] += n
            if n < UNDO_BATCH:
                break
        with self.transaction():
            for night in row.nights:
                out["nights"] += self.db.execute("DELETE FROM nights WHERE night = ?", (night,))
            self.db.execute("UPDATE imports SET undone_at = ? WHERE id = ?",
                            (time.time(), import_id))
        return out

    def _undo_records(self, mine: tuple, lo: int, hi: int, out: dict) -> None:
        """Delete the import's records of epochs [lo, hi); those still in the outbox are
        never to be sent: their seqs are given up as dropped ranges, so that the cloud's mark
        steps over them."""
        where, args = f"{mine[0]} AND epoch >= ? AND epoch < ?", (*mine[1], lo, hi)
        queued = self.db.query(
            f"SELECT stream, seq, count FROM records WHERE {where} AND id IN (SELECT record_id "
            f"FROM outbox) ORDER BY stream, seq", args)
        by_stream: dict[int, list[int]] = {}
        for q in queued:
            by_stream.setdefault(q["stream"], []).extend(range(q["seq"], q["seq"] + q["count"]))
        for stream, seqs in by_stream.items():
            self.give_up(self.device, stream, seqs)
        self.db.execute(f"DELETE FROM outbox WHERE record_id IN (SELECT id FROM records "
                        f"WHERE {where})", args)
        out["records"] += self.db.execute(f"DELETE FROM records WHERE {where}", args)
        out["queued"] += len(queued)

    def retractions(self, limit: int = RETRACTIONS_REPORTED) -> list[dict]:
        """The newest undone imports as the status report names them: {boot, nights,
        epochs}, while they fit in RETRACTIONS_BYTES (the cloud retracts each once, so an
        import is named whole or not at all)."""
        out, size = [], 0
        for r in self.db.query("SELECT * FROM imports WHERE undone_at IS NOT NULL "
                               "ORDER BY undone_at DESC, id DESC LIMIT ?", (limit,)):
            item = {"boot": int(r["boot"]), "nights": ImportRow.of(r).nights}
            if r["first_epoch"] is not None:
                item["epochs"] = [int(r["first_epoch"]), int(r["last_epoch"])]
            size += len(json.dumps(item))
            if size > RETRACTIONS_BYTES:
                break
            out.append(item)
        return out
