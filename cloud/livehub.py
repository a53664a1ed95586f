"""The cloud's live hub: one change feed per process, and one fan-out per tenant for the
WebSocket clients of `cloud/live.py` (socket.io clients are fed by the same `Hub`, through
`nightscout/sockets.py`).

**The change feed** brings what other processes stored (more API workers, the MQTT ingest) to
this process's `Hub`, one read per process and change, never one per client:

- PostgreSQL: every write transaction NOTIFYs its tenant (`cloud/store/changes.py`); the feed
  LISTENs on one connection and, for a tenant it watches, reads what lies beyond its cursor.
  Delivery follows the commit within milliseconds, and an idle server reads nothing.
- SQLite: there is no NOTIFY. The feed asks `PRAGMA data_version` every `POLL_S` (it changes
  only when another connection committed) and then reads the cursors of every watched tenant
  in one statement. Chosen over relaying through the MQTT broker because a SQLite cloud is one
  machine where the broker is optional (an API-only server has none), and the cost is one
  PRAGMA per process per interval, whatever the number of clients.

**The fan-out**: a tenant with clients has one hub subscription in the process and one pump;
each message is serialised once (the same `str` goes to every client). Each client has a
bounded queue; when it is full the client's queued messages are dropped, counted
(`nightlink_live_dropped_total`) and replaced by one `resync` message telling the client how
many it lost, so it fetches what it missed over HTTP. A slow client never holds up the others:
sending happens in a short-lived task per client, only while its queue is not empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections import deque

from nightlink.backoff import Backoff
from nightlink.cloud import alerts as alert_rules
from nightlink.cloud import metrics
from nightlink.cloud.store import changes
from nightlink.sql import DatabaseError
from nightlink.webapp import treatment_view

_LOGGER = logging.getLogger(__name__)

POLL_S = 0.1  # SQLite: how often the feed asks whether another connection committed
SWEEP_S = 2.0  # SQLite: how often it reads the cursors anyway (this connection's own writes
# that bypassed the hub, e.g. an alert stored by a script sharing the process)
IDLE_EXIT_S = 10.0  # the thread ends this long after no watched tenant has a subscriber
LISTEN_WAIT_S = 1.0  # PostgreSQL: longest wait for a notification (to notice a stop)
QUEUE_LIMIT = 64  # messages a client may have waiting before it is told to resync
_SEEN = 4096  # remembered entry keys per tenant fan-out
HUB_QUEUE = 4096  # a tenant fan-out's hub subscription: a bulk upload's entries fit
WARN_EVERY_S = 60.0  # at most one warning a minute while the feed's database refuses


def dumps(message: dict) -> str:
    """A message as its WebSocket text (the form Starlette's send_json writes)."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


# -- the change feed (other processes' writes) ------------------------------------------------


class ChangeFeed:
    """Follows watched tenants' changes made by other processes and publishes them on the hub.

    One thread per process. `watch()` reads the tenant's cursor once, so changes committed
    after it returns are published; `reads` counts the catch-up reads (tests, the bench).
    """

    def __init__(self, store, hub, *, poll_s: float | None = None):
        self.store = store
        self.hub = hub
        self.poll_s = POLL_S if poll_s is None else poll_s
        self.reads = 0
        self._cursors: dict[str, changes.Cursor] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned = 0.0
        self._idle_since: float | None = None

    def watch(self, tenant_id: str) -> None:
        with self._lock:
            if tenant_id in self._cursors:
                return
        found = changes.cursors(self.store.db, [tenant_id]).get(tenant_id)
        if found is None:
            return  # no such tenant
        with self._lock:
            self._cursors.setdefault(tenant_id, found)
            if self._thread is None:
                self._stop.clear()
                self._thread = threading.Thread(target=self._run, name="live-feed",
                                                daemon=True)
                self._thread.start()

    def watched(self) -> list[str]:
        with self._lock:
            return list(self._cursors)

    def stop(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(LISTEN_WAIT_S + 5)

    # -- the thread ---------------------------------------------------------------------------

    def _idle(self) -> bool:
        """True, and the thread's state cleared, when no watched tenant has a subscriber:
        the thread ends (a later watch() starts another, reading fresh cursors)."""
        with self._lock:
            if any(self.hub.watching(t) for t in self._cursors):
                self._idle_since = None
                return False
            if self._idle_since is None:
                self._idle_since = time.monotonic()
            if time.monotonic() - self._idle_since < IDLE_EXIT_S and not self._broken():
                return False
            self._cursors.clear()
            self._thread = None
            self._idle_since = None
            return True

    def _broken(self) -> bool:
        """The store was closed under the feed (an app shut down without its lifespan)."""
        try:
            changes.data_version(self.store.db)
        except DatabaseError:
            return True
        return False

    def _run(self) -> None:
        backoff = Backoff(0.5, 30.0)
        while not self._stop.is_set():
            try:
                if self.store.db.kind == "postgres":
                    self._listen(backoff)
                else:
                    self._poll(backoff)
            except DatabaseError as exc:
                if self._idle():
                    return
                delay = backoff.next()
                if time.monotonic() - self._warned >= WARN_EVERY_S:
                    self._warned = time.monotonic()
                    _LOGGER.warning("The live feed cannot read the database (%s); live "
                                    "clients miss other processes' changes until it can; "
                                    "next try in %.1f s.", exc, delay)
                self._stop.wait(delay)
            except Exception:  # noqa: BLE001 - the feed must outlive one bad change
                _LOGGER.exception("the live feed failed; starting it again")
                self._stop.wait(backoff.next())

    def _listen(self, backoff: Backoff) -> None:
        listener = changes.Listener(self.store.db.dsn)
        try:
            self._catch_up(self.watched())  # what changed while nobody listened
            backoff.reset()
            while not self._stop.is_set():
                announced = listener.wait(LISTEN_WAIT_S)
                if not announced and self._idle():
                    return
                if announced:
                    with self._lock:
                        todo = [t for t in announced if t in self._cursors]
                    self._catch_up(todo)
        finally:
            with contextlib.suppress(Exception):
                listener.close()

    def _poll(self, backoff: Backoff) -> None:
        db = self.store.db
        last = changes.data_version(db)
        backoff.reset()
        sweep = time.monotonic() + SWEEP_S
        while not self._stop.wait(self.poll_s):
            version = changes.data_version(db)
            if version == last and time.monotonic() < sweep:
                continue
            if self._idle():
                return
            last = version
            sweep = time.monotonic() + SWEEP_S
            now = changes.cursors(db, self.watched())
            with self._lock:
                todo = [t for t, c in now.items() if c != self._cursors.get(t)]
            self._catch_up(todo)

    def _catch_up(self, tenant_ids) -> None:
        for tenant_id in tenant_ids:
            with self._lock:
                cursor = self._cursors[tenant_id]
            cursor = self._read(tenant_id, cursor)
            with self._lock:
                self._cursors[tenant_id] = cursor

    def _read(self, tenant_id: str, cursor: changes.Cursor) -> changes.Cursor:
        """Publish the tenant's changes beyond the cursor; the cursor after them."""
        db = self.store.db
        self.reads += 1
        modified = cursor.modified
        while True:
            rows = changes.documents_since(db, tenant_id, modified)
            self._publish_documents(tenant_id, rows)
            if rows:
                modified = max(modified, max(r.srv_modified for r in rows))
            if len(rows) < 1000:
                break
        alert_id, acked_at = cursor.alert_id, cursor.acked_at
        for row in changes.alerts_since(db, tenant_id, alert_id, acked_at):
            alert_id = max(alert_id, int(row["id"]))
            acked_at = max(acked_at, float(row["acked_at"] or 0.0))
            public = alert_rules.public(row)
            if self.hub.publish(tenant_id, "alert", public) and row["acked_at"] is None:
                # The same alert as a Nightscout notification, for socket.io alarm clients.
                self.hub.alarm(tenant_id, 2 if row["level"] == "urgent" else 1,
                               row["rule"].replace("_", " ").title(), row["message"],
                               event=alert_rules._NS_EVENTS.get(row["rule"], row["rule"]))
        return changes.Cursor(modified, alert_id, acked_at)

    def _publish_documents(self, tenant_id: str, rows: list) -> None:
        """Hand rows to the hub grouped by collection and action, in order of change."""
        group: list = []
        for row in rows:
            if group and (row.coll, _action(row)) != (group[0].coll, _action(group[0])):
                self.hub.changed(tenant_id, group[0].coll, _action(group[0]), group)
                group = []
            group.append(row)
        if group:
            self.hub.changed(tenant_id, group[0].coll, _action(group[0]), group)


def _action(row) -> str:
    if not row.valid:
        return "delete"
    return "create" if row.srv_created == row.srv_modified else "update"


# -- the fan-out to WebSocket clients ---------------------------------------------------------


class Client:
    """One WebSocket: a bounded queue of message texts and, while it is not empty, a writer."""

    __slots__ = ("ws", "tenant", "user", "bucket", "skip", "queue", "dropped", "_writer",
                 "_held", "_fanout", "_resync")

    def __init__(self, fanout: Fanout, ws, tenant: str, user: dict, bucket: int):
        self._fanout = fanout
        self.ws = ws
        self.tenant = tenant
        self.user = user
        self.bucket = bucket  # which keepalive tick pings it
        self.skip: frozenset = frozenset()  # keys the hello already carried
        self.queue: deque[str] = deque()
        self.dropped = 0
        self._resync: str | None = None  # the last resync text queued
        self._writer: asyncio.Task | None = None
        self._held = True  # until the hello is sent

    def push(self, text: str, key=None) -> None:
        if key is not None and key in self.skip:
            return
        if len(self.queue) >= self._fanout.queue_limit:
            # The queued messages (less an unsent resync of an earlier overflow) and this one.
            lost = len(self.queue) - (self.queue[0] is self._resync) + 1
            self.queue.clear()
            self.dropped += lost
            self._fanout.count_drop(lost)
            text = self._resync = dumps({"type": "resync", "data": {"dropped": self.dropped}})
        if self._writer is None and not self._held and not self.queue:
            self._send_now(text)
        else:
            self.queue.append(text)

    def release(self) -> None:
        """The hello is out: send what queued up meanwhile, and from now on as it comes."""
        self._held = False
        if self.queue and self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._drain(None, None))

    def _send_now(self, text: str) -> None:
        """Send at once, in the caller's step, when the socket takes it without waiting (the
        usual case: a send only waits while the connection's write buffer is full); else
        finish it, and send what queues up meanwhile, in a writer task. This saves a task per
        client and message, as Python 3.12's eager tasks would."""
        send = self.ws.send_text(text)
        try:
            waiting = send.send(None)
        except StopIteration:
            return
        except Exception:  # noqa: BLE001 - the client went away; its handler cleans up
            self._gone()
            return
        self._writer = asyncio.get_running_loop().create_task(self._drain(send, waiting))

    async def _drain(self, send, waiting) -> None:
        try:
            while send is not None:  # the send in flight: resume it each time it can go on
                if waiting is None:
                    await asyncio.sleep(0)
                else:  # a future the send yielded: wait for it as a task would
                    waiting._asyncio_future_blocking = False
                    await waiting
                try:
                    waiting = send.send(None)
                except StopIteration:
                    send = None
            while self.queue:
                await self.ws.send_text(self.queue.popleft())
        except Exception:  # noqa: BLE001 - the client went away; its handler cleans up
            self._gone()
        finally:
            if send is not None:
                send.close()
            self._writer = None

    def _gone(self) -> None:
        self.queue.clear()
        self._held = True  # nothing more for it


class _Channel:
    """One tenant's clients on one event loop: one hub subscription and one pump."""

    def __init__(self, fanout: Fanout, tenant: str):
        self.fanout = fanout
        self.tenant = tenant
        self.clients: set[Client] = set()
        self.entries: dict = {}  # entry keys sent (an ordered, bounded set)
        self.queue = fanout.hub.subscribe(tenant, size=HUB_QUEUE)
        self.task = asyncio.get_running_loop().create_task(self._pump(),
                                                           name=f"live-{tenant}")

    async def _pump(self) -> None:
        while True:
            msg = await self.queue.get()
            for text, key in self._texts(msg):
                self.fanout.serialised += 1
                for client in list(self.clients):
                    client.push(text, key)
            # Let the clients' writers send before the next message of a burst is queued.
            await asyncio.sleep(0)

    def _texts(self, msg: dict) -> list[tuple[str, object]]:
        """The message's WebSocket texts (each serialised once) with their keys."""
        kind, data = msg.get("type"), msg.get("data")
        if kind == "entry":
            return self._entry(data)
        if kind == "change" and data["coll"] == "entries" and data["action"] != "delete":
            out = []
            for row in data["rows"]:  # sgv readings come as "entry" messages as well
                if row.kind != "sgv" and row.valid:
                    out += self._entry(row.v1())
            return out
        if kind == "change" and data["coll"] == "treatments":
            # Whoever stored it (a Nightscout uploader, the app on another phone, the MQTT
            # ingest): the app's view of each treatment, serialised once for all clients.
            return [(dumps({"type": "treatment", "data": treatment_view(row)}), None)
                    for row in data["rows"]]
        if kind == "alert":
            return [(dumps({"type": "alert", "data": data}),
                     ("alert", data.get("id"), data.get("acked_at") is not None))]
        return []

    def _entry(self, doc: dict) -> list[tuple[str, object]]:
        if not isinstance(doc, dict) or "date" not in doc:
            return []
        key = ("entry", doc.get("type", "sgv"), int(doc["date"]))
        if key in self.entries:
            return []
        self.entries[key] = None
        if len(self.entries) > _SEEN:
            del self.entries[next(iter(self.entries))]
        return [(dumps({"type": "entry", "data": doc}), key)]

    def close(self) -> None:
        self.task.cancel()
        self.fanout.hub.unsubscribe(self.tenant, self.queue)


class Fanout:
    """The WebSocket clients of one process, by tenant (and event loop)."""

    def __init__(self, hub, *, queue_limit: int = QUEUE_LIMIT, buckets: int = 20):
        self.hub = hub
        self.queue_limit = queue_limit
        self.buckets = buckets
        self.serialised = 0  # message texts built (once per tenant and message)
        self.dropped = 0
        self._channels: dict[tuple[int, str], _Channel] = {}
        self._buckets: dict[tuple[int, int], set[Client]] = {}  # (loop, bucket) -> clients
        self._joined = 0

    def join(self, tenant: str, ws, user: dict) -> Client:
        """A held client of the tenant (call release() once the hello is sent)."""
        key = (id(asyncio.get_running_loop()), tenant)
        channel = self._channels.get(key)
        if channel is None:
            channel = self._channels[key] = _Channel(self, tenant)
        self._joined += 1
        client = Client(self, ws, tenant, user, self._joined % self.buckets)
        channel.clients.add(client)
        self._buckets.setdefault((key[0], client.bucket), set()).add(client)
        metrics.LIVE_CLIENTS.labels("websocket").inc()
        return client

    def leave(self, client: Client) -> None:
        key = (id(asyncio.get_running_loop()), client.tenant)
        channel = self._channels.get(key)
        if channel is None or client not in channel.clients:
            return
        channel.clients.discard(client)
        self._buckets.get((key[0], client.bucket), set()).discard(client)
        metrics.LIVE_CLIENTS.labels("websocket").dec()
        if not channel.clients:
            del self._channels[key]
            channel.close()

    def clients(self) -> list[Client]:
        """Every client on the running event loop."""
        loop = id(asyncio.get_running_loop())
        return [c for (lp, _), ch in list(self._channels.items()) if lp == loop
                for c in ch.clients]

    def bucket(self, number: int) -> list[Client]:
        """The clients on the running event loop that one keepalive tick pings."""
        return list(self._buckets.get((id(asyncio.get_running_loop()), number), ()))

    def count_drop(self, n: int) -> None:
        self.dropped += n
        metrics.LIVE_DROPPED.labels("websocket").inc(n)
