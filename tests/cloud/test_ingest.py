"""MQTT ingest against a real Mosquitto and a real store: rows once, acks, dead letters."""

import json
import queue
import time

import paho.mqtt.client as mqtt
import pytest

from nightlink.cloud.config import Settings
from nightlink.cloud.ingest import IngestWorker, glucose_entries, handle
from nightlink.shared import codec, features, topics
from tests.support.cloud import two_tenants
from tests.support.waiting import subscribed

DEV = "a4cf12b0c3d4"
OTHER = "0123456789ab"
ROW = codec.quantize_row(features.ROOM, (21.0, 40.0, 0.0, 600.0, 30.0))


def _settings(broker, group="ingest"):
    return Settings(env="test", jwt_secret="x" + "0123456789abcdef" * 3, mqtt_host=broker.host,
                    mqtt_port=broker.port, mqtt_shared_group=group)


@pytest.fixture
def store(cloud_db_url):
    s = two_tenants(cloud_db_url, [(DEV, "fam-1", "edge"), (OTHER, "fam-2", "clock")])
    yield s
    s.close()


def _rec(seq, epoch, n=1, dev=DEV, stream=features.ROOM, row=ROW, boot=1):
    return codec.Record(stream, codec.device_id(dev), boot, seq, epoch, [row] * n)


def _client(broker):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    c.connect(broker.host, broker.port)
    c.loop_start()
    return c


def test_handle__stores_rows_once_and_acks_high_water_mark(store):
    topic = topics.data_topic("fam-1", DEV, "room")
    out = handle(store, topic, codec.encode_batch([_rec(1, 100, n=3), _rec(6, 105)]))
    assert out.rows == 4
    assert out.acks == [(topics.ack_topic("fam-1", DEV, "room"),
                         {"stream": "room", "hwm": 3, "gaps": [[4, 5]], "of": [1, 6]})]
    again = handle(store, topic, codec.encode_batch([_rec(1, 100, n=3)]))
    assert again.rows == 0
    assert store.tenant("fam-1").count_rows() == 4


def test_handle__cgm_rows_become_nightscout_entries(store):
    cgm = features.CGM
    rows = [codec.quantize_row(cgm, (112.0, 0.5 + 0.5 * i, -2.0, -0.4, 5.0, None))
            for i in range(3)]
    rec = codec.Record(cgm, codec.device_id(DEV), 1, 1, 58950540, rows)
    assert len(glucose_entries(rec, DEV)) == 1  # one reading, three epochs
    out = handle(store, topics.data_topic("fam-1", DEV, "cgm"), codec.encode(rec))
    entries = store.tenant("fam-1").entries()
    assert len(out.entries) == 1 and entries[0]["sgv"] == 112
    assert entries[0]["direction"] == "FortyFiveDown"
    assert entries[0]["date"] == (58950540 * 30 + 30 - 30) * 1000


def test_handle__readings_from_a_clock_set_wrong_are_not_served_as_entries(store):
    """An edge whose clock runs 20 h ahead: stored as Nightscout entries its readings were
    every follower's "current" glucose until then, hiding the real readings (a low among
    them). Its epoch rows are kept and acknowledged; its readings are not served, and one
    dead letter says why."""
    cgm = features.CGM
    now_epoch = int(time.time() // 30)
    ahead = codec.Record(cgm, codec.device_id(DEV), 1, 1, now_epoch + 20 * 120,
                         [codec.quantize_row(cgm, (250.0, 0.0, 0.0, 0.0, 4.0, None))])
    right = codec.Record(cgm, codec.device_id(DEV), 1, 2, now_epoch - 2,
                         [codec.quantize_row(cgm, (50.0, 0.0, -9.0, -1.8, 1.0, None))])
    old = codec.Record(cgm, codec.device_id(DEV), 1, 3, 100,
                       [codec.quantize_row(cgm, (120.0, 0.0, 0.0, 0.0, 4.0, None))])
    out = handle(store, topics.data_topic("fam-1", DEV, "cgm"),
                 codec.encode_batch([ahead, right, old]))
    data = store.tenant("fam-1")
    assert data.count_rows() == 3 and out.acks[0][1]["hwm"] == 3
    assert [e["sgv"] for e in data.entries()] == [50]
    [(reason, part)] = out.dead
    assert reason.startswith("Glucose readings of the message: 1 dated up to 20.0 h ahead of "
                             "the cloud's clock (first: ")
    assert "; 1 dated before the year 2000. The device's clock is wrong" in reason
    assert b'"sgv":250' in part


def test_handle__a_message_over_the_row_limit_is_refused(store):
    from nightlink.cloud.ingest import Rejected

    topic = topics.data_topic("fam-1", DEV, "room")
    big = [_rec(1 + 2880 * k, 100 + 2880 * k, n=2880) for k in range(3)]  # 8,640 rows
    with pytest.raises(Rejected, match="holds 8640 epoch rows; one message carries at most 8192"):
        handle(store, topic, codec.encode_batch(big, compress=True))
    assert store.tenant("fam-1").count_rows() == 0
    out = handle(store, topic, codec.encode_batch(big[:2], compress=True))
    assert out.rows == 5760


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        (topics.data_topic("fam-1", "ffffffffffff", "room"), "rec", "is not provisioned"),
        (topics.data_topic("fam-2", DEV, "room"), "rec", "is not provisioned for tenant fam-2"),
        (topics.data_topic("fam-1", DEV, "room"), "crc", "CrcError"),
        (topics.data_topic("fam-1", DEV, "room"), "spoof", "was sent on a4cf12b0c3d4's topic"),
        (topics.data_topic("fam-1", DEV, "cgm"), "rec", "A room record was sent on the cgm"),
        ("nl/v1/fam-1/" + DEV + "/room/ack", "rec", "is not a data or status topic"),
        (topics.status_topic("fam-1", DEV), "rec", "status report is not a JSON object"),
        ("nl/v2/x", "rec", "does not start with"),
    ],
)
def test_handle__rejects_with_reason(store, topic, payload, reason):
    from nightlink.cloud.ingest import Rejected

    good = codec.encode(_rec(1, 100))
    data = {"rec": good, "crc": good[:-1] + bytes([good[-1] ^ 1]),
            "spoof": codec.encode(_rec(1, 100, dev=OTHER))}[payload]
    with pytest.raises(Rejected, match=reason):
        handle(store, topic, data)
    assert store.tenant("fam-1").count_rows() == 0


def test_worker__real_broker_acks_and_dead_letters(store, mosquitto):
    worker = IngestWorker(store, _settings(mosquitto))
    worker.start()
    assert worker.connected.wait(10)
    acks = queue.Queue()
    dev = _client(mosquitto)
    dev.on_message = lambda _c, _u, m: acks.put((m.topic, json.loads(m.payload)))
    subscribed(dev, f"nl/v1/fam-1/{DEV}/+/ack")
    topic = topics.data_topic("fam-1", DEV, "room")
    dev.publish(topic, b"garbage", qos=1).wait_for_publish(5)
    for i in range(10):
        dev.publish(topic, codec.encode_batch([_rec(1 + 12 * i, 100 + 12 * i, n=12)]),
                    qos=1).wait_for_publish(5)
    deadline = time.monotonic() + 10
    while store.tenant("fam-1").count_rows() < 120 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert worker.drain()
    assert store.tenant("fam-1").count_rows() == 120
    last = None
    while True:
        try:
            last = acks.get(timeout=2)
        except queue.Empty:
            break
        if last[1]["hwm"] == 120:
            break
    assert last == (topics.ack_topic("fam-1", DEV, "room"),
                    {"stream": "room", "hwm": 120, "gaps": [], "of": [109, 120]})
    dead = store.dead_letters()
    assert len(dead) == 1 and dead[0]["payload"] == b"garbage"
    assert dead[0]["reason"].startswith("WireError") or "Error" in dead[0]["reason"]
    dev.loop_stop()
    dev.disconnect()
    worker.stop()


@pytest.mark.parametrize("group", ["ingest", ""])
def test_worker__retained_copies_at_each_subscription_are_not_news(store, mosquitto, group):
    """The broker hands a topic's retained message to every new subscription: a restarted
    ingest re-dead-lettered a retained garbage data message each time, and re-applied the
    retained status report as if the device had just been heard from."""
    dev = _client(mosquitto)
    status, room = topics.status_topic("fam-1", DEV), topics.data_topic("fam-1", DEV, "room")

    def run_worker(until, send=lambda: None) -> None:
        worker = IngestWorker(store, _settings(mosquitto, group=group))
        worker.start()
        assert worker.connected.wait(10)
        send()
        deadline = time.monotonic() + 10
        while not until() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # the retained copies arrive right after the subscription
        assert worker.drain()
        worker.stop()

    def send() -> None:  # live, while the ingest is subscribed, and retained
        dev.publish(status, json.dumps({"uptime_s": 5}), qos=1, retain=True).wait_for_publish(5)
        dev.publish(room, b"garbage", qos=1, retain=True).wait_for_publish(5)

    try:
        heard = []
        for restart in range(3):
            run_worker(lambda: store.device_status(DEV) is not None and store.dead_letters(),
                       send if restart == 0 else lambda: None)
            heard.append(store.device_status(DEV)["updated_at"])
        assert store.device_status(DEV)["uptime_s"] == 5
        assert heard[0] == heard[1] == heard[2]
        assert [d["payload"] for d in store.dead_letters()] == [b"garbage"]
        dev.publish(status, json.dumps({"uptime_s": 65}), qos=1, retain=True).wait_for_publish(5)
        run_worker(lambda: store.device_status(DEV)["uptime_s"] == 65)
        assert store.device_status(DEV)["updated_at"] > heard[0]  # a new report is news
    finally:
        for topic in (status, room):  # the broker is shared: clear what this test retained
            dev.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)
        dev.loop_stop()
        dev.disconnect()


def test_worker__two_workers_share_the_load_without_doubles(store, mosquitto, record_property):
    workers = [IngestWorker(store, _settings(mosquitto), client_id=f"ingest-{i}")
               for i in range(2)]
    for w in workers:
        w.start()
        assert w.connected.wait(10)  # connected and subscribed
    dev = _client(mosquitto)
    topic = topics.data_topic("fam-1", DEV, "room")
    n_msgs = 200
    for i in range(n_msgs):
        dev.publish(topic, codec.encode(_rec(1 + 3 * i, 100 + 3 * i, n=3)), qos=1)
    dev.loop_stop()
    deadline = time.monotonic() + 20
    while store.tenant("fam-1").count_rows() < 3 * n_msgs and time.monotonic() < deadline:
        time.sleep(0.05)
    for w in workers:
        assert w.drain()
    assert store.tenant("fam-1").count_rows() == 3 * n_msgs
    assert all(w.handled > 0 for w in workers), [w.handled for w in workers]
    assert sum(w.handled for w in workers) == n_msgs  # each message handled once
    assert store.advance_hwm(DEV, features.ROOM) == 3 * n_msgs
    record_property("fault_counts", f"two ingest workers on one shared subscription: messages "
                    f"{[w.handled for w in workers]}, rows {3 * n_msgs} stored once, none missing")
    dev.disconnect()
    for w in workers:
        w.stop()


@pytest.mark.parametrize("retracted, reason", [
    ({"boot": 2}, "retracted is not a list of at most 64"),
    ([{"boot": 1}] * 65, "at most 64"),
    ([{"boot": -1}], "not an object with a boot number"),
    ([{"boot": 2.0}], "not an object with a boot number"),
    ([3], "not an object with a boot number"),
    ([{"boot": 2, "nights": "2026-01-15"}], "boot 2 has nights"),
    ([{"boot": 2, "nights": ["2026-02-30"]}], "not a list of at most 400 nights"),
])
def test_handle__status_report_retracted_checked(store, retracted, reason):
    from nightlink.cloud.ingest import Rejected

    cgm = features.CGM
    rows = [codec.quantize_row(cgm, (112.0, 0.5, 0.0, 0.0, 4.0, None))]
    handle(store, topics.data_topic("fam-1", DEV, "cgm"),
           codec.encode(codec.Record(cgm, codec.device_id(DEV), 2, 1, 58950540, rows)))
    body = json.dumps({"outbox": 0, "retracted": retracted}).encode()
    with pytest.raises(Rejected, match=reason):
        handle(store, topics.status_topic("fam-1", DEV), body)
    data = store.tenant("fam-1")
    assert data.count_rows() == 1 and len(data.entries()) == 1
    assert data.retracted(DEV, [1, 2]) == set()


def test_handle__an_undone_import_s_boot_leaves_and_stays_out(store):
    """An edge undid the import it wrote under boot 2 (edge/store/imports.py): its rows and
    the readings served from them alone leave, its screen of the import's night gives way to
    the tenant's other edge's, once; rows of boot 2 arriving later are acknowledged and not
    stored."""
    cgm, topic = features.CGM, topics.data_topic("fam-1", DEV, "cgm")
    first = 58950540

    def rec(boot, seq, epoch, glucose, n=1):
        rows = [codec.quantize_row(cgm, (glucose, 0.5 + 0.5 * i, 0.0, 0.0, 4.0, None))
                for i in range(n)]
        return codec.Record(cgm, codec.device_id(DEV), boot, seq, epoch, rows)

    # boot 1 (live) holds one reading; boot 2 (the import) the same reading in a later
    # epoch, and three of its own
    handle(store, topic, codec.encode(rec(1, 1, first, 120.0)))
    handle(store, topic, codec.encode_batch([rec(2, 2, first + 1, 120.0),
                                             rec(2, 3, first + 10, 90.0, n=2),
                                             rec(2, 5, first + 20, 91.0),
                                             rec(2, 6, first + 30, 92.0)]))
    handle(store, topics.data_topic("fam-1", DEV, "room"), codec.encode(_rec(1, first, boot=2)))
    data = store.tenant("fam-1")
    assert data.count_rows() == 7 and len(data.entries(count=10)) == 4
    store.add_device("0000000000e2", "fam-1", "edge", "fam-1.0000000000e2", "-")
    handle(store, topics.status_topic("fam-1", DEV),
           b'{"nights": {"2026-01-15": {"ahi_estimate": 20.5}, "2026-01-16": {"ahi": 1}}}')
    handle(store, topics.status_topic("fam-1", "0000000000e2"),
           b'{"nights": {"2026-01-15": {"ahi_estimate": 3.0}}}')

    report = json.dumps({"outbox": 0, "retracted": [
        {"boot": 2, "nights": ["2026-01-15", "2026-01-16", "2026-01-17"]}]}).encode()
    handle(store, topics.status_topic("fam-1", DEV), report)
    assert data.count_rows() == 1 and data.retracted(DEV, [1, 2, 3]) == {2}
    left = data.entries(count=10)
    assert [e["sgv"] for e in left] == [120]  # boot 1 carries it too: still served
    assert data.night("2026-01-15") == {"breathing": {"ahi_estimate": 3.0},
                                        "device": "0000000000e2",
                                        "by_device": {"0000000000e2": {"ahi_estimate": 3.0}}}
    assert [n["night"] for n in data.nights()] == ["2026-01-15"]  # its only screen gone
    assert "retracted" not in store.device_status(DEV)
    assert data.retract_boot(DEV, 2, ["2026-01-15"]) is None  # the next report: nothing
    assert data.night("2026-01-15")["device"] == "0000000000e2"

    out = handle(store, topic, codec.encode(rec(2, 7, first + 40, 60.0)))  # late
    assert out.rows == 0 and out.acks and data.count_rows() == 1
    assert [e["sgv"] for e in data.entries(count=10)] == [120]


def test_handle__status_report_is_kept(store):
    handle(store, topics.status_topic("fam-1", DEV), b'{"outbox": 12, "drops": {"audio": 3}}')
    got = store.device_status(DEV)
    assert got["outbox"] == 12 and got["drops"] == {"audio": 3}


@pytest.mark.parametrize("nights, reason", [
    ([1, 2], "nights is not an object of at most 14"),
    ({f"2026-01-{d:02d}": {} for d in range(1, 16)}, "at most 14"),
    ({"2026-01-15": [1]}, "not an object of finite numbers"),
    ({"2026-01-15": {"x": "a" * 9000}}, "of at most 8192 bytes"),
])
def test_handle__status_report_nights_checked(store, nights, reason):
    from nightlink.cloud.ingest import Rejected

    body = json.dumps({"outbox": 0, "nights": nights}).encode()
    with pytest.raises(Rejected, match=reason):
        handle(store, topics.status_topic("fam-1", DEV), body)
    assert store.tenant("fam-1").nights() == []


def test_handle__status_report_nights_with_nan_refused_and_good_ones_kept_once(store):
    from nightlink.cloud.ingest import Rejected

    with pytest.raises(Rejected, match="NaN is not a number JSON can hold"):
        handle(store, topics.status_topic("fam-1", DEV),
               b'{"nights": {"2026-01-15": {"ahi_estimate": NaN}}}')
    good = b'{"outbox": 1, "nights": {"2026-01-15": {"ahi_estimate": 20.5}}}'
    handle(store, topics.status_topic("fam-1", DEV), good)
    data = store.tenant("fam-1")
    first = data.night_updated("2026-01-15")
    handle(store, topics.status_topic("fam-1", DEV), good)  # the next report: unchanged
    assert data.night_updated("2026-01-15") == first
    assert data.night("2026-01-15") == {"breathing": {"ahi_estimate": 20.5}, "device": DEV,
                                        "by_device": {DEV: {"ahi_estimate": 20.5}}}
    assert "nights" not in store.device_status(DEV)
    # A second edge of the tenant (a second home) reporting the same night: its screen is
    # kept beside the first's (fusion takes the one of the edge that recorded the person),
    # once, not at every report.
    store.add_device("0000000000e2", "fam-1", "edge", "fam-1.0000000000e2", "-")
    second = b'{"nights": {"2026-01-15": {"ahi_estimate": 3.0}}}'
    handle(store, topics.status_topic("fam-1", "0000000000e2"), second)
    night = data.night("2026-01-15")
    assert night["device"] == DEV and night["breathing"] == {"ahi_estimate": 20.5}
    assert night["by_device"] == {DEV: {"ahi_estimate": 20.5},
                                  "0000000000e2": {"ahi_estimate": 3.0}}
    updated = data.night_updated("2026-01-15")
    handle(store, topics.status_topic("fam-1", "0000000000e2"), second)
    handle(store, topics.status_topic("fam-1", DEV), good)
    assert data.night_updated("2026-01-15") == updated


@pytest.mark.parametrize("body", [
    b'{"outbox": NaN}', b'{"alarm_policy": "x", "alarm_policy_params": {"threshold": -Infinity}}',
    b'{"drops": {"audio": Infinity}}',
])
def test_handle__status_report_with_a_number_json_cannot_hold_refused(store, body):
    """Read back, a NaN made the report's JSON (and the doctor's report.json) invalid."""
    from nightlink.cloud.ingest import Rejected

    with pytest.raises(Rejected, match="is not a number JSON can hold"):
        handle(store, topics.status_topic("fam-1", DEV), body)
    assert store.device_status(DEV) is None


def test_handle__a_clocks_status_report_keeps_its_health_not_an_edges_fields(store):
    """A clock's report set the tenant's time zone (moving every night window of the doctor's
    report), the active alarm policy and a night's apnea screen."""
    edge = {"outbox": 0, "timezone": "Europe/Paris", "alarm_policy": "warn at 20 %"}
    handle(store, topics.status_topic("fam-1", DEV), json.dumps(edge).encode())
    store.add_device("c10c00000001", "fam-1", "clock", "fam-1.c10c00000001", "-")
    forged = {"outbox": 3, "drops": {"room": 1}, "timezone": "Pacific/Kiritimati",
              "alarm_policy": "CLOCK SAYS: never warn", "alarm_policy_params": {"x": 1},
              "night_schedule": "08:00-16:00", "nights": {"2026-12-03": {"ahi": 55.0}},
              "retracted": [{"boot": 1}]}
    out = handle(store, topics.status_topic("fam-1", "c10c00000001"),
                 json.dumps(forged).encode())
    [(reason, part)] = out.dead
    assert "c10c00000001 is not an edge node" in reason and "timezone" in reason
    assert json.loads(part)["alarm_policy"] == "CLOCK SAYS: never warn"
    kept = store.device_status("c10c00000001")
    assert kept["outbox"] == 3 and kept["drops"] == {"room": 1}
    assert not set(kept) & {"timezone", "alarm_policy", "night_schedule", "nights"}
    data = store.tenant("fam-1")
    assert data.reported_timezones() == ["Europe/Paris"] and data.nights() == []
    assert data.reported_schedule() is None
    assert data.alarm_policy()["text"] == "warn at 20 %"


def test_handle__a_reading_under_a_reused_seq_is_not_served(store):
    """A device that numbers new rows again (its store put back from an older copy) is asked
    to number them anew and the rows are not stored; their reading was served anyway."""
    cgm, topic = features.CGM, topics.data_topic("fam-1", DEV, "cgm")

    def rec(seq, epoch, glucose):
        row = codec.quantize_row(cgm, (glucose, 0.5, 0.0, 0.0, 4.0, None))
        return codec.Record(cgm, codec.device_id(DEV), 1, seq, epoch, [row])

    handle(store, topic, codec.encode(rec(1, 58950540, 110.0)))
    out = handle(store, topic, codec.encode(rec(1, 58950560, 60.0)))
    [(_, ack)] = out.acks
    assert ack["reused"] == [[1, 1]] and out.rows == 0 and out.entries == []
    assert [e["sgv"] for e in store.tenant("fam-1").entries(count=10)] == [110]
    renumbered = handle(store, topic, codec.encode(rec(2, 58950560, 60.0)))
    assert renumbered.rows == 1 and [e["sgv"] for e in renumbered.entries] == [60]


def test_handle__a_status_night_the_cloud_cannot_file_costs_only_itself(store):
    """A night of 9999-12-31 became every list's newest, which no page could open; refused
    whole, the report lost its drop counts and dropped ranges too (the acks rely on them)."""
    body = json.dumps({"outbox": 2, "drops": {"room": 1}, "nights": {
        "9999-12-31": {"ahi": 5}, "0001-01-01": {"ahi": 1}, "2026-02-30": {"ahi": 2},
        "yesterday": {}, "2026-01-15": {"ahi_estimate": 20.5}}}).encode()
    out = handle(store, topics.status_topic("fam-1", DEV), body)
    [(reason, part)] = out.dead
    assert '"9999-12-31", "0001-01-01", "2026-02-30", "yesterday"' in reason
    assert "the rest of the report is kept" in reason
    assert store.device_status(DEV)["drops"] == {"room": 1}
    assert [n["night"] for n in store.tenant("fam-1").nights()] == ["2026-01-15"]


def test_handle__a_status_number_too_large_for_a_float_is_refused(store):
    """1e400 reads as inf without a word and was stored as Infinity."""
    from nightlink.cloud.ingest import Rejected

    for body in (b'{"outbox": 1e400}', b'{"alarm_policy_params": {"threshold": -1e999}}'):
        with pytest.raises(Rejected, match="is not a number JSON can hold"):
            handle(store, topics.status_topic("fam-1", DEV), body)
    assert store.device_status(DEV) is None
