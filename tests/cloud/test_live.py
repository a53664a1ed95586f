"""The live WebSocket: token in the query, hello, entries from the bus and from another
connection to the store each once, alerts, pings, revocation."""

import json
import threading
import time

import pytest
from starlette.websockets import WebSocketDisconnect

from nightlink.cloud import live
from nightlink.cloud.auth import issue_tokens

from .conftest import JWT_SECRET

PATH = "/api/nl/v1/tenants/{}/live"
T0 = 1_770_000_000_000


def _entry(minutes, sgv=120):
    return {"type": "sgv", "date": T0 + minutes * 60_000, "sgv": sgv, "direction": "Flat"}


def _sent(doc: dict) -> dict:
    """An entry as the socket sends it, less what the store adds (`_id`, times in text, the
    delta from the previous reading)."""
    return {k: v for k, v in doc.items() if k not in ("_id", "dateString", "sysTime",
                                                      "utcOffset", "delta")}


def _entry_msg(msg: dict) -> dict:
    return {"type": msg["type"], "data": _sent(msg["data"])}


@pytest.fixture
def lc(cloud, monkeypatch):
    """The cloud fixture with the live router mounted (until create_app includes it), a fast
    change feed and pings so a missing message fails the test instead of hanging it."""
    app = cloud.client.app
    if not any(getattr(r, "path", "") == PATH.format("{tenant}") for r in app.routes):
        app.include_router(live.router)
    app.state.events.feed.poll_s = 0.05
    monkeypatch.setattr(live, "PING_S", 0.5)
    return cloud


def _url(cloud, email, tenant="fam-1"):
    return PATH.format(tenant) + "?access_token=" + cloud.tokens[email]


def _next(ws, max_pings=20):
    """The next message that is not a ping (at most max_pings pings in between)."""
    for _ in range(max_pings):
        msg = ws.receive_json()
        if msg["type"] != "ping":
            return msg
    raise AssertionError(f"only pings for {max_pings} keepalive intervals")


def _closed_with(cloud, url):
    with pytest.raises(WebSocketDisconnect) as info, cloud.client.websocket_connect(url) as ws:
        ws.receive_json()
    return info.value.code


def test_live__rejects_missing_and_bad_tokens(lc):
    assert _closed_with(lc, PATH.format("fam-1")) == 4401
    assert _closed_with(lc, PATH.format("fam-1") + "?access_token=nonsense") == 4401
    user = lc.user("p@x.org", tenant="fam-1", role="patient")
    refresh = issue_tokens(lc.store, user["id"], JWT_SECRET, 15, 30)["refresh_token"]
    assert _closed_with(lc, PATH.format("fam-1") + "?access_token=" + refresh) == 4401


def test_live__rejects_non_member_and_unknown_tenant(lc):
    lc.user("other@x.org", tenant="fam-2", role="caregiver")
    assert _closed_with(lc, _url(lc, "other@x.org", "fam-1")) == 4404
    assert _closed_with(lc, _url(lc, "other@x.org", "nope")) == 4404


def test_live__admin_may_watch_any_tenant(lc):
    lc.user("root@x.org", admin=True)
    with lc.client.websocket_connect(_url(lc, "root@x.org")) as ws:
        hello = ws.receive_json()
    assert hello["type"] == "hello" and hello["data"]["role"] == "admin"


def test_live__hello_has_the_latest_entry_and_unacked_alerts(lc):
    lc.user("care@x.org", tenant="fam-1", role="caregiver")
    data = lc.store.tenant("fam-1")
    data.add_entries([_entry(0, 100), _entry(5, 104)])
    alert_id = data.add_alert("low", "warning", T0, "Low.")
    with lc.client.websocket_connect(_url(lc, "care@x.org")) as ws:
        hello = ws.receive_json()
        assert hello["type"] == "hello"
        assert _sent(hello["data"]["entry"]) == _entry(5, 104)
        assert hello["data"]["role"] == "caregiver" and hello["data"]["tenant"] == "fam-1"
        assert [a["id"] for a in hello["data"]["alerts"]] == [alert_id]
        # Neither the hello's entry nor an older one is sent again.
        assert ws.receive_json()["type"] == "ping"


def test_live__bus_entry_and_other_connection_entry_each_exactly_once(lc, tmp_path):
    from nightlink.cloud.store import Store

    lc.user("p@x.org", tenant="fam-1", role="patient")
    events = lc.client.app.state.events
    data = lc.store.tenant("fam-1")
    data.add_entries([_entry(0)])
    other = Store.open(f"sqlite:///{tmp_path / 'cloud.db'}")  # as another process would
    try:
        with lc.client.websocket_connect(_url(lc, "p@x.org")) as ws:
            assert _sent(ws.receive_json()["data"]["entry"]) == _entry(0)
            # 1. Stored and published on the bus (as this process's writers do): sent once.
            data.add_entries([_entry(5, 130)])
            events.publish("fam-1", "entry", _entry(5, 130))
            assert _entry_msg(_next(ws)) == {"type": "entry", "data": _entry(5, 130)}
            # 2. Stored through another connection (no bus message): found by the feed.
            other.tenant("fam-1").add_entries([_entry(10, 140)])
            assert _entry_msg(_next(ws)) == {"type": "entry", "data": _entry(10, 140)}
            # 3. The same two on the bus again (late duplicates): dropped. Then a new one.
            events.publish("fam-1", "entry", _entry(5, 130))
            events.publish("fam-1", "entry", _entry(10, 140))
            events.publish("fam-1", "entry", _entry(15, 150))
            assert _entry_msg(_next(ws)) == {"type": "entry", "data": _entry(15, 150)}
            # Several feed intervals and pings later, nothing else came.
            msgs = [ws.receive_json() for _ in range(3)]
            assert {m["type"] for m in msgs} == {"ping"}
    finally:
        other.close()


def test_live__alerts_from_the_bus_and_from_the_store(lc):
    lc.user("care@x.org", tenant="fam-1", role="caregiver")
    data = lc.store.tenant("fam-1")
    with lc.client.websocket_connect(_url(lc, "care@x.org")) as ws:
        ws.receive_json()
        aid = data.add_alert("urgent_low", "urgent", T0, "Urgent low: 50 mg/dL (below 54).")
        msg = _next(ws)
        assert msg["type"] == "alert" and msg["data"]["id"] == aid
        assert msg["data"]["acked_at"] is None
        lc.client.post(f"/api/nl/v1/tenants/fam-1/alerts/{aid}/ack",
                       headers={"Authorization": f"Bearer {lc.tokens['care@x.org']}"})
        acked = _next(ws)
        assert acked["data"]["id"] == aid and acked["data"]["acked_at"] is not None


def test_live__keepalive_ping(lc):
    lc.user("p@x.org", tenant="fam-1", role="patient")
    with lc.client.websocket_connect(_url(lc, "p@x.org")) as ws:
        ws.receive_json()
        ping = ws.receive_json()
    assert ping["type"] == "ping" and ping["data"]["server_time_ms"] > T0


def test_live__revoked_member_is_closed(lc, monkeypatch):
    monkeypatch.setattr(live, "ROLE_S", 0.3)
    user = lc.user("care@x.org", tenant="fam-1", role="caregiver")
    with lc.client.websocket_connect(_url(lc, "care@x.org")) as ws:
        ws.receive_json()
        lc.store.revoke("fam-1", user["id"])
        with pytest.raises(WebSocketDisconnect) as info:
            for _ in range(20):
                ws.receive_json()
    assert info.value.code == 4404


def test_live__a_member_revoked_in_this_process_is_closed_at_the_next_tick(lc):
    import time

    assert live.ROLE_S == 60.0  # not waited for: the store says access changed
    user = lc.user("care@x.org", tenant="fam-1", role="caregiver")
    with lc.client.websocket_connect(_url(lc, "care@x.org")) as ws:
        ws.receive_json()
        started = time.monotonic()
        lc.store.revoke("fam-1", user["id"])
        with pytest.raises(WebSocketDisconnect) as info:
            ws.receive_json()
    assert info.value.code == 4404 and time.monotonic() - started < 5


def test_live__real_server_with_the_alert_worker(tmp_path):
    """uvicorn on a free port, a real WebSocket client, and the worker from install(app)."""
    import uvicorn
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    from nightlink.cloud.app import create_app
    from nightlink.cloud.auth import hash_password
    from nightlink.cloud.config import Settings
    from tests.support.services import free_port

    app = create_app(Settings(env="test", database_url=f"sqlite:///{tmp_path / 'c.db'}",
                              jwt_secret=JWT_SECRET))
    if not any(getattr(r, "path", "") == PATH.format("{tenant}") for r in app.routes):
        app.include_router(live.router)
    live.install(app)
    store = app.state.store
    store.create_tenant("fam-1", "One")
    user = store.create_user("p@x.org", hash_password("pw-pw-pw-pw"))
    store.grant("fam-1", user["id"], "patient", by=None)
    token = issue_tokens(store, user["id"], JWT_SECRET, 15, 30)["access_token"]
    now = int(time.time() * 1000)
    store.tenant("fam-1").add_entries([{"type": "sgv", "date": now - 60_000, "sgv": 100,
                                        "direction": "Flat"}])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 15
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        url = f"ws://127.0.0.1:{port}{PATH.format('fam-1')}?access_token={token}"
        with connect(url, open_timeout=5) as ws:
            hello = json.loads(ws.recv(timeout=5))
            assert hello["type"] == "hello" and hello["data"]["entry"]["sgv"] == 100
            # A reading of 45 stored and announced: the worker raises urgent low, the socket
            # gets the entry and then the alert.
            doc = {"type": "sgv", "date": now, "sgv": 45, "direction": "DoubleDown"}
            store.tenant("fam-1").add_entries([doc])
            app.state.events.publish("fam-1", "entry", doc)
            got = []
            while len(got) < 2:
                msg = json.loads(ws.recv(timeout=10))
                if msg["type"] != "ping":
                    got.append(msg)
            assert _entry_msg(got[0]) == {"type": "entry", "data": doc}
            assert got[1]["type"] == "alert" and got[1]["data"]["rule"] == "urgent_low"
        with pytest.raises(ConnectionClosed) as info, \
                connect(url[: url.index("?")], open_timeout=5) as ws:
            ws.recv(timeout=5)
        assert info.value.rcvd.code == 4401
    finally:
        server.should_exit = True
        thread.join(15)
        store.close()
