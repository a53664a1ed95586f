"""Messages that used to stop the ingest, on a real store (SQLite and PostgreSQL): each is
dead-lettered with its reason and the next message is stored. Also what a tenant's deletion
does to its devices, how far drop reports may move a mark, and what a dead letter and a
status report may cost (table bytes, metric series)."""

import hashlib
import json
import time

import pytest

from nightlink.cloud import metrics
from nightlink.cloud.broker_config import mosquitto_files
from nightlink.cloud.config import Settings
from nightlink.cloud.ingest import IngestWorker
from nightlink.shared import codec, features, topics
from tests.support.cloud import two_tenants

EDGE = "a4cf12b0c3d4"  # fam-1's edge node, also its tenant's gateway
CLOCK = "c10c00000001"  # fam-1's clock
OTHER = "0123456789ab"  # fam-2's clock
ROW = codec.quantize_row(features.ROOM, (21.0, 40.0, 0.0, 600.0, 30.0))


@pytest.fixture
def store(cloud_db_url):
    s = two_tenants(cloud_db_url, [(EDGE, "fam-1", "edge"), (CLOCK, "fam-1", "clock"),
                                   (OTHER, "fam-2", "clock")],
                    password_hash="$7$101$c2FsdA==$aGFzaA==")
    yield s
    s.close()


@pytest.fixture
def worker(store):
    """A worker that is not connected: process() is the whole of handling one message."""
    return IngestWorker(store, Settings(env="test", jwt_secret="x" + "0123456789abcdef" * 3))


def _rec(seq, n=1, dev=CLOCK, stream=features.ROOM, row=ROW):
    return codec.Record(stream, codec.device_id(dev), 1, seq, 58950540 + seq, [row] * n)


def _status(doc) -> bytes:
    return json.dumps(doc).encode() if not isinstance(doc, bytes) else doc


def _bad_batch() -> bytes:
    good = codec.encode_batch([_rec(1)])
    return good[:-1] + bytes([good[-1] ^ 1])  # the record's CRC no longer matches


def _reasons(store) -> list[str]:
    return [d["reason"] for d in store.dead_letters()]


@pytest.mark.parametrize(("name", "topic", "payload", "reason"), [
    ("all-bad batch on an unknown stream", topics.data_topic("fam-1", CLOCK, "snore"),
     _bad_batch(), "The stream 'snore' is not one this cloud knows"),
    ("dropped is a list", topics.status_topic("fam-1", CLOCK), _status({"dropped": [[1, 2]]}),
     "dropped is not an object"),
    ("drops is a list", topics.status_topic("fam-1", CLOCK), _status({"drops": ["room"]}),
     "drops is not an object"),
    ("dropped range 1e400", topics.status_topic("fam-1", CLOCK),
     b'{"dropped": {"room": [[1, 1e400]]}}', "1e400 is not a number JSON can hold"),
    ("dropped range 10**30", topics.status_topic("fam-1", CLOCK),
     _status({"dropped": {"room": [[1, 10**30]]}}), "lies outside the sequence numbers"),
    ("inverted dropped range", topics.status_topic("fam-1", CLOCK),
     _status({"dropped": {"room": [[9, 3]]}}), "range [9, 3] is inverted"),
    ("negative drop count", topics.status_topic("fam-1", CLOCK),
     _status({"drops": {"room": -1}}), "not a count of rows"),
    ("deeply nested status", topics.status_topic("fam-1", CLOCK), b"[" * 60_000,
     "not a JSON object"),
])
def test_process__poison_message_is_dead_lettered_and_the_next_is_stored(
        store, worker, name, topic, payload, reason):
    assert worker.process(topic, payload) == "rejected", name
    assert any(reason in r for r in _reasons(store)), _reasons(store)
    good = topics.data_topic("fam-1", CLOCK, "room")
    assert worker.process(good, codec.encode(_rec(1))) == "stored"
    assert store.tenant("fam-1").count_rows() == 1
    assert (worker.handled, worker.rejected) == (1, 1)


def test_process__device_of_a_soft_deleted_tenant_is_refused_with_the_reason(store, worker):
    # Deleted without the route (so its devices were not revoked): still refused, never raised.
    store.set_tenant("fam-1", deleted_at=time.time())
    assert worker.process(topics.data_topic("fam-1", CLOCK, "room"),
                          codec.encode(_rec(1))) == "rejected"
    assert worker.process(topics.status_topic("fam-1", CLOCK), b"{}") == "rejected"
    assert _reasons(store) == ["The tenant fam-1 was deleted; messages of its device "
                               f"{CLOCK} are not stored."] * 2
    assert worker.process(topics.data_topic("fam-2", OTHER, "room"),
                          codec.encode(_rec(1, dev=OTHER))) == "stored"


def test_process__an_unexpected_error_dead_letters_with_its_type(store, worker, monkeypatch):
    def broken(*_args, **_options):
        raise KeyError("a bug in a handler")

    monkeypatch.setattr(store, "put_device_status", broken)
    assert worker.process(topics.status_topic("fam-1", CLOCK), b"{}") == "rejected"
    assert _reasons(store) == ["KeyError: 'a bug in a handler'"]


# -- tenant deletion ---------------------------------------------------------------------------


def test_delete_tenant__revokes_its_devices_restore_brings_them_back(people, tmp_path):
    store = people.store
    store.add_device(CLOCK, "fam-1", "clock", f"fam-1.{CLOCK}", "$7$101$c2FsdA==$aGFzaA==")
    store.add_device(OTHER, "fam-2", "clock", f"fam-2.{OTHER}", "$7$101$c2FsdA==$aGFzaA==")
    store.add_device("c10c00000002", "fam-1", "clock", "fam-1.c10c00000002", "-")
    store.tenant("fam-1").revoke_device("c10c00000002")  # revoked on its own before

    r = people.client.delete("/api/nl/v1/tenants/fam-1", headers=people.auth("pat@example.org"))
    assert r.status_code == 204, r.text
    assert [d["id"] for d in store.active_devices()] == [OTHER]
    assert mosquitto_files(store, tmp_path / "acl", tmp_path / "passwd") == 1
    assert CLOCK not in (tmp_path / "passwd").read_text()
    worker = IngestWorker(store, Settings(env="test", jwt_secret="x" + "0123456789abcdef" * 3))
    assert worker.process(topics.data_topic("fam-1", CLOCK, "room"),
                          codec.encode(_rec(1))) == "rejected"
    assert worker.process(topics.data_topic("fam-2", OTHER, "room"),
                          codec.encode(_rec(1, dev=OTHER))) == "stored"

    r = people.client.post("/api/nl/v1/tenants/fam-1/restore",
                           headers=people.auth("admin@example.org"))
    assert r.status_code == 200, r.text
    assert [d["id"] for d in store.active_devices()] == [OTHER, CLOCK]
    assert worker.process(topics.data_topic("fam-1", CLOCK, "room"),
                          codec.encode(_rec(1))) == "stored"


# -- drop reports bounded by what was stored -------------------------------------------------


def test_drop_report__a_gateway_cannot_move_a_mark_past_the_stored_rows(store, worker):
    room = features.ROOM
    assert worker.process(topics.data_topic("fam-1", CLOCK, "room"),
                          codec.encode(_rec(1))) == "stored"
    # The edge may publish below any device of its tenant (it bridges the clocks).
    assert worker.process(topics.status_topic("fam-1", CLOCK),
                          _status({"dropped": {"room": [[2, 500]]}})) == "stored"
    assert store.hwm(CLOCK, room) == 1
    assert worker.process(topics.status_topic("fam-1", CLOCK),
                          _status({"dropped": {"room": [[1, 10**9]]}})) == "stored"
    assert store.hwm(CLOCK, room) == 1
    # A report on the edge's own topic moves only the edge's marks.
    assert worker.process(topics.status_topic("fam-1", EDGE),
                          _status({"dropped": {"room": [[1, 500]]}})) == "stored"
    assert (store.hwm(EDGE, room), store.hwm(CLOCK, room)) == (0, 1)
    # Rows that do arrive move the mark as far as they reach, and no further.
    assert worker.process(topics.data_topic("fam-1", CLOCK, "room"),
                          codec.encode(_rec(600, n=3))) == "stored"
    assert store.hwm(CLOCK, room) == 602


def test_drop_report__sent_before_the_rows_above_it_still_counts(store, worker):
    # A clock reports its drops first on a new session, then sends what it kept.
    assert worker.process(topics.status_topic("fam-1", CLOCK),
                          _status({"drops": {"room": 100},
                                   "dropped": {"room": [[1, 100]]}})) == "stored"
    assert store.hwm(CLOCK, features.ROOM) == 0
    assert worker.process(topics.data_topic("fam-1", CLOCK, "room"),
                          codec.encode(_rec(101, n=10))) == "stored"
    assert store.hwm(CLOCK, features.ROOM) == 110


# -- what a message may cost -----------------------------------------------------------------


def test_dead_letter__keeps_a_bounded_head_with_length_and_hash(store, worker, record_property):
    topic = topics.data_topic("fam-1", CLOCK, "room")
    payloads = [bytes([i]) * (10 * 1024 * 1024) for i in range(4)]
    for payload in payloads:
        assert worker.process(topic, payload) == "rejected"
    dead = store.dead_letters()
    stored = store.dead_letter_bytes()
    assert stored <= 4 * 4096
    assert sorted((d["payload_size"], d["payload_sha256"]) for d in dead) == sorted(
        (len(p), hashlib.sha256(p).hexdigest()) for p in payloads)
    assert all(d["payload"] == p[:4096] for d, p in zip(reversed(dead), payloads, strict=True))
    record_property("fault_counts", f"4 x 10 MB refused messages keep {stored} payload bytes "
                    "in the dead-letter table")


def test_dead_letter__per_sender_cap_keeps_the_newest(store):
    for i in range(12):
        store.dead_letter("t", f"clock {i}", b"x", tenant_id="fam-1", device=CLOCK, keep=5)
    store.dead_letter("t", "other", b"x", tenant_id="fam-2", device=OTHER, keep=5)
    store.dead_letter("t", "no topic", b"x", keep=5)
    reasons = _reasons(store)
    assert reasons == ["no topic", "other"] + [f"clock {i}" for i in range(11, 6, -1)]
    store.dead_letter("t", "last", b"x", keep=5, keep_all=3)
    assert len(_reasons(store)) == 3


def _drop_series(device: str) -> int:
    return sum(1 for m in metrics.DEVICE_DROPS.collect() for s in m.samples
               if s.labels.get("device") == device)


def test_status__unknown_stream_names_share_one_series(store, worker, record_property):
    before = _drop_series(CLOCK)
    drops = {f"s{i}": 1 for i in range(3000)} | {"audio": 7}
    assert worker.process(topics.status_topic("fam-1", CLOCK), _status({"drops": drops})) \
        == "stored"
    added = _drop_series(CLOCK) - before
    assert added <= 2
    value = metrics.DEVICE_DROPS.labels(CLOCK, "other")._value.get()
    assert value == 3000 and metrics.DEVICE_DROPS.labels(CLOCK, "audio")._value.get() == 7
    big = {f"stream-{i}": 1 for i in range(20_000)}
    assert worker.process(topics.status_topic("fam-1", CLOCK), _status({"drops": big})) \
        == "rejected"
    assert _drop_series(CLOCK) - before == added
    record_property("fault_counts", f"3000 distinct drops names added {added} series "
                    "(20k names: refused for size, 0 series)")
