"""One deduplication rule for every writer: a reading a phone uploads to the cloud and the
same reading the edge derives and syncs over MQTT (whole seconds, another device string) are
stored once, whichever arrives first, on SQLite and PostgreSQL; the edge's importers and
follower obey the same rule as its endpoint."""

import pytest

from nightlink.cloud.ingest import glucose_entries, handle
from nightlink.cloud.store import Store
from nightlink.edge.store import EdgeStore
from nightlink.nightscout.documents import normalize
from nightlink.shared import codec, features, topics
from tests.nightscout_uploads import xdrip_entry

DEV = "a4cf12b0c3d4"
EPOCH = 59_000_000  # 2026-02-08


def _cgm_record(value: float = 112.0) -> codec.Record:
    """Three epochs carrying one reading taken 0.5 min before the first epoch's end."""
    rows = [codec.quantize_row(features.CGM, (value, 0.5 + 0.5 * i, -2.0, -0.4, 5.0, None))
            for i in range(3)]
    return codec.Record(features.CGM, codec.device_id(DEV), 1, 1, EPOCH, rows)


def _phone_reading(rec: codec.Record, value: int = 112) -> dict:
    """What xDrip+ uploaded for the same reading: exact ms, its own device string."""
    derived = glucose_entries(rec, DEV)[0]["date"]
    return xdrip_entry(derived - 23_456, value, device="xDrip-DexcomG7")


@pytest.fixture
def store(cloud_db_url):
    s = Store.open(cloud_db_url)
    s.create_tenant("fam-1", "One")
    s.add_device(DEV, "fam-1", "edge", f"fam-1.{DEV}", "-")
    yield s
    s.close()


def test_upload_then_ingest__one_entry_and_the_upload_kept(store):
    rec = _cgm_record()
    data = store.tenant("fam-1")
    stored, _ = data.add_documents("entries", [_phone_reading(rec)], mode="merge")
    assert len(stored) == 1
    out = handle(store, topics.data_topic("fam-1", DEV, "cgm"), codec.encode(rec))
    assert out.entries == []
    [entry] = data.entries(count=10)
    assert entry["device"] == "xDrip-DexcomG7" and entry["filtered"] == 112250


def test_ingest_then_upload__one_entry_and_the_upload_answered_with_it(store):
    rec = _cgm_record()
    handle(store, topics.data_topic("fam-1", DEV, "cgm"), codec.encode(rec))
    data = store.tenant("fam-1")
    [derived] = data.entries(count=10)
    assert derived["device"] == f"nightlink-{DEV}"
    outcomes = data.docs.put([normalize("entries", _phone_reading(rec), 1_900_000_000_000)])
    assert outcomes[0].action == "near_duplicate" and outcomes[0].row.oid == derived["_id"]
    assert data.docs.count("entries") == 1


def test_another_value_a_minute_later_is_another_reading(store):
    rec = _cgm_record()
    handle(store, topics.data_topic("fam-1", DEV, "cgm"), codec.encode(rec))
    data = store.tenant("fam-1")
    later = _phone_reading(rec)
    later["date"] += 5 * 60_000
    data.add_documents("entries", [later, _phone_reading(rec, value=140)])
    assert sorted(e["sgv"] for e in data.entries(count=10)) == [112, 112, 140]


def test_edge__importer_follower_and_endpoint_share_the_rule(tmp_path):
    from nightlink.edge.sources.cgm import glucose_to_entry
    from nightlink.edge.sources.samples import Glucose

    store = EdgeStore(tmp_path / "edge.db")
    t = 1_770_000_000.0
    assert store.add_entries([glucose_to_entry(Glucose(t=t, sgv=120), "dexcom-clarity")]) == (1,
                                                                                              0)
    # the follower sees the same reading from the cloud, 12 s off and under another device
    assert store.add_entries([glucose_to_entry(Glucose(t=t + 12, sgv=120), "follower")]) == (0,
                                                                                             1)
    assert len(store.entries(count=10)) == 1
    store.close()
