"""Live updates over a WebSocket, and the app's background alert worker.

`/api/nl/v1/tenants/{tenant}/live?access_token=<JWT>`: browsers cannot set headers on a
WebSocket, so the access token travels in the query. The socket is accepted, then closed
with 4401 (no, a bad or an expired token) or 4404 (no such tenant, or not a member; as for
HTTP, a tenant is not revealed to non-members) so the client can tell why.

Messages are JSON `{"type": ..., "data": {...}}`:

- `hello` once on connect: the tenant, the role, the latest sgv entry (or null), the unacked
  alerts and the server time;
- `entry`: a Nightscout entry, each (type, date) at most once per connection, whether it came
  from the event bus or from the store poll (every 2 s, so entries stored by another process
  arrive too);
- `alert`: a new alert, or an alert that was acknowledged (same id, `acked_at` set);
- `ping` every 20 s, so proxies keep the connection and clients notice a dead one.

Membership is checked again every minute; a revoked member is closed with 4404. Clients
reconnect with backoff (docs/live-updates.md).

`install(app)` starts the `AlertWorker` with the app (its lifespan) and stops it after.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque

from fastapi import APIRouter, FastAPI, WebSocket, WebSocketDisconnect

from nightlink.cloud import alerts, auth
from nightlink.cloud.access import resolve_access
from nightlink.cloud.store import NotFoundError, TenantStore
from nightlink.sql import DatabaseError

_LOGGER = logging.getLogger(__name__)
router = APIRouter()

POLL_S = 2.0  # store poll for entries and alerts from other processes
PING_S = 20.0  # keepalive
ROLE_S = 60.0  # membership re-check
CLOSE_AUTH = 4401
CLOSE_NOT_FOUND = 4404
_SEEN = 1024  # remembered (type, date) keys per connection


class _Seen:
    """A bounded set: remembers the last `size` keys."""

    def __init__(self, size: int = _SEEN):
        self._order: deque = deque()
        self._keys: set = set()
        self.size = size

    def add(self, key) -> bool:
        """Remember key; False when it was already there."""
        if key in self._keys:
            return False
        self._keys.add(key)
        self._order.append(key)
        if len(self._order) > self.size:
            self._keys.discard(self._order.popleft())
        return True


def _member_role(store, tenant_id: str, user: dict) -> str | None:
    access = resolve_access(store, user, tenant_id)
    return None if access is None else access.role


async def _authenticate(ws: WebSocket, tenant_id: str) -> tuple[dict, str] | None:
    """(user, role) for the socket's token, or None after closing it with the reason."""
    store, settings = ws.app.state.store, ws.app.state.settings
    token = ws.query_params.get("access_token")
    if not token:
        await ws.close(CLOSE_AUTH, "Pass an access token as ?access_token=.")
        return None
    try:
        claims = auth.decode(token, settings.jwt_secret, "access")
        user = await asyncio.to_thread(store.user, int(claims["sub"]))
    except auth.AuthError as exc:
        await ws.close(CLOSE_AUTH, str(exc))
        return None
    except (NotFoundError, ValueError):
        await ws.close(CLOSE_AUTH, "The account no longer exists.")
        return None
    role = await asyncio.to_thread(_member_role, store, tenant_id, user)
    if role is None:
        await ws.close(CLOSE_NOT_FOUND, f"No tenant {tenant_id!r}.")
        return None
    return user, role


class _Feed:
    """What one connection has sent, so nothing is sent twice."""

    def __init__(self, ws: WebSocket, data: TenantStore):
        self.ws = ws
        self.data = data
        self.entries = _Seen()
        self.alerts = _Seen()
        self.last_date = 0  # newest entry date sent (ms)
        self.last_alert_id = 0

    async def entry(self, doc: dict) -> None:
        if "date" not in doc or not self.entries.add((doc.get("type", "sgv"), int(doc["date"]))):
            return
        self.last_date = max(self.last_date, int(doc["date"]))
        await self.ws.send_json({"type": "entry", "data": doc})

    async def alert(self, doc: dict) -> None:
        if not self.alerts.add((doc.get("id"), doc.get("acked_at"))):
            return
        self.last_alert_id = max(self.last_alert_id, int(doc.get("id") or 0))
        await self.ws.send_json({"type": "alert", "data": doc})

    async def poll(self) -> None:
        new = await asyncio.to_thread(self.data.entries, count=100,
                                      where=[("date", ">", self.last_date)])
        for doc in reversed(new):  # oldest first
            await self.entry(doc)
        rows = await asyncio.to_thread(self.data.alerts, limit=20)
        for row in reversed(rows):
            if row["id"] > self.last_alert_id:
                await self.alert(alerts.public(row))


async def _receive_until_closed(ws: WebSocket) -> None:
    """Read (and ignore) what the client sends, until it goes away."""
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                return


async def _push(ws: WebSocket, feed: _Feed, queue: asyncio.Queue, tenant_id: str,
                user: dict) -> None:
    loop = asyncio.get_running_loop()
    store = ws.app.state.store
    next_poll, next_ping = loop.time() + POLL_S, loop.time() + PING_S
    next_role = loop.time() + ROLE_S
    getter = asyncio.ensure_future(queue.get())
    try:
        while True:
            timeout = max(0.0, min(next_poll, next_ping) - loop.time())
            done, _ = await asyncio.wait({getter}, timeout=timeout)
            if done:
                msg = getter.result()
                getter = asyncio.ensure_future(queue.get())
                if msg["type"] == "entry":
                    await feed.entry(msg["data"])
                elif msg["type"] == "alert":
                    await feed.alert(msg["data"])
            now = loop.time()
            if now >= next_poll:
                try:
                    await feed.poll()
                except DatabaseError as exc:
                    _LOGGER.warning("live poll of %s failed: %s", tenant_id, exc)
                next_poll = loop.time() + POLL_S
            if now >= next_ping:
                await ws.send_json({"type": "ping",
                                    "data": {"server_time_ms": int(time.time() * 1000)}})
                next_ping = now + PING_S
            if now >= next_role:
                if await asyncio.to_thread(_member_role, store, tenant_id, user) is None:
                    await ws.close(CLOSE_NOT_FOUND, f"No tenant {tenant_id!r}.")
                    return
                next_role = now + ROLE_S
    finally:
        getter.cancel()


@router.websocket("/api/nl/v1/tenants/{tenant}/live")
async def live(websocket: WebSocket, tenant: str) -> None:
    """Entries and alerts of one tenant as they arrive (see the module docstring)."""
    await websocket.accept()
    who = await _authenticate(websocket, tenant)
    if who is None:
        return
    user, role = who
    store, events = websocket.app.state.store, websocket.app.state.events
    data = store.tenant(tenant)
    queue = events.subscribe(tenant)  # before the hello, so nothing falls in between
    tasks: set[asyncio.Task] = set()
    try:
        latest = await asyncio.to_thread(data.entries, count=1, type_="sgv")
        unacked = await asyncio.to_thread(data.alerts, limit=20, unacked=True)
        newest_alert = await asyncio.to_thread(data.alerts, limit=1)
        feed = _Feed(websocket, data)
        if latest:
            feed.entries.add((latest[0].get("type", "sgv"), int(latest[0]["date"])))
            feed.last_date = int(latest[0]["date"])
        feed.last_alert_id = newest_alert[0]["id"] if newest_alert else 0
        await websocket.send_json({"type": "hello", "data": {
            "tenant": tenant, "role": role, "entry": latest[0] if latest else None,
            "alerts": [alerts.public(a) for a in unacked],
            "server_time_ms": int(time.time() * 1000),
        }})
        tasks = {asyncio.create_task(_receive_until_closed(websocket)),
                 asyncio.create_task(_push(websocket, feed, queue, tenant, user))}
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            exc = task.exception()
            if exc is not None and not isinstance(exc, WebSocketDisconnect | RuntimeError
                                                  | OSError):
                raise exc
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass  # the client went away mid-send
    finally:
        for task in tasks:
            task.cancel()
        events.unsubscribe(tenant, queue)


def install(app: FastAPI, *, interval_s: float = 30.0) -> None:
    """Run the alert worker for as long as the app runs (wraps the app's lifespan)."""
    if getattr(app.state, "alert_worker_installed", False):
        return
    app.state.alert_worker_installed = True
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(a):
        worker = alerts.AlertWorker(a.state.store, a.state.events, interval_s=interval_s)
        a.state.alert_worker = worker
        task = asyncio.create_task(worker.run(), name="alert-worker")
        task.add_done_callback(_report_death)
        try:
            async with inner(a) as state:
                yield state
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app.router.lifespan_context = lifespan


def _report_death(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        _LOGGER.error("the alert worker stopped: %r", task.exception())
