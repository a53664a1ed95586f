"""Fuzzing the ingest: any topic and payload through the real IngestWorker.process (SQLite and
PostgreSQL), then a seeded mix through a real Mosquitto. No exception escapes, the consumer
lives, every refused message is one dead letter with a reason, good rows are stored once,
and no mark passes the rows stored."""

import json
import random
import time

import paho.mqtt.client as mqtt
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from nightlink.cloud.config import Settings
from nightlink.cloud.ingest import IngestWorker
from nightlink.cloud.store import Store
from nightlink.shared import codec, features, topics

DEVICES = {"a4cf12b0c3d4": "fam-1", "c10c00000001": "fam-1", "0123456789ab": "fam-2"}
STREAM_NAMES = [s[features.S_NAME] for s in features.STREAMS]


@pytest.fixture
def store(cloud_db_url):
    s = Store.open(cloud_db_url)
    s.create_tenant("fam-1", "One")
    s.create_tenant("fam-2", "Two")
    s.create_tenant("gone", "Deleted")
    for device, tenant in DEVICES.items():
        s.add_device(device, tenant, "edge", f"{tenant}.{device}", "-")
    s.add_device("dead00000001", "gone", "clock", "gone.dead00000001", "-")
    s.set_tenant("gone", deleted_at=time.time())
    yield s
    s.close()


def _row(stream, rng):
    values = []
    for feat in features.features(stream):
        lo, hi = feat[features.F_LO], feat[features.F_HI]
        values.append(None if rng.random() < 0.1 else rng.uniform(lo, hi))
    return codec.quantize_row(stream, values)


def _record(rng, device, stream, seq=None, n=None):
    n = n or rng.randint(1, 5)
    seq = rng.randint(1, 50) if seq is None else seq
    return codec.Record(stream, codec.device_id(device), rng.randint(1, 2), seq,
                        58950540 + rng.randint(0, 3000), [_row(stream, rng) for _ in range(n)])


def _good_payload(rng, device, stream):
    recs = [_record(rng, device, stream) for _ in range(rng.randint(1, 3))]
    if len(recs) == 1 and rng.random() < 0.5:
        return codec.encode(recs[0])
    return codec.encode_batch(recs, compress=rng.random() < 0.3)


def _mutate(payload: bytes, rng) -> bytes:
    data = bytearray(payload)
    kind = rng.randrange(4)
    if kind == 0 and data:
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif kind == 1:
        data = data[: rng.randrange(len(data) + 1)]
    elif kind == 2:
        data += bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    else:
        data[2:6] = b"\xff\xff\xff\xff"
    return bytes(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                               max_size=4),
    max_leaves=12)
seq_ranges = st.lists(st.lists(st.integers(min_value=-5, max_value=2**40) | json_values,
                               min_size=0, max_size=3), max_size=4)
status_docs = st.fixed_dictionaries({}, optional={
    "dropped": st.dictionaries(st.sampled_from(STREAM_NAMES + ["snore", ""]), seq_ranges,
                               max_size=3) | json_values,
    "drops": st.dictionaries(st.text(max_size=10), st.integers(-3, 2**60) | json_values,
                             max_size=5) | json_values,
    "outbox": json_values,
})


@st.composite
def messages(draw):
    """(topic, payload): mostly near-valid (real devices and streams), some anything."""
    device = draw(st.sampled_from([*DEVICES] * 3 + ["dead00000001", "ffffffffffff"]))
    own = DEVICES.get(device, "gone")
    tenant = draw(st.sampled_from([own] * 6 + ["fam-2", "nobody"]))
    stream = draw(st.sampled_from(STREAM_NAMES * 2 + ["snore"]))
    kind = draw(st.sampled_from(["data", "data", "status", "topic"]))
    rng = random.Random(draw(st.integers(0, 2**32)))
    if kind == "status":
        doc = draw(status_docs)
        payload = json.dumps(doc).encode() if draw(st.booleans()) else draw(st.binary(max_size=40))
        return f"nl/v1/{tenant}/{device}/status", payload
    if kind == "topic":
        return draw(st.text(max_size=40)), draw(st.binary(max_size=64))
    sid = features.stream_by_name(stream)
    real = sid[features.S_ID] if sid else features.ROOM
    payload = _good_payload(rng, device if device in DEVICES else "a4cf12b0c3d4", real)
    how = draw(st.sampled_from(["good", "good", "mutated", "random"]))
    if how == "mutated":
        payload = _mutate(payload, rng)
    elif how == "random":
        payload = draw(st.binary(max_size=200))
    return f"nl/v1/{tenant}/{device}/{stream}", payload


def _check_marks(store):
    for device in DEVICES:
        for s in features.STREAMS:
            assert store.hwm(device, s[features.S_ID]) <= store.highest_seq(device,
                                                                             s[features.S_ID])


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(message=messages())
def test_fuzz__process_never_raises_and_accounts_for_every_message(store, message):
    topic, payload = message
    worker = IngestWorker(store, Settings(env="test", jwt_secret="x" + "0123456789abcdef" * 3))
    dead = store.count_dead_letters()
    rows = {t: store.tenant(t).count_rows() for t in ("fam-1", "fam-2")}
    got = worker.process(topic, payload)
    assert got in ("stored", "rejected")
    event(got)
    if got == "rejected":
        letters = store.dead_letters(1)
        assert store.count_dead_letters() == dead + 1 and letters[0]["reason"].strip()
    else:
        assert store.count_dead_letters() == dead
        # Stored once: the same message again adds no row.
        after = {t: store.tenant(t).count_rows() for t in ("fam-1", "fam-2")}
        assert worker.process(topic, payload) == "stored"
        assert {t: store.tenant(t).count_rows() for t in ("fam-1", "fam-2")} == after
        assert after["fam-1"] >= rows["fam-1"] and after["fam-2"] >= rows["fam-2"]
    _check_marks(store)


def test_fuzz__a_seeded_mix_through_mosquitto(tmp_path, mosquitto, record_property):
    store = Store.open(f"sqlite:///{tmp_path / 'cloud.db'}")
    store.create_tenant("fam-1", "One")
    store.add_device("a4cf12b0c3d4", "fam-1", "edge", "fam-1.a4cf12b0c3d4", "-")
    worker = IngestWorker(store, Settings(env="test", jwt_secret="x" + "0123456789abcdef" * 3,
                                          mqtt_host=mosquitto.host, mqtt_port=mosquitto.port,
                                          mqtt_shared_group=""))
    worker.start()
    assert worker.connected.wait(10)
    rng = random.Random(7)
    device = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    device.connect(mosquitto.host, mosquitto.port)
    device.loop_start()
    good_rows, sent, seq = 0, 0, 1
    for i in range(300):
        if i % 3 == 0:  # a good message, its rows new
            rec = _record(rng, "a4cf12b0c3d4", features.ROOM, seq=seq)
            seq += rec.count
            good_rows += rec.count
            topic, payload = topics.data_topic("fam-1", "a4cf12b0c3d4", "room"), codec.encode(rec)
        else:
            segment = rng.choice(["fam-1", "FAM", "x" * 40, "é", "fam-2"])
            name = rng.choice(["a4cf12b0c3d4", "ffffffffffff", "zz"])
            last = rng.choice(STREAM_NAMES + ["status", "snore", "cmd"])
            topic = f"nl/v1/{segment}/{name}/{last}"
            good = _good_payload(rng, "a4cf12b0c3d4", features.ROOM)
            payload = rng.choice([_mutate(good, rng), rng.randbytes(rng.randint(0, 300)),
                                  json.dumps({"dropped": {"room": [[5, 1]]}}).encode(),
                                  b'{"drops": [1]}', b"[" * 5000])
            if topic.endswith("/room") and segment == "fam-1" and name == "a4cf12b0c3d4":
                topic += "x"  # keep this one refused: the stream 'roomx' is unknown
        device.publish(topic, payload, qos=1).wait_for_publish(5)
        sent += 1
    deadline = time.monotonic() + 30
    while worker.handled + worker.rejected < sent and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        assert worker.handled + worker.rejected == sent
        assert worker.drain() and worker.restarts == 0 and worker.problem() is None
        assert store.tenant("fam-1").count_rows() == good_rows
        assert store.count_dead_letters() == worker.rejected == sent - 100
        assert all(d["reason"].strip() for d in store.dead_letters(1000))
        assert store.advance_hwm("a4cf12b0c3d4", features.ROOM) == seq - 1
        record_property("fault_counts", f"{sent} fuzzed messages through Mosquitto: "
                        f"{worker.handled} stored ({good_rows} rows), {worker.rejected} "
                        "dead-lettered, 0 restarts")
    finally:
        device.loop_stop()
        device.disconnect()
        worker.stop()
        store.close()
