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
import time
from dataclasses import dataclass

from nightlink.sql import Database

RETRACTIONS_REPORTED = 32  # the newest undone imports the status report names
RETRACTED_NIGHTS_BYTES = 16384  # and their nights, while they take no more than this


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

    @classmethod
    def of(cls, r: dict) -> ImportRow:
        try:
            nights = json.loads(r["nights"])
        except ValueError:
            nights = []
        return cls(int(r["id"]), int(r["boot"]), r["source"], r["format"], r["tz"], r["at"],
                   r["first_s"], r["last_s"], int(r["samples"]),
                   [n for n in nights if isinstance(n, str)] if isinstance(nights, list)
                   else [], r["undone_at"])


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
                 doc_ids: list[str] | None = None) -> None:
        """Record what import `import_id` stored: the nights it summarised (added to those
        listed), the Nightscout documents it created."""
        with self.transaction():
            if nights:
                had = self.import_row(import_id).nights
                self.db.execute("UPDATE imports SET nights = ? WHERE id = ?",
                                (json.dumps(sorted(set(had) | set(nights))), import_id))
            if doc_ids:
                self.db.executemany(
                    "INSERT OR IGNORE INTO import_docs (import_id, oid) VALUES (?, ?)",
                    [(import_id, oid) for oid in doc_ids])

    def import_row(self, import_id: int) -> ImportRow:
        r = self.db.one("SELECT * FROM imports WHERE id = ?", (import_id,))
        if r is None:
            raise ImportUndoError(f"There is no import {import_id} in {self.path}.")
        return ImportRow.of(r)

    def imports(self, *, undone: bool = True) -> list[ImportRow]:
        """Every import, oldest first (without those undone unless `undone`)."""
        where = "" if undone else "WHERE undone_at IS NULL"
        return [ImportRow.of(r) for r in self.db.query(
            f"SELECT * FROM imports {where} ORDER BY id")]

    def import_counts(self, row: ImportRow) -> dict[str, int]:
        """What an import still holds in the store: epoch records, entries, beats, nights."""
        return {
            "records": int(self.db.scalar(
                "SELECT count(*) FROM records WHERE device = ? AND boot = ?",
                (self.device, row.boot))),
            "entries": int(self.db.scalar(
                "SELECT count(*) FROM import_docs i JOIN ns_docs d ON d.oid = i.oid AND "
                "d.valid = 1 AND d.tenant_id = ? WHERE i.import_id = ?", (self.docs.site,
                                                                          row.id))),
            "beats": int(self.db.scalar("SELECT count(*) FROM beats WHERE import_id = ?",
                                        (row.id,))),
            "nights": len(row.nights),
        }

    def undo_import(self, import_id: int) -> dict[str, int]:
        """Remove what import `import_id` stored (module docstring); what was removed, by
        kind. Raises ImportUndoError for an import not stored or undone already."""
        with self.transaction():
            row = self.import_row(import_id)
            if row.undone_at is not None:
                raise ImportUndoError(f"Import {import_id} was undone already.")
            queued = self.db.query(
                "SELECT r.stream, r.seq, r.count FROM records r JOIN outbox o ON "
                "o.record_id = r.id WHERE r.device = ? AND r.boot = ? ORDER BY r.stream, r.seq",
                (self.device, row.boot))
            for q in queued:  # never to be sent: the cloud's mark steps over them
                self.db.execute(
                    "INSERT INTO dropped_ranges (device, stream, first_seq, last_seq) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT DO UPDATE SET last_seq = "
                    "max(last_seq, excluded.last_seq)",
                    (self.device, q["stream"], q["seq"], q["seq"] + q["count"] - 1))
            self.db.execute("DELETE FROM outbox WHERE record_id IN (SELECT id FROM records "
                            "WHERE device = ? AND boot = ?)", (self.device, row.boot))
            records = self.db.execute("DELETE FROM records WHERE device = ? AND boot = ?",
                                      (self.device, row.boot))
            oids = [r["oid"] for r in self.db.query(
                "SELECT oid FROM import_docs WHERE import_id = ?", (import_id,))]
            docs = self.docs
            found = [d for d in (docs.get("entries", oid) for oid in oids)
                     if d is not None and d.valid]
            entries = docs.delete(found)
            beats = self.db.execute("DELETE FROM beats WHERE import_id = ?", (import_id,))
            for night in row.nights:
                self.db.execute("DELETE FROM nights WHERE night = ?", (night,))
            self.db.execute("UPDATE imports SET undone_at = ? WHERE id = ?",
                            (time.time(), import_id))
        return {"records": records, "queued": len(queued), "entries": entries,
                "beats": beats, "nights": len(row.nights)}

    def retractions(self, limit: int = RETRACTIONS_REPORTED) -> list[dict]:
        """The newest undone imports as the status report names them: {boot, nights}; the
        nights (whose apnea screens the cloud drops) of the newest while they fit in
        RETRACTED_NIGHTS_BYTES, so that the report stays small."""
        out, size = [], 0
        for r in self.db.query("SELECT * FROM imports WHERE undone_at IS NOT NULL "
                               "ORDER BY undone_at DESC, id DESC LIMIT ?", (limit,)):
            nights = ImportRow.of(r).nights
            size += 13 * len(nights)  # '"2026-01-15",'
            out.append({"boot": int(r["boot"]),
                        "nights": nights if size <= RETRACTED_NIGHTS_BYTES else []})
        return out
