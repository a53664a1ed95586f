"""The live hub under a real uvicorn: other connections' writes reach clients on both
backends, idle clients cost no store reads, a message is serialised once per tenant, and a
client that stops reading loses messages that are counted and announced (resync) while the
others get everything."""

import asyncio
import json
import socket
import time

import pytest
from prometheus_client import REGISTRY
from websockets.asyncio.client import connect

from nightlink.cloud import livehub
from nightlink.cloud.app import create_app
from nightlink.cloud.auth import hash_password, issue_tokens
from nightlink.cloud.config import Settings
from nightlink.cloud.store import Store
from tests.support.servers import run_served, serve

from .conftest import JWT_SECRET

PATH = "/api/nl/v1/tenants/{}/live?access_token={}"
T0 = 1_700_000_000_000  # long past: the alert worker leaves these tenants alone


@pytest.fixture
def live_app(cloud_db_url):
    """An app with tenants fam-1 and fam-2 (one caregiver each) and a fast change feed."""
    app = create_app(Settings(env="test", database_url=cloud_db_url, jwt_secret=JWT_SECRET))
    store = app.state.store
    app.state.events.feed.poll_s = 0.05
    tokens = {}
    for tenant in ("fam-1", "fam-2"):
        store.create_tenant(tenant, tenant)
        user = store.create_user(f"care@{tenant}.org", hash_password("pw-pw-pw-pw-pw"))
        store.grant(tenant, user["id"], "caregiver", by=None)
        tokens[tenant] = issue_tokens(store, user["id"], JWT_SECRET, 15, 1)["access_token"]
    app.state.tokens = tokens
    app.state.url = cloud_db_url
    yield app
    store.close()


def _ws_url(base: str, app, tenant: str) -> str:
    return base.replace("http", "ws", 1) + PATH.format(tenant, app.state.tokens[tenant])


async def _open(base, app, tenant, n=1):
    """n clients of a tenant, each past its hello."""
    clients = [await connect(_ws_url(base, app, tenant), compression=None) for _ in range(n)]
    for c in clients:
        assert json.loads(await asyncio.wait_for(c.recv(), 10))["type"] == "hello"
    return clients


async def _next_of(client, kind: str, timeout: float = 10.0) -> dict:
    """The next message of a type (pings and others skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        msg = json.loads(await asyncio.wait_for(client.recv(), deadline - time.monotonic()))
        if msg["type"] == kind:
            return msg


def _entry(minutes: int, sgv: int = 120, **extra) -> dict:
    return {"type": "sgv", "date": T0 + minutes * 60_000, "sgv": sgv, "direction": "Flat",
            **extra}


def test_hub__other_connections_entries_and_alerts_reach_clients_promptly(live_app):
    """Written through another connection (another process's, to the database): on
    PostgreSQL the NOTIFY at commit, on SQLite the data_version poll, brings it over."""
    other = Store.open(live_app.state.url)

    async def run(base):
        watchers = await _open(base, live_app, "fam-1", 3)
        bystander = (await _open(base, live_app, "fam-2"))[0]
        latencies = []
        for k in range(5):
            t0 = time.monotonic()
            await asyncio.to_thread(other.tenant("fam-1").add_entries, [_entry(k, 100 + k)])
            for w in watchers:
                msg = await _next_of(w, "entry", 5)
                assert (msg["data"]["date"], msg["data"]["sgv"]) == (T0 + k * 60_000, 100 + k)
            latencies.append(time.monotonic() - t0)
        aid = await asyncio.to_thread(other.tenant("fam-1").add_alert, "low", "warning",
                                      T0, "Low.")
        for w in watchers:
            assert (await _next_of(w, "alert", 5))["data"]["id"] == aid
        # The other tenant's client got none of it.
        with pytest.raises(TimeoutError):
            await _next_of(bystander, "entry", 0.5)
        for c in [*watchers, bystander]:
            await c.close()
        return latencies

    try:
        with serve(live_app) as base:
            latencies = asyncio.run(run(base))
    finally:
        other.close()
    assert sorted(latencies)[-1] < 2.0, latencies


def test_hub__idle_clients_cost_no_store_reads(live_app, monkeypatch):
    """Store statements in a quiet window do not grow with the number of clients (the feed
    reads once per process; memberships are checked once per tenant and account)."""
    from nightlink.cloud import live

    monkeypatch.setattr(live, "PING_S", 0.4)
    db = live_app.state.store.db
    counted = {"n": 0}
    for name in ("query", "execute", "executemany"):
        real = getattr(db, name)

        def counting(*args, _real=real, **kw):
            counted["n"] += 1
            return _real(*args, **kw)

        monkeypatch.setattr(db, name, counting)

    async def quiet(window: float) -> int:
        await asyncio.sleep(0.5)  # the connects' own reads are done
        start = counted["n"]
        await asyncio.sleep(window)
        return counted["n"] - start

    async def run(base):
        few = await _open(base, live_app, "fam-1", 2)
        with_few = await quiet(2.5)
        many = await _open(base, live_app, "fam-1", 60)
        with_many = await quiet(2.5)
        for c in few + many:
            await c.close()
        return with_few, with_many

    with serve(live_app) as base:
        with_few, with_many = asyncio.run(run(base))
    # SQLite: one data_version read per feed interval (about 50 in 2.5 s) and a cursor read
    # every sweep; PostgreSQL: none at all. A poll per client would add 60 times more.
    assert with_many <= with_few + 5, (with_few, with_many)
    assert with_few <= 70, with_few


def test_hub__a_message_is_serialised_once_per_tenant(live_app, monkeypatch):
    calls = []
    real = livehub.dumps

    def counting(message):
        calls.append(message["type"])
        return real(message)

    monkeypatch.setattr(livehub, "dumps", counting)

    async def run(base):
        crowd = await _open(base, live_app, "fam-1", 20)
        others = await _open(base, live_app, "fam-2", 5)
        calls.clear()
        fanout = live_app.state.live
        before = fanout.serialised
        live_app.state.events.publish("fam-1", "entry", _entry(1))
        texts = {await c.recv() for c in crowd}
        assert len(texts) == 1 and json.loads(texts.pop())["data"]["sgv"] == 120
        assert fanout.serialised - before == 1
        for c in crowd + others:
            await c.close()

    with serve(live_app) as base:
        asyncio.run(run(base))
    assert calls.count("entry") == 1, calls


def test_hub__a_client_that_stops_reading_loses_counted_messages_not_the_others(
        live_app, monkeypatch):
    monkeypatch.setattr(live_app.state.live, "queue_limit", 8)
    n = 400
    pad = "x" * 32_000  # large messages fill the slow socket's buffers (kernel's too) quickly

    async def run(base):
        fast = (await _open(base, live_app, "fam-1"))[0]
        host, port = base.removeprefix("http://").split(":")
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window
        sock.connect((host, int(port)))
        sock.setblocking(False)
        reader, writer = await asyncio.open_connection(sock=sock)
        path = PATH.format("fam-1", live_app.state.tokens["fam-1"])
        writer.write((f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                      "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        await reader.readuntil(b"\r\n\r\n")
        await _frame(reader)  # the hello
        writer.transport.pause_reading()  # from now on this client reads nothing
        dropped_before = _dropped()
        hub = live_app.state.events
        got = []
        for k in range(n):  # one at a time: the fast client reads each before the next
            hub.publish("fam-1", "entry", _entry(k, note=pad))
            got.append(json.loads(await asyncio.wait_for(fast.recv(), 10))["data"]["date"])
        assert got == [T0 + k * 60_000 for k in range(n)]  # everything, in order
        writer.transport.resume_reading()
        entries, resyncs = 0, []
        deadline = time.monotonic() + 10
        while entries + (resyncs[-1] if resyncs else 0) < n:
            assert time.monotonic() < deadline, (entries, resyncs)
            msg = json.loads(await asyncio.wait_for(_frame(reader), 10))
            if msg["type"] == "entry":
                entries += 1
            elif msg["type"] == "resync":
                resyncs.append(msg["data"]["dropped"])
        dropped = _dropped() - dropped_before
        writer.close()
        await fast.close()
        return entries, resyncs, dropped

    with serve(live_app) as base:
        entries, resyncs, dropped = asyncio.run(run(base))
    assert resyncs and entries < n
    assert entries + resyncs[-1] == n  # every message was delivered or counted as dropped
    assert dropped == resyncs[-1]


async def _frame(reader) -> bytes:
    """One unmasked server frame's payload."""
    head = await reader.readexactly(2)
    length = head[1] & 0x7F
    if length == 126:
        length = int.from_bytes(await reader.readexactly(2), "big")
    elif length == 127:
        length = int.from_bytes(await reader.readexactly(8), "big")
    return await reader.readexactly(length)


def _dropped() -> float:
    return REGISTRY.get_sample_value("nightlink_live_dropped_total",
                                     {"transport": "websocket"}) or 0.0


def test_hub__socketio_gets_other_connections_entries_as_data_updates(live_app):
    """The same hub feeds socket.io: a dataUpdate delta for an entry another connection
    stored, sent once to the tenant's room."""
    import hashlib

    from tests.support.sockets import Recorder

    secret = "live-hub-socket-secret-01"
    live_app.state.store.set_api_secret("fam-1", secret)
    other = Store.open(live_app.state.url)
    namespace = "/t/fam-1"

    async def run(base):
        rec = Recorder()
        await rec.connect(base, [namespace], transports=["websocket"])
        try:
            reply = await rec.call("authorize",
                                   {"secret": hashlib.sha1(secret.encode()).hexdigest()},
                                   namespace)
            assert reply["read"] is True
            await rec.next(namespace, "dataUpdate")  # the full one
            await asyncio.to_thread(other.tenant("fam-1").add_entries, [_entry(3, 77)])
            delta = await rec.next(namespace, "dataUpdate", 5)
            assert delta["delta"] is True and [s["mgdl"] for s in delta["sgvs"]] == [77]
        finally:
            await rec.close()

    run_served(live_app, run, closing=(other,))
