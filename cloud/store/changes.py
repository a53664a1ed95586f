"""What changed in a tenant since a cursor: the statements behind the live hub's change feed.

A cursor is (newest srvModified of the tenant's Nightscout documents, newest alert id, newest
alert acknowledgement time). The live feed of each process keeps one per watched tenant and
asks only for what lies beyond it, so one process reads a change once, however many clients
watch the tenant.

On PostgreSQL every writer announces its tenant on the `LIVE_CHANNEL` (NOTIFY, delivered at
commit; the documents' writer does so in `nightscout/store/collections.py`, alerts here), and
the feed LISTENs on its own connection. On SQLite the feed asks `PRAGMA data_version` (it
changes when another connection commits) and then reads every watched tenant's cursor in one
statement.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from nightlink.cloud.store.base import from_json
from nightlink.nightscout.store import collections as ns_collections
from nightlink.sql import Database

LIVE_CHANNEL = ns_collections.LIVE_CHANNEL


@dataclass(frozen=True)
class Cursor:
    """How far a feed has read one tenant."""

    modified: int = 0  # newest srv_modified of its documents
    alert_id: int = 0
    acked_at: float = 0.0


def announce(db: Database, tenant_id: str) -> None:
    """Tell every process's live feed that the tenant changed (PostgreSQL: at commit)."""
    if db.kind == "postgres":
        db.execute("SELECT pg_notify(?, ?)", (LIVE_CHANNEL, tenant_id))


def data_version(db: Database) -> int | None:
    """SQLite's counter of commits made by other connections (None on PostgreSQL)."""
    if db.kind != "sqlite":
        return None
    return int(db.scalar("PRAGMA data_version"))


def cursors(db: Database, tenant_ids: Sequence[str]) -> dict[str, Cursor]:
    """The current cursor of each tenant, in one statement (each part an index seek)."""
    if not tenant_ids:
        return {}
    marks = ", ".join("?" * len(tenant_ids))
    rows = db.query(
        "SELECT t.id AS tenant_id, "
        f"(SELECT max(d.srv_modified) FROM {ns_collections.TABLE} d "
        "WHERE d.tenant_id = t.id) AS modified, "
        "(SELECT max(a.id) FROM alerts a WHERE a.tenant_id = t.id) AS alert_id, "
        "(SELECT max(a.acked_at) FROM alerts a WHERE a.tenant_id = t.id) AS acked_at "
        f"FROM tenants t WHERE t.id IN ({marks})", tuple(tenant_ids))
    return {r["tenant_id"]: Cursor(int(r["modified"] or 0), int(r["alert_id"] or 0),
                                   float(r["acked_at"] or 0.0)) for r in rows}


def documents_since(db: Database, tenant_id: str, modified: int, *, limit: int = 1000
                    ) -> list[ns_collections.Row]:
    """The tenant's documents (every collection, deleted ones too) changed after `modified`,
    oldest change first."""
    rows = db.query(
        f"SELECT {ns_collections.COLUMNS} FROM {ns_collections.TABLE} WHERE tenant_id = ? "
        "AND srv_modified > ? ORDER BY srv_modified, id LIMIT ?", (tenant_id, modified, limit))
    return [ns_collections.Row.of(r) for r in rows]


def alerts_since(db: Database, tenant_id: str, alert_id: int, acked_at: float,
                 *, limit: int = 200) -> list[dict]:
    """The tenant's alerts raised after `alert_id` or acknowledged after `acked_at`."""
    rows = db.query("SELECT * FROM alerts WHERE tenant_id = ? AND (id > ? OR acked_at > ?) "
                    "ORDER BY id LIMIT ?", (tenant_id, alert_id, acked_at, limit))
    for r in rows:
        r["detail"] = from_json(r["detail"])
    return rows


class Listener:
    """A PostgreSQL connection LISTENing on the live channel (its own, outside the pool)."""

    def __init__(self, dsn: str):
        import psycopg

        self._psycopg = psycopg
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.conn.execute(f"LISTEN {LIVE_CHANNEL}")

    def wait(self, timeout: float) -> set[str]:
        """The tenants announced within `timeout` seconds (empty if none), and any announced
        right after the first."""
        try:
            got = {n.payload for n in self.conn.notifies(timeout=timeout, stop_after=1)}
            if got:
                got |= {n.payload for n in self.conn.notifies(timeout=0.005)}
            return got
        except self._psycopg.Error as exc:
            from nightlink.sql import DatabaseError

            raise DatabaseError(str(exc)) from None

    def close(self) -> None:
        self.conn.close()
