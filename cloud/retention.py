"""Retention: tenants soft-deleted longer ago than the period are purged for good.

Run it once a day (cron, or a timer beside `nightlink cloud serve`). The audit rows stay,
so that the deletion itself remains on record.
"""

from __future__ import annotations

import logging
import time

from nightlink.cloud.store import Store

_LOGGER = logging.getLogger(__name__)


def purge_deleted(store: Store, older_than_days: int = 30, *,
                  now: float | None = None) -> list[str]:
    """Purge every tenant deleted more than `older_than_days` ago; return their ids."""
    cutoff = (time.time() if now is None else now) - older_than_days * 86400
    due = store.tenants_deleted_before(cutoff)
    for tenant_id in due:
        with store.transaction():
            rows = store.purge_tenant(tenant_id)
            store.audit("tenant.purge", tenant_id=tenant_id, rows=rows)
        _LOGGER.info("purged tenant %s (%d rows)", tenant_id, rows)
    return due


class RetentionWorker:
    """Runs `purge_deleted` at start and then once a day, on a daemon thread."""

    def __init__(self, store: Store, older_than_days: int, interval_s: float = 86400.0):
        import threading

        self.store = store
        self.older_than_days = older_than_days
        self.interval_s = interval_s
        self.purged: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="retention", daemon=True)

    def _run(self) -> None:
        from nightlink.sql import DatabaseError

        while not self._stop.is_set():
            try:
                self.purged += purge_deleted(self.store, self.older_than_days)
            except DatabaseError as exc:
                _LOGGER.warning("retention pass failed: %s; trying again later", exc)
            self._stop.wait(self.interval_s)

    def start(self) -> RetentionWorker:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
