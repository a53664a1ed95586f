"""The edge tells the clocks the time (edge/sync/clock_feed.py), for a LAN with no NTP server:
once a minute, never retained, and only while NTP has said within a week that this machine's
own clock is synchronized (never before: a Raspberry Pi boots with a stale time); a replay's
virtual clock gives none. Through a real Mosquitto, as a clock subscribes."""

import json
import threading

import paho.mqtt.client as mqtt

from nightlink.edge.store import EdgeStore
from nightlink.edge.sync.clock_feed import ClockFeed
from nightlink.shared import topics
from tests.support.waiting import until

T0 = 1_768_510_800.0


def _subscriber(broker, got, seen, client_id="clock-test"):
    """A clock's subscription, returned once the broker has acknowledged it: the time is not
    retained, so a message published before would never reach it."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    subscribed = threading.Event()

    def on_message(_c, _u, msg):
        got.append((msg.topic, json.loads(msg.payload), msg.retain))
        seen.set()

    c.on_message = on_message
    c.on_connect = lambda cl, *_a: cl.subscribe(topics.clock_feed_filter("smith"), 1)
    c.on_subscribe = lambda *_a: subscribed.set()
    c.connect(broker.host, broker.port)
    c.loop_start()
    assert subscribed.wait(10), "the broker did not acknowledge the subscription"
    return c


def test_clock_feed__time_once_a_minute_only_when_synchronized(tmp_path, mosquitto):
    store = EdgeStore(tmp_path / "edge.db")
    synced = [False]
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="edge-test")
    pub.connect(mosquitto.host, mosquitto.port)
    pub.loop_start()
    got, seen = [], threading.Event()
    sub = _subscriber(mosquitto, got, seen)
    try:
        feed = ClockFeed(pub.publish, "smith", "ed9e00000001", lambda: synced[0])
        assert feed.update(store, T0) == 0  # a Pi before NTP: its time is not given
        synced[0] = True
        assert feed.update(store, T0 + 30) == 0  # asked again only a minute later
        assert feed.update(store, T0 + 61) == 1
        assert feed.update(store, T0 + 90) == 0
        assert seen.wait(10)
        topic, body, retained = got[0]
        assert topic == "nl/v1/smith/ed9e00000001/clock/time" and body == {"t": int(T0 + 61)}
        assert retained is False
        assert feed.update(store, T0 + 121) == 1
        # Hours into an internet outage the kernel stops saying "synchronized" while the
        # clock is still right: the time still goes for a week after NTP last said so...
        synced[0] = None
        assert feed.update(store, T0 + 181) == 1
        synced[0] = False
        assert feed.update(store, T0 + 241) == 1
        feed.synced_mono -= 7 * 86400 + 1  # ... and then no more
        assert feed.update(store, T0 + 301) == 0
        until(lambda: len(got) == 4, timeout=10, what="the four times delivered")
        # A clock connecting later finds no stored time (it would be old when read).
        late, late_seen = [], threading.Event()
        other = _subscriber(mosquitto, late, late_seen, client_id="clock-late")
        assert not late_seen.wait(1.0)
        other.loop_stop()
        other.disconnect()
    finally:
        for c in (pub, sub):
            c.loop_stop()
            c.disconnect()
    # A replay or test clock (no `synchronized`) never gives the time.
    sent = []
    feed = ClockFeed(lambda *a, **kw: sent.append(a), "smith", "ed9e00000001")
    assert feed.update(store, T0) == 0 and sent == []



def test_system_clock_synchronized__asks_timedatectl(tmp_path, monkeypatch):
    """The answer comes from `timedatectl show --property=NTPSynchronized --value` (the edge's
    unit refuses adjtimex); without timedatectl, or with an answer it cannot read, None."""
    from nightlink.edge.sync.clock_feed import system_clock_synchronized

    fake = tmp_path / "timedatectl"
    for answer, want in (("yes", True), ("no", False), ("maybe", None)):
        fake.write_text(f"#!/bin/sh\n[ \"$*\" = \"show --property=NTPSynchronized --value\" ] "
                        f"|| exit 1\necho {answer}\n")
        fake.chmod(0o755)
        monkeypatch.setenv("PATH", str(tmp_path))
        assert system_clock_synchronized() is want
    monkeypatch.setenv("PATH", str(tmp_path / "none"))
    assert system_clock_synchronized() is None


def test_clock_feed__sends_again_after_a_reconnect(tmp_path):
    """A LAN broker that restarted has lost its retained messages: after forget() (the node
    calls it when the link comes back) the current reading and night go out again."""
    from nightlink.edge.sources.cgm import glucose_to_entry
    from nightlink.edge.sources.samples import Glucose

    store = EdgeStore(tmp_path / "edge.db")
    store.add_entries(glucose_to_entry(Glucose(T0 - 300 * k, 120), "test") for k in range(3))
    store.put_night("2026-01-14", {"first_epoch": int(T0 // 30) - 1000, "epochs": 900})
    sent = []
    feed = ClockFeed(lambda topic, payload, **kw: sent.append(topic), "smith", "ed9e00000001")
    assert feed.update(store, T0 + 60) == 2 and feed.update(store, T0 + 90) == 0
    feed.forget()
    assert feed.update(store, T0 + 120) == 2
    assert sorted(sent[-2:]) == ["nl/v1/smith/ed9e00000001/clock/glucose",
                                 "nl/v1/smith/ed9e00000001/clock/night"]
    store.close()
