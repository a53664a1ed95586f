"""The cloud's only door to its database: every SQL statement of the cloud lives in this
package (the Nightscout documents in `nightlink.nightscout.store`).

`Store` holds what is not any one tenant's (tenants, users, devices for authentication,
dead letters, audit). Everything a tenant owns is reached only through
`Store.tenant(tenant_id)`, a `TenantStore` whose every statement filters on that tenant.
"""

from nightlink.cloud.store.repo import (
    ROLES,
    ConflictError,
    NotFoundError,
    Row,
    Store,
    TenantStore,
    pack_row,
    secret_hash,
    unpack_row,
)
from nightlink.sql import DatabaseError, IntegrityError

__all__ = ["ROLES", "ConflictError", "DatabaseError", "IntegrityError", "NotFoundError", "Row",
           "Store", "TenantStore", "secret_hash", "pack_row", "unpack_row"]
