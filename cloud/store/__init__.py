"""The cloud's only door to its database: every SQL statement of the cloud lives in this
package (the Nightscout documents and tokens in `nightlink.nightscout.store`).

`Store` holds what is not any one tenant's: tenants, accounts and roles, secrets
(`accounts.py`), publishing devices, acknowledgements and dead letters (`devices.py`).
Everything a tenant owns is reached only through `Store.tenant(tenant_id)`, a `TenantStore`
(`tenant.py`) whose every statement filters on that tenant: code that holds one tenant's
handle cannot read or write another's data. Rows decode one way (`rows.py`); the schema is
a list of numbered migrations (`schema.py`).
"""

from __future__ import annotations

from nightlink.cloud.store.accounts import ROLES, Accounts
from nightlink.cloud.store.base import ConflictError, NotFoundError, secret_hash
from nightlink.cloud.store.devices import Devices
from nightlink.cloud.store.rows import Row, pack_row, unpack_row
from nightlink.cloud.store.rows import values as row_values
from nightlink.cloud.store.schema import migrate
from nightlink.cloud.store.tenant import TenantStore
from nightlink.nightscout.store import Subject, find_token
from nightlink.sql import Database, DatabaseError, IntegrityError, connect

__all__ = ["ROLES", "ConflictError", "DatabaseError", "IntegrityError", "NotFoundError", "Row",
           "Store", "TenantStore", "pack_row", "row_values", "secret_hash",
           "unpack_row"]


class Store(Accounts, Devices):
    """The cloud database: opened once per process, shared by its threads."""

    def __init__(self, db: Database):
        self.db = db
        self.version = migrate(db)
        self.notify = None  # set by the app: Nightscout document changes to the live hub
        self.access_listeners: list = []  # called when who may reach a tenant changes

    @classmethod
    def open(cls, url: str) -> Store:
        return cls(connect(url))

    def close(self) -> None:
        self.db.close()

    @property
    def backend(self) -> str:
        """"sqlite" or "postgres"."""
        return self.db.kind

    def transaction(self):
        """Statements inside run as one (nested uses join the outer transaction)."""
        return self.db.transaction()

    def find_token(self, presented: str) -> Subject | None:
        """The Nightscout access token (of any tenant) a client presented, None if unknown."""
        return find_token(self.db, presented)

    def ping(self) -> None:
        """Raise DatabaseError if the database does not answer (the readiness check)."""
        self.db.scalar("SELECT 1 AS one")

    def access_changed(self) -> None:
        """Tell the caches of credentials and sites that access changed (grants, secrets,
        tokens, tenants or accounts deleted)."""
        for listener in self.access_listeners:
            listener()

    def tenant(self, tenant_id: str, *, include_deleted: bool = False) -> TenantStore:
        """The handle for one tenant's data (the tenant must exist; a soft-deleted one only
        with include_deleted, which only administrators get)."""
        self.get_tenant(tenant_id, include_deleted=include_deleted)
        return TenantStore(self.db, tenant_id, self.notify)

    def purge_tenant(self, tenant_id: str) -> int:
        """Delete a soft-deleted tenant for good: its data, its devices' marks, its dead
        letters and the tenant itself; return how many rows its data held."""
        with self.db.transaction():
            data = TenantStore(self.db, tenant_id)
            devices = [d["id"] for d in data.devices()]
            rows = data.purge()
            for device in devices:
                self.forget_device_marks(device)
            self.db.execute("DELETE FROM dead_letters WHERE tenant_id = ?", (tenant_id,))
            self.db.execute("DELETE FROM tenants WHERE id = ?", (tenant_id,))
        return rows
