"""The edge node's only door to its database: every SQL statement of the edge lives in this
package (the Nightscout documents and tokens in `nightlink.nightscout`).

One SQLite file through `nightlink.sql.SQLiteDatabase`: WAL, one writer at a time (its lock),
numbered migrations (`schema.py`). `EdgeStore` keeps every epoch record with its sequence
number and an outbox row written in the same transaction (`records.py`, `outbox.py`: what the
sync sends), the Nightscout documents of the local site (the entries the local Nightscout
endpoint, the follower and the importers store) with every change of a treatment queued for
the cloud by a trigger (`doc_outbox.py`), source states, gaps, night summaries and dead
letters (`status.py`), and the imports, so that one can be undone (`imports.py`). Retention is
bounded.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterable
from pathlib import Path

from nightlink.edge.store.doc_outbox import CloudDocs, DocChange, DocOutbox
from nightlink.edge.store.imports import Imports
from nightlink.edge.store.outbox import Outbox, OutboxItem
from nightlink.edge.store.records import Records
from nightlink.edge.store.schema import SITE, migrate, schema_version
from nightlink.edge.store.status import Status
from nightlink.nightscout import documents as ns_documents
from nightlink.nightscout import store as ns_store
from nightlink.nightscout.store import Subjects
from nightlink.shared import codec
from nightlink.sql import DatabaseError, NotThisStore, SQLiteDatabase, storage_problem

_LOGGER = logging.getLogger(__name__)
__all__ = ["SITE", "DocChange", "EdgeStore", "OutboxItem", "StoreError"]


class StoreError(Exception):
    """The store cannot be opened or used as asked."""


RESERVE_SUFFIX = ".reserve"


def reserve_path(db: Path) -> Path:
    return db.with_name(db.name + RESERVE_SUFFIX)


def free_bytes(db: Path) -> int | None:
    """Bytes an unprivileged writer may still use on the store's filesystem."""
    try:
        return shutil.disk_usage(db.parent).free
    except OSError:
        return None


def release_reserve(db: Path) -> int:
    """Delete the reserve beside the store; the bytes it gave back (0: there was none)."""
    path = reserve_path(db)
    try:
        size = path.stat().st_size
        path.unlink()
    except OSError:
        return 0
    return size


def keep_reserve(db: Path, size: int) -> bool:
    """Make the reserve beside the store when it is missing and the filesystem has four times
    its size free (never the one to fill it); whether it is there."""
    path = reserve_path(db)
    try:
        if path.is_file() and path.stat().st_size >= size:
            return True
        if (free_bytes(db) or 0) < 4 * size:
            return False
        with open(path, "wb") as f:
            try:  # the blocks allocated, not a sparse file
                os.posix_fallocate(f.fileno(), 0, size)
            except OSError:  # (a filesystem without fallocate: written, not zeros, which a
                for _ in range(0, size, 1 << 20):  # compressing one would not store)
                    f.write(os.urandom(1 << 20))
                f.truncate(size)
            f.flush()
            os.fsync(f.fileno())
        _LOGGER.info("reserve of %d KB kept at %s (deleted when the disk fills)", size // 1024,
                     path)
        return True
    except OSError as exc:
        with contextlib.suppress(OSError):
            path.unlink()
        _LOGGER.warning("no reserve at %s (%s), so the node could not start on a full disk",
                        path, exc)
        return False


class EdgeStore(Records, Outbox, DocOutbox, CloudDocs, Status, Imports):
    """The local store. Writes go through one lock (one writer); reads may come from any
    thread and read the last commit without waiting (nightlink/sql.py)."""

    def __init__(self, path: Path | str, *, retention_days: int = 30,
                 reserve_bytes: int | None = None):
        """`reserve_bytes` (the live node's; None for every other command, which leave the
        reserve alone): keep a file of that size beside the store, deleted when the
        filesystem has less than that free, at start or when a write is refused, so that the
        node starts and goes on on a full SD card (docs/deploy.md); 0 deletes one kept
        before."""
        if retention_days < 1:
            raise StoreError("retention_days must be at least 1.")
        self.path = Path(path)
        self.retention_days = retention_days
        if self.path.is_file() and self.path.stat().st_size == 0:
            _LOGGER.warning("%s is empty: a new store is made, with a new device id; if this "
                            "node was registered with the cloud, its copy was lost (put back "
                            "a backup, see docs/deploy.md)", self.path)
        self.notify = None  # the live hub's hook for Nightscout document changes
        self.reserve_bytes = reserve_bytes or 0
        self.live = reserve_bytes is not None  # the live node's: it starts on a full disk
        free = free_bytes(self.path)
        if reserve_bytes == 0:
            release_reserve(self.path)  # reserve_mb = 0: none kept
        elif reserve_bytes and free is not None and free < reserve_bytes:
            # a filesystem this full may let the store open, but not write for long
            self.use_reserve(f"the filesystem holding {self.path.parent} has {free // 1024} "
                             "KB free")
        self._open()
        self.renew_reserve()

    def use_reserve(self, why: str) -> int:
        """Delete the reserve (the filesystem is full: `why`), saying so; the bytes freed."""
        freed = release_reserve(self.path) if self.reserve_bytes else 0
        if freed:
            _LOGGER.warning("%s: the node deleted its reserve (%s, %d KB) to go on; free space "
                            "on that filesystem (the node makes the reserve again once there "
                            "is room)", why, reserve_path(self.path), freed // 1024)
        return freed

    def renew_reserve(self) -> bool:
        """Keep the reserve (the live node's, made again once there is room: hourly), and
        share the store again if it was opened alone on a full filesystem."""
        if self.db.alone and self.db.share():
            _LOGGER.warning("there is room again on the filesystem holding %s: the store is "
                            "open to other programs again", self.path.parent)
        return bool(self.reserve_bytes) and keep_reserve(self.path, self.reserve_bytes)

    def _open(self) -> None:
        try:  # durable: an upload answered is on the SD card before the answer goes
            self.db = SQLiteDatabase(self.path, durable=True,
                                     alone_when_full=self.live)
        except DatabaseError as exc:
            raise StoreError(str(exc)) from None
        if self.db.alone:
            _LOGGER.warning("%s: the store is open %s until there is room; `nightlink edge "
                            "status` and backups cannot read it meanwhile",
                            storage_problem(str(self.path)) or "the filesystem is full",
                            "read-only" if self.db.alone == "read-only" else
                            "for this node alone (its index in memory)")
        try:
            migrate(self.db)
        except NotThisStore as exc:
            self.db.close()
            raise StoreError(str(exc)) from None
        except DatabaseError as exc:
            self.db.close()
            raise StoreError(f"{self.path} could not be brought up to date ({exc}).") from None
        try:
            self.device = self._device_name()
            self.boot = int(self.meta("boot", "0"))
        except DatabaseError as exc:
            self.db.close()
            raise StoreError(f"{self.path} cannot be used ({exc}).") from None

    # -- set-up -------------------------------------------------------------------------

    def schema_version(self) -> int:
        return schema_version(self.db)

    def _device_name(self) -> str:
        name = self.meta("device")
        if name is None:
            name = codec.device_name(os.urandom(codec.DEVICE_ID_SIZE))
            self.set_meta("device", name)
        return name

    def transaction(self):
        """A write transaction under the writer lock: `with store.transaction(): ...`;
        nested use joins the outer one."""
        return self.db.transaction()

    def close(self) -> None:
        self.db.close()

    # -- meta ---------------------------------------------------------------------------

    def meta(self, key: str, default: str | None = None) -> str | None:
        value = self.db.scalar("SELECT value FROM meta WHERE key = ?", (key,))
        return default if value is None else value

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def start_boot(self) -> int:
        """Count one more start of the pipeline; records written from now on carry it."""
        with self.db.transaction():
            self.boot = int(self.meta("boot", "0")) + 1
            self.set_meta("boot", str(self.boot))
        return self.boot

    # -- Nightscout documents (the local Nightscout endpoint, followers, importers) ----------

    @property
    def docs(self) -> ns_store.DocumentStore:
        """The node's Nightscout collections, kept by the Nightscout core's rules."""
        return _EdgeDocuments(self.db, SITE, notify=self.notify, keep=self.keep_docs)

    @property
    def subjects(self) -> Subjects:
        return Subjects(self.db, SITE)

    def add_entries(self, entries: Iterable[dict], *,
                    import_id: int | None = None) -> tuple[int, int]:
        """Store Nightscout entries (the core's rules: one per (type, date), a reading already
        stored from another source is not stored again); return (stored, not stored).
        `import_id`: those stored are listed as that import's (imports.py)."""
        now = int(time.time() * 1000)
        normalized = []
        for e in entries:
            try:
                normalized.append(ns_documents.normalize("entries", e, now))
            except ns_documents.DocumentError as exc:
                self.dead_letter("entries", str(exc), json.dumps(e, default=str).encode())
        # an import's entries and their listing in one transaction (a live upload's are
        # announced to the live hub once committed, outside any transaction of this one)
        with self.transaction() if import_id is not None else contextlib.nullcontext():
            # an import's own put: the readings it finds stored are listed as found by it
            docs = self.docs if import_id is None else ns_store.DocumentStore(
                self.db, SITE, notify=self.notify)
            outcomes = docs.put(normalized, mode="keep") if normalized else []
            # "updated" in keep mode: a reading deleted before (an import undone), back
            mine = [o.row.oid for o in outcomes if o.action in ("created", "updated")]
            if import_id is not None:
                self.imported(import_id, doc_ids=mine, found_ids=[
                    o.row.oid for o in outcomes if o.action not in ("created", "updated")])
        return len(mine), len(outcomes) - len(mine)

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


class _EdgeDocuments(ns_store.DocumentStore):
    """The node's Nightscout documents: an entry a live writer (an uploader through the API,
    a socket's dbAdd, the follower) brings again or merges into is its too, so undoing the
    import that stored it first leaves it (imports.py keep_docs)."""

    def __init__(self, db, site: str, *, notify, keep):
        super().__init__(db, site, notify=notify)
        self._keep = keep

    def put(self, items, **options):
        outcomes = super().put(items, **options)
        again = [o.row.oid for o in outcomes
                 if o.row.coll == "entries" and o.action != "created"]
        if again:
            self._keep(again)
        return outcomes
