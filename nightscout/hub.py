"""The live fan-out of one process: document changes, announcements and alarms per site, for
socket.io and WebSocket clients.

Writers publish from any thread (the store's notify hook, the ingest, the alert worker);
subscribers are asyncio queues, bounded, dropping their oldest message when one falls behind
(counted in `dropped`, reported through `on_drop`). A subscriber is a consumer inside the
process (the socket.io pump, one fan-out per tenant for the WebSocket, the alert worker), never
one client: clients have their own bounded queues downstream.

Changes made by other processes (more API workers, a separate ingest) come through the `feed`
the tier installs (the cloud's `cloud/livehub.py`: PostgreSQL LISTEN/NOTIFY, or one change-cursor
read per process on SQLite); `follow(site)` asks it to follow a site. Without a feed (the edge)
the hub polls each followed site itself. A change is published once whichever way it arrives
(`changed` remembers what it sent).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import OrderedDict, defaultdict
from typing import Any

_LOGGER = logging.getLogger(__name__)
QUEUE_SIZE = 256
WATCH_S = 2.0  # without a feed: the poll of a watched site
ALL = "*"  # subscribe to every site


class Hub:
    def __init__(self, directory=None, *, watch_s: float = WATCH_S):
        self.directory = directory
        self.watch_s = watch_s
        self.feed = None  # follows other processes' changes (installed by the tier)
        self.on_drop = None  # called with the number of messages a slow subscriber lost
        self._subs: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Queue]]] = \
            defaultdict(set)
        self._lock = threading.Lock()
        self._published: OrderedDict = OrderedDict()  # (row id, srv_modified) already sent
        self._watchers: dict[str, asyncio.Task] = {}
        self.dropped = 0

    # -- publishing (any thread) -------------------------------------------------------------

    def publish(self, site: str, type_: str, data: Any) -> bool:
        """Send {type, data} to the site's subscribers and to those of every site; False
        (nothing sent) for an alert already sent in the same state, raised or acknowledged, as
        the process that raised it and the feed that read it back may both publish it."""
        msg = {"type": type_, "site": site, "data": data}
        with self._lock:
            if type_ == "alert" and isinstance(data, dict) and "id" in data:
                key = ("alert", site, data["id"], data.get("acked_at") is not None)
                if key in self._published:
                    return False
                self._remember(key)
            subs = list(self._subs.get(site, ())) + list(self._subs.get(ALL, ()))
        for loop, queue in subs:
            with contextlib.suppress(RuntimeError):  # the loop has closed
                loop.call_soon_threadsafe(self._put, queue, msg)
        return True

    def _remember(self, key) -> None:
        """Note a key as sent (the caller holds the lock); the oldest are forgotten."""
        self._published[key] = None
        while len(self._published) > 20_000:
            self._published.popitem(last=False)

    def _put(self, queue: asyncio.Queue, msg: dict) -> None:
        if queue.full():
            queue.get_nowait()
            self.dropped += 1
            if self.on_drop is not None:
                self.on_drop(1)
        queue.put_nowait(msg)

    def changed(self, site: str, coll: str, action: str, rows: list) -> None:
        """The store's notify hook: documents created, updated or deleted."""
        fresh = []
        with self._lock:
            for row in rows:
                key = (row.id, row.srv_modified)
                if key in self._published:
                    continue
                self._remember(key)
                fresh.append(row)
        if not fresh:
            return
        self.publish(site, "change", {"coll": coll, "action": action, "rows": fresh})
        if coll == "entries" and action in ("create", "update"):
            for row in fresh:
                if row.doc.get("type") == "sgv":
                    self.publish(site, "entry", row.v1())

    def announce(self, site: str, title: str, message: str, subject: str = "") -> None:
        self.alarm(site, 0, title, message, group="Announcement", announcement=True)

    def alarm(self, site: str, level: int, title: str, message: str, *,
              group: str = "default", event: str | None = None, clear: bool = False,
              announcement: bool = False) -> None:
        """A Nightscout notification: level 2 urgent, 1 warning, 0 info; clear ends alarms."""
        doc: dict[str, Any] = {"level": level, "title": title, "message": message,
                               "group": group, "timestamp": int(time.time() * 1000)}
        if event:
            doc["eventName"] = event
        if clear:
            doc = {"clear": True, "title": "All Clear", "message": message, "group": group}
        if announcement:
            doc["isAnnouncement"] = True
        doc.setdefault("key", f"{event or group}_{level}")
        self.publish(site, "notification", doc)

    # -- subscribing (event loop) ------------------------------------------------------------

    def subscribe(self, site: str, *, size: int = QUEUE_SIZE) -> asyncio.Queue:
        """A queue of the site's messages (ALL: every site's) for the calling event loop."""
        queue: asyncio.Queue = asyncio.Queue(size)
        with self._lock:
            self._subs[site].add((asyncio.get_running_loop(), queue))
        if site != ALL and self.feed is None:
            self._watch(site)
        return queue

    def unsubscribe(self, site: str, queue: asyncio.Queue) -> None:
        with self._lock:
            self._subs[site] = {s for s in self._subs[site] if s[1] is not queue}
            if not self._subs[site]:
                del self._subs[site]

    async def follow(self, site: str) -> None:
        """Follow a site's changes made by other processes (socket.io and the live WebSocket
        do so while they have clients): through the tier's feed when it installed one (its
        first read of a site runs off the event loop), else by this hub's own poll of the
        site every `watch_s` (the edge, where one process writes)."""
        if self.feed is not None:
            await asyncio.to_thread(self.feed.watch, site)
        else:
            self._watch(site)

    def _watch(self, site: str) -> None:
        if self.directory is None or self.watch_s <= 0:
            return
        task = self._watchers.get(site)
        if task is None or task.done():
            self._watchers[site] = asyncio.get_running_loop().create_task(
                self._watcher(site), name=f"ns-watch-{site}")

    def watching(self, site: str) -> bool:
        with self._lock:
            return bool(self._subs.get(site)) or bool(self._subs.get(ALL))

    async def _watcher(self, site_key: str) -> None:
        site = await asyncio.to_thread(self.directory.site, site_key)
        if site is None:
            return
        last = await asyncio.to_thread(site.docs.last_modified) or 0
        idle = 0
        while idle < 30:  # stop a minute after the last subscriber left
            await asyncio.sleep(self.watch_s)
            idle = 0 if self.watching(site_key) else idle + 1
            try:
                last = await asyncio.to_thread(self._catch_up, site, last)
            except Exception as exc:  # noqa: BLE001 - a store error must not end the watcher
                _LOGGER.warning("live watcher of %s: %s", site_key, exc)
        self._watchers.pop(site_key, None)

    def _catch_up(self, site, last: int) -> int:
        newest = site.docs.last_modified()
        if newest is None or newest <= last:
            return last
        for coll in ("entries", "treatments", "devicestatus", "profile", "food", "activity",
                     "settings"):
            rows = site.docs.history(coll, last, limit=1000)
            for action in ("create", "update", "delete"):
                picked = [r for r in rows if _action(r) == action]
                if picked:
                    self.changed(site.key, coll, action, picked)
        return newest

    async def close(self) -> None:
        for task in list(self._watchers.values()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._watchers.clear()
        if self.feed is not None:
            await asyncio.to_thread(self.feed.stop)


def _action(row) -> str:
    if not row.valid:
        return "delete"
    return "create" if row.srv_created == row.srv_modified else "update"
