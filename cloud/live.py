"""Live updates over a WebSocket, and the app's background alert worker.

`/api/nl/v1/tenants/{tenant}/live?access_token=<JWT>`: browsers cannot set headers on a
WebSocket, so the access token travels in the query. The socket is accepted, then closed
with 4401 (no, a bad or an expired token) or 4404 (no such tenant, or not a member; as for
HTTP, a tenant is not revealed to non-members) so the client can tell why.

Messages are JSON `{"type": ..., "data": {...}}`:

- `hello` once on connect: the tenant, the role, the latest sgv entry (or null), the unacked
  alerts and the server time;
- `entry`: a Nightscout entry, each (type, date) at most once, whichever process stored it;
- `alert`: a new alert, or an alert that was acknowledged (same id, `acked_at` set);
- `treatment`: a treatment stored, changed or deleted, whichever client or process wrote it,
  in the app's form (`nightlink/webapp/__init__.py`, `treatment_view`: id, at_ms, eventType,
  carbs, insulin, duration, notes, enteredBy; a deleted one is `{id, deleted: true}`);
- `resync` {dropped}: the client read too slowly and this many messages were dropped; it
  should fetch what it missed over HTTP (entries since its newest, the alerts list);
- `ping` every 20 s, so proxies keep the connection and clients notice a dead one.

Nothing here polls per connection: the process's live hub (`cloud/livehub.py`) follows each
watched tenant once (PostgreSQL LISTEN/NOTIFY, or one change-cursor read per process on
SQLite), serialises a message once per tenant and hands the same text to every client's
bounded queue. One keepalive task pings a twentieth of the clients each `PING_S / 20` and
checks membership every `ROLE_S` once per (tenant, account), not per connection, and at its
next tick when access changes in this process (the store's access listeners); a revoked
member is closed with 4404. Clients reconnect with backoff (docs/live-updates.md).

`install(app)` starts the `AlertWorker` with the app (its lifespan) and stops it after, and
gives the app its live fan-out and change feed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from fastapi import APIRouter, FastAPI, WebSocket, WebSocketDisconnect

from nightlink.cloud import alerts, auth, livehub, metrics
from nightlink.cloud.access import resolve_access
from nightlink.cloud.store import NotFoundError
from nightlink.sql import DatabaseError

_LOGGER = logging.getLogger(__name__)
router = APIRouter()

PING_S = 20.0  # keepalive
ROLE_S = 60.0  # membership re-check
CLOSE_AUTH = 4401
CLOSE_NOT_FOUND = 4404


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
        user = await asyncio.to_thread(auth.token_user, store, claims)
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


async def _receive_until_closed(ws: WebSocket) -> None:
    """Read (and ignore) what the client sends, until it goes away."""
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                return


def _hello(store, tenant_id: str) -> tuple[dict | None, list[dict]]:
    """The tenant's latest sgv entry and its unacked alerts (public form)."""
    data = store.tenant(tenant_id)
    latest = data.entries(count=1, type_="sgv")
    unacked = data.alerts(limit=20, unacked=True)
    return (latest[0] if latest else None), [alerts.public(a) for a in unacked]


def _live_parts(app: FastAPI) -> livehub.Fanout:
    """The app's fan-out, its hub's change feed installed (once)."""
    fanout = getattr(app.state, "live", None)
    if fanout is None:
        hub = app.state.events
        if hub.feed is None:
            hub.feed = livehub.ChangeFeed(app.state.store, hub)
            hub.on_drop = metrics.LIVE_DROPPED.labels("hub").inc
        sockets = getattr(app.state, "nightscout_sockets", None)
        if sockets is not None:
            sockets.on_drop = metrics.LIVE_DROPPED.labels("socketio").inc
        fanout = app.state.live = livehub.Fanout(hub)
        app.state.live_keepalive = {}
    return fanout


@router.websocket("/api/nl/v1/tenants/{tenant}/live")
async def live(websocket: WebSocket, tenant: str) -> None:
    """Entries, treatments and alerts of one tenant as they arrive (see the module docstring)."""
    await websocket.accept()
    who = await _authenticate(websocket, tenant)
    if who is None:
        return
    user, role = who
    app = websocket.app
    fanout = _live_parts(app)
    try:
        # Follow other processes' changes from here on, then queue (held) before the hello
        # is read, so nothing falls in between.
        await app.state.events.follow(tenant)
    except DatabaseError as exc:
        _LOGGER.warning("live feed of %s could not start: %s", tenant, exc)
    # Only what the membership re-check reads: 10,000 clients hold 10,000 of these.
    client = fanout.join(tenant, websocket, {"id": user["id"], "is_admin": user["is_admin"]})
    _ensure_keepalive(app, fanout)
    try:
        latest, unacked = await asyncio.to_thread(_hello, app.state.store, tenant)
        keys = {("alert", a["id"], False) for a in unacked}
        if latest is not None:
            keys.add(("entry", latest.get("type", "sgv"), int(latest["date"])))
        client.skip = frozenset(keys)
        await websocket.send_text(livehub.dumps({"type": "hello", "data": {
            "tenant": tenant, "role": role, "entry": latest, "alerts": unacked,
            "server_time_ms": int(time.time() * 1000),
        }}))
        client.release()
        await _receive_until_closed(websocket)
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass  # the client went away mid-send
    finally:
        fanout.leave(client)


def _ensure_keepalive(app: FastAPI, fanout: livehub.Fanout) -> None:
    loop = asyncio.get_running_loop()
    tasks = app.state.live_keepalive
    task = tasks.get(id(loop))
    if task is None or task.done():
        tasks[id(loop)] = loop.create_task(_keepalive(app, fanout), name="live-keepalive")


async def _keepalive(app: FastAPI, fanout: livehub.Fanout) -> None:
    """Ping a 1/buckets share of the clients each tick (one text for all), and re-check
    memberships every ROLE_S, once per (tenant, account), and at the next tick after access
    changed in this process; ends when no client is left."""
    loop = asyncio.get_running_loop()
    tick = 0
    next_role = loop.time() + ROLE_S
    changed = [False]  # access changed in this process (a member revoked): check at once

    def access_changed() -> None:
        changed[0] = True

    listeners = app.state.store.access_listeners
    listeners.append(access_changed)
    try:
        while True:
            await asyncio.sleep(PING_S / fanout.buckets)
            if tick % fanout.buckets == 0 and not fanout.clients():
                return
            text = livehub.dumps({"type": "ping",
                                  "data": {"server_time_ms": int(time.time() * 1000)}})
            for client in fanout.bucket(tick % fanout.buckets):
                client.push(text)
            tick += 1
            if changed[0] or loop.time() >= next_role:
                changed[0] = False
                await _recheck_roles(app, fanout.clients())
                next_role = loop.time() + ROLE_S
    finally:
        listeners.remove(access_changed)
        app.state.live_keepalive.pop(id(loop), None)


async def _recheck_roles(app: FastAPI, clients: list) -> None:
    pairs = {(c.tenant, c.user["id"]): c.user for c in clients}

    def revoked() -> set:
        gone = set()
        for (tenant, user_id), user in pairs.items():
            try:
                if _member_role(app.state.store, tenant, user) is None:
                    gone.add((tenant, user_id))
            except DatabaseError as exc:
                _LOGGER.warning("live membership check of %s failed: %s", tenant, exc)
        return gone

    gone = await asyncio.to_thread(revoked)
    for client in clients:
        if (client.tenant, client.user["id"]) in gone:
            asyncio.get_running_loop().create_task(_close(client.ws, client.tenant))


async def _close(ws: WebSocket, tenant: str) -> None:
    with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
        await ws.close(CLOSE_NOT_FOUND, f"No tenant {tenant!r}.")


def install(app: FastAPI, *, interval_s: float = 30.0) -> None:
    """Run the alert worker for as long as the app runs (wraps the app's lifespan)."""
    if getattr(app.state, "alert_worker_installed", False):
        return
    app.state.alert_worker_installed = True
    _live_parts(app)
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(a):
        worker = alerts.AlertWorker(a.state.store, a.state.events, interval_s=interval_s,
                                    pusher=_pusher(a))
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
            if worker.pusher is not None:
                await worker.pusher.close()

    app.router.lifespan_context = lifespan


def _pusher(app: FastAPI):
    """The Web Push sender when the operator set NIGHTLINK_PUSH_KEY (cloud/push.py)."""
    settings = getattr(app.state, "settings", None)
    if settings is None or not settings.push_key:
        return None
    from nightlink.cloud import push

    return push.PushSender(app.state.store, push.load_key(settings.push_key),
                           settings.push_contact(), hosts=settings.push_host_list())


def _report_death(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        _LOGGER.error("the alert worker stopped: %r", task.exception())
