"""In-process notifications for live updates: routes and ingest publish, WebSockets listen.

Each tenant has its own subscribers; a slow subscriber's queue is bounded and drops its
oldest message rather than holding the publisher up. Across processes (API and ingest
scaled out) the WebSocket side also polls the store, so this bus is a shortcut, not the
only path.
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict

QUEUE_SIZE = 256


class EventBus:
    def __init__(self):
        self._subs: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Queue]]] = \
            defaultdict(set)
        self._lock = threading.Lock()

    def publish(self, tenant_id: str, type_: str, data: dict) -> None:
        """Send {type, data} to every subscriber of the tenant (from any thread)."""
        msg = {"type": type_, "data": data}
        with self._lock:
            subs = list(self._subs.get(tenant_id, ()))
        for loop, queue in subs:
            loop.call_soon_threadsafe(_put_dropping_oldest, queue, msg)

    def subscribe(self, tenant_id: str) -> asyncio.Queue:
        """A queue of this tenant's messages for the calling event loop; unsubscribe after."""
        queue: asyncio.Queue = asyncio.Queue(QUEUE_SIZE)
        with self._lock:
            self._subs[tenant_id].add((asyncio.get_running_loop(), queue))
        return queue

    def unsubscribe(self, tenant_id: str, queue: asyncio.Queue) -> None:
        with self._lock:
            self._subs[tenant_id] = {s for s in self._subs[tenant_id] if s[1] is not queue}


def _put_dropping_oldest(queue: asyncio.Queue, msg: dict) -> None:
    if queue.full():
        queue.get_nowait()
    queue.put_nowait(msg)
