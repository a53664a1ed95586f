"""The outbox of Nightscout documents for the cloud: every change of a treatment on this node,
queued by a trigger in the same transaction as the change (`schema.py`), whoever made it.

A queued row names a document by its oid; what is sent is the document's newest state, read
when the batch is built (or, for one removed for good, the content it had). Its id is the
sequence number the cloud acknowledges; a row leaves only when the cloud has stored (or
refused for good) the change it carried.

The other way, the cloud's treatments (entered in the family's app, or by an uploader pointed
at the cloud) are applied here with the queue quiet, so they are not sent back, and never
over a document whose own change is still waiting to go up (that change wins: it reaches the
cloud next). The cursor of what the cloud has sent is kept in the same transaction.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from nightlink.edge.store.schema import SITE, SYNCED
from nightlink.nightscout import jsonsafe
from nightlink.nightscout.documents import Normalized, is_hex_id
from nightlink.sql import Database

_DUE = ("SELECT q.id, q.coll, q.oid, q.identifier, q.gone, d.doc, d.valid "
        "FROM doc_outbox q LEFT JOIN ns_docs d ON d.tenant_id = ? AND d.coll = q.coll "
        "AND d.oid = q.oid")


@dataclass(frozen=True)
class DocChange:
    """One queued change: its sequence number and the Nightscout document to send, with its
    `_id` and, when the document is deleted, Nightscout's marker `isValid: false`."""

    seq: int
    coll: str
    doc: dict

    @property
    def deleted(self) -> bool:
        return self.doc.get("isValid") is False


class DocOutbox:
    db: Database

    def doc_changes_due(self, *, resend_after_s: float, now: float,
                        limit: int = 100) -> list[DocChange]:
        """Changes to send: never sent, or sent longer ago than resend_after_s without an
        ack; oldest first."""
        rows = self.db.query(_DUE + " WHERE q.sent_at IS NULL OR q.sent_at < ? "
                             "ORDER BY q.id LIMIT ?", (SITE, now - resend_after_s, limit))
        return [_change(r) for r in rows]

    def doc_outbox_size(self) -> int:
        return self.db.scalar("SELECT count(*) AS n FROM doc_outbox")

    def mark_docs_sent(self, seqs: Iterable[int], at: float) -> None:
        with self.db.transaction():
            self.db.executemany("UPDATE doc_outbox SET sent_at = ? WHERE id = ?",
                                [(at, s) for s in seqs])

    def mark_docs_unsent(self) -> None:
        """A new connection: whatever was in flight may be lost."""
        self.db.execute("UPDATE doc_outbox SET sent_at = NULL")

    def requeue_docs_since(self, since_ms: int) -> int:
        """Queue again every synced document changed here since since_ms (the edge's own
        changes and the cloud's applied here), deletions included: the cloud lost them (its
        database put back from a backup taken before). The cloud's Nightscout rules keep a
        copy it still holds as it is. Returns the documents queued."""
        synced = ", ".join("?" for _ in SYNCED)
        return self.db.execute(
            "INSERT INTO doc_outbox (coll, oid, identifier, enqueued_at) "
            f"SELECT d.coll, d.oid, d.identifier, ? FROM ns_docs d WHERE d.tenant_id = ? "
            f"AND d.coll IN ({synced}) AND d.srv_modified >= ? AND NOT EXISTS (SELECT 1 FROM "
            "doc_outbox q WHERE q.coll = d.coll AND q.oid = d.oid) ORDER BY d.srv_modified",
            (time.time(), SITE, *SYNCED, since_ms))

    def ack_docs(self, ranges: Iterable[tuple[int, int]]) -> int:
        """The cloud holds the changes with these sequence numbers: they leave the outbox.
        A document changed again since has a newer number and stays."""
        with self.db.transaction():
            return sum(self.db.execute("DELETE FROM doc_outbox WHERE id BETWEEN ? AND ?",
                                       (first, last)) for first, last in ranges)

    @contextmanager
    def quiet_docs(self) -> Iterator[None]:
        """A write transaction whose changes to synced documents are not queued (the cloud's
        own documents being applied here): `with store.quiet_docs(): store.docs.put(...)`."""
        with self.db.transaction():
            for coll in SYNCED:
                self.db.execute("INSERT INTO doc_sync_quiet (coll) VALUES (?) "
                                "ON CONFLICT (coll) DO NOTHING", (coll,))
            yield
            self.db.execute("DELETE FROM doc_sync_quiet")


class CloudDocs:
    """The cloud's documents applied on the node (the mixin's half for the downlink)."""

    db: Database

    def cloud_cursor(self, coll: str) -> int | None:
        """The cloud's srvModified up to which its changes of coll are applied here."""
        value = self.meta(f"cloud_cursor:{coll}")
        return int(value) if value is not None else None

    def apply_cloud_changes(self, coll: str, changes: Iterable[tuple[Normalized, bool]],
                            cursor: int) -> tuple[int, int]:
        """Apply the cloud's changes ((document, deleted) pairs) without queueing them back,
        and move the cursor, in one transaction. A document with a change of its own waiting
        to go up is left as it is. Returns (documents stored, changed or deleted; skipped)."""
        with self.quiet_docs():
            pending = self.db.query("SELECT oid, identifier FROM doc_outbox WHERE coll = ?",
                                    (coll,))
            waiting = {r["oid"] for r in pending} | {r["identifier"] for r in pending}
            upserts, gone, skipped = [], [], 0
            for n, deleted in changes:
                if n.oid in waiting or n.identifier in waiting \
                        or any(self._local_oid(x) in waiting for x in (n, *n.extra)):
                    skipped += 1
                elif deleted:
                    row = next((r for k in (n.identifier, n.oid) if k
                                and (r := self.docs.get(coll, k)) is not None), None)
                    if row is not None and row.valid:
                        gone.append(row)
                else:
                    upserts.append(n)
            outcomes = self.docs.put(upserts, mode="replace") if upserts else []
            deleted_n = self.docs.delete(gone) if gone else 0
            self.set_meta(f"cloud_cursor:{coll}", str(int(cursor)))
        changed = sum(o.action in ("created", "updated") for o in outcomes)
        return changed + deleted_n, skipped


    def _local_oid(self, n: Normalized) -> str | None:
        """The oid of the local document a change would replace, by the core's rules in
        their order (identifier, `_id`, else created_at + eventType for a document without
        a client identity): a match by time and kind must not overwrite a local edit that
        is still waiting to go up."""
        hex_id = n.identifier.lower() if is_hex_id(n.identifier) else None
        where = [("identifier = ?", n.identifier), ("oid = ?", hex_id), ("oid = ?", n.oid)]
        if n.pair is not None and not n.client_identity:
            where.append(("pair = ?", n.pair))
        for clause, key in where:
            if key is None:
                continue
            row = self.db.one(f"SELECT oid FROM ns_docs WHERE tenant_id = ? AND coll = ? AND "
                              f"{clause} LIMIT 1", (SITE, n.coll, key))
            if row is not None:
                return row["oid"]
        return None


def _change(row: dict) -> DocChange:
    """The document a queued row sends: the stored one, marked deleted when it is; or the
    content of one removed for good (an empty one when even that is unknown)."""
    if row["doc"] is not None:
        doc = jsonsafe.load_stored(row["doc"])
        deleted = not row["valid"]
    else:
        doc = jsonsafe.load_stored(row["gone"]) if row["gone"] else {}
        deleted = True
    doc = dict(doc) if isinstance(doc, dict) else {}
    for key in ("_id", "srvCreated", "srvModified", "subject", "modifiedBy", "isValid"):
        doc.pop(key, None)
    doc["_id"] = row["oid"]
    if row["identifier"] != row["oid"]:
        doc.setdefault("identifier", row["identifier"])  # the API v3 key it was stored under
    if deleted:
        doc["isValid"] = False
    return DocChange(int(row["id"]), row["coll"], doc)
