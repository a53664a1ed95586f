"""Predicted-low calibrations run in a process of their own, one API process at a time.

A calibration (`alert_calibration.recalibrate`) reads two weeks of a tenant's readings and
asks the clock's network about each of them: 0.3-0.7 s of Python and NumPy. Run in a thread
of an API process it holds that process's interpreter, and every poll the process answers
meanwhile waits (`bench api`: p95 about 190 ms over the requests it overlapped, 45 ms with no
calibration running). And every API process used to calibrate every tenant.

`Calibrations` (one per alert worker, so one per API process) therefore:

- claims the tenant in the database first (`TenantStore.claim_calibration`), so that of
  several API processes only one calibrates it; the claim is released when done, and one
  left by a process that died is taken over after `LEASE_S`. Once claimed, whether the
  calibration is still due is asked again: another process may have just finished it;
- runs it in a child process (spawned on the first calibration that needs one, ended after
  `IDLE_S` without one), which opens the database itself from its URL, reads, calibrates
  and stores; the API process only waits for the answer;
- runs it in a thread as before when no other process can open the database (SQLite in
  memory), and when the tenant has too few readings in the calibration's reach to make the
  nights it needs (`lowrisk.CAL_MIN_NIGHTS`): that answer, the model's own threshold, is
  decided at once and costs nothing.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from nightlink.cloud import alert_calibration
from nightlink.shared import lowrisk

_LOGGER = logging.getLogger(__name__)

LEASE_S = 600.0  # a claim older than this belongs to a process that died: taken over
IDLE_S = 600.0  # the child process ends after this long without a calibration
# What the fewest nights a calibration uses need at the least: COVERED of each night's
# minutes, with a 15-minute sensor's reading every 15 of them; and readings on as many UTC
# dates as they span (nights a day apart, each over hours, touch one date more than the
# days between the first and the last).
_NIGHT_MIN = (alert_calibration.NIGHT_MIN[1] - alert_calibration.NIGHT_MIN[0]) % 1440
FEW_READINGS = int(lowrisk.CAL_MIN_NIGHTS * _NIGHT_MIN * alert_calibration.COVERED / 15)
FEW_DATES = lowrisk.CAL_MIN_NIGHTS - 1

_STORE = None  # the child process's own store, opened on its first calibration
PARENT_CHECK_S = 1.0  # how often the child asks whether its API process is still there


def _watch_parent(parent: int) -> None:
    """In the child process: end it once its API process is gone. A killed API process
    (out of memory, SIGKILL) leaves its child waiting on a queue whose other end the child
    itself holds, so it would wait for ever, holding its memory."""
    import threading

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_S)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _recalibrate_here(url: str, tenant_id: str, now_ms: int) -> dict:
    """In the child process: open the database (once) and calibrate the tenant."""
    global _STORE
    from nightlink.cloud.store import Store

    if _STORE is None:
        _STORE = Store.open(url)
    return alert_calibration.recalibrate(_STORE.tenant(tenant_id), now_ms)


class Calibrations:
    """The predicted-low calibrations of one API process (see the module's text)."""

    def __init__(self, store, *, idle_s: float = IDLE_S, lease_s: float = LEASE_S):
        self.url = store.db.url  # None: no other process can open it
        self.idle_s = idle_s
        self.lease_s = lease_s
        self._pool: ProcessPoolExecutor | None = None
        self._used = 0.0  # time.monotonic() of the child's last calibration
        self.in_child = 0  # calibrations the child process made (the rest: in a thread)

    async def run(self, data, now_ms: int) -> dict | None:
        """Calibrate the tenant if it is due and no other process is calibrating it; the
        calibration stored, else None."""
        stamp = time.time()
        if not await asyncio.to_thread(self._claim, data, now_ms, stamp):
            return None
        try:
            if self.url is None or await asyncio.to_thread(self._few, data, now_ms):
                return await asyncio.to_thread(alert_calibration.recalibrate, data, now_ms)
            pool = self._executor()
            try:
                doc = await asyncio.get_running_loop().run_in_executor(
                    pool, _recalibrate_here, self.url, data.tenant_id, now_ms)
            except BrokenProcessPool:  # the child died (killed, out of memory): a new one
                self._forget(pool)
                raise
            self._used = time.monotonic()
            self.in_child += 1
            return doc
        finally:
            await asyncio.to_thread(data.release_calibration, stamp)

    def _claim(self, data, now_ms: int, stamp: float) -> bool:
        if not alert_calibration.due(data, now_ms):
            return False
        if not data.claim_calibration(stamp, self.lease_s):
            return False
        if alert_calibration.due(data, now_ms):  # not just done by another process
            return True
        data.release_calibration(stamp)
        return False

    @staticmethod
    def _few(data, now_ms: int) -> bool:
        """Too few readings in the calibration's reach for the nights it needs."""
        n, dates = data.reading_spread(now_ms - alert_calibration.READ_BACK_MS, now_ms + 1)
        return n < FEW_READINGS or dates < FEW_DATES

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawned, not forked: this process runs threads (the server's, the database's)
            self._pool = ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                initializer=_watch_parent, initargs=(os.getpid(),))
            self._used = time.monotonic()
        return self._pool

    def pid(self) -> int | None:
        """The child process's id while it runs."""
        procs = list((getattr(self._pool, "_processes", None) or {}).values())
        return procs[0].pid if procs else None

    def end_if_idle(self) -> None:
        """End the child process after idle_s without a calibration."""
        if self._pool is not None and time.monotonic() - self._used >= self.idle_s:
            self.close()

    def _forget(self, pool: ProcessPoolExecutor) -> None:
        if self._pool is pool:
            self._pool = None
        pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        """End the child process (a calibration under way finishes first, on its own)."""
        if self._pool is not None:
            self._forget(self._pool)
