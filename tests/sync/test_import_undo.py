"""An import undone on the edge is undone in the cloud, through the real broker: the edge's
status report names the import's boot, the cloud deletes that boot's rows and the glucose
entries served from them (and no other), and rows of that boot arriving later are answered but
not stored. An import undone before it was ever sent leaves no hole the cloud waits on."""

import json
import threading
import time

import paho.mqtt.client as mqtt

from nightlink.edge.importers.importer import import_file
from nightlink.edge.sync.cloud_link import SyncClient
from nightlink.shared import codec, features, topics
from tests.support.waiting import until

from .conftest import TENANT, run_sync, settle

NOW = time.time()


def cgm_file(tmp_path, name: str, start_s: float, n: int, base: int) -> object:
    """A Nightscout entries export: n readings 5 minutes apart from start_s."""
    path = tmp_path / name
    path.write_text(json.dumps([{"type": "sgv", "sgv": base + i % 7, "date":
                                 int((start_s + 300 * i) * 1000)} for i in range(n)]))
    return path


def served(rig) -> dict[int, int]:
    """{date ms: sgv} of the cloud tenant's valid entries."""
    return {e["date"]: e["sgv"] for e in rig.cloud.tenant(TENANT).entries(count=10_000)}


def sync_until(rig, check, what: str) -> None:
    """Run the edge's sync (a new client: it reports its status at once) until `check`."""
    client = SyncClient(rig.edge, rig.sync_config(), TENANT)
    stop = threading.Event()
    worker = threading.Thread(target=client.run, args=(stop,), kwargs={"until_empty": False})
    worker.start()
    try:
        until(check, timeout=30, what=what)
    finally:
        stop.set()
        worker.join(30)
    rig.worker.drain()


def test_an_undone_import_leaves_the_cloud_and_stays_out(rig, tmp_path):
    wrong = import_file(rig.edge, cgm_file(tmp_path, "wrong.json", NOW - 6 * 3600, 24, 100),
                        "nightscout", now=NOW)
    kept = import_file(rig.edge, cgm_file(tmp_path, "kept.json", NOW - 3 * 3600, 12, 150),
                       "nightscout", now=NOW)
    rows = rig.edge.count_records()
    run_sync(SyncClient(rig.edge, rig.sync_config(), TENANT), 30)
    settle(rig, rows)
    data = rig.cloud.tenant(TENANT)
    assert data.count_rows() == rows and len(served(rig)) == 36
    boot = rig.edge.import_row(wrong.import_id).boot
    late = [r for r in rig.edge.records(features.CGM, device=rig.edge.device)
            if r.boot == boot][:3]  # the wrong import's rows, to be delivered again below

    gone = rig.edge.undo_import(wrong.import_id)
    assert gone["entries"] == 24 and gone["queued"] == 0  # all acknowledged before
    sync_until(rig, lambda: data.retracted(rig.edge.device, [boot]),
               "the cloud to hear of the undone import")
    left = data.count_rows()
    assert 0 < left == rig.edge.count_records() == rows - gone["records"]
    readings = served(rig)
    assert len(readings) == 12 and set(readings.values()) <= set(range(150, 157))
    assert kept.import_id != wrong.import_id

    # The wrong import's rows delivered again (a redelivery from the broker): answered and
    # not stored, nor their readings served
    handled = rig.worker.handled
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="late-redelivery")
    pub.connect(rig.broker.host, rig.broker.port)
    pub.loop_start()
    try:
        for rec in late:
            pub.publish(topics.data_topic(TENANT, rig.edge.device, "cgm"), codec.encode(rec),
                        qos=1).wait_for_publish(5)
        until(lambda: rig.worker.handled >= handled + len(late), 10, "the redeliveries handled")
        assert rig.worker.drain()
    finally:
        pub.loop_stop()
        pub.disconnect()
    assert data.count_rows() == left and served(rig) == readings
    assert rig.cloud.dead_letters() == []


def test_an_import_undone_before_it_was_sent_leaves_no_gap(rig, tmp_path):
    wrong = import_file(rig.edge, cgm_file(tmp_path, "wrong.json", NOW - 6 * 3600, 24, 100),
                        "nightscout", now=NOW)
    gone = rig.edge.undo_import(wrong.import_id)
    assert gone["queued"] == gone["records"] > 0 and rig.edge.outbox_size() == 0
    later = import_file(rig.edge, cgm_file(tmp_path, "later.json", NOW - 3 * 3600, 12, 150),
                        "nightscout", now=NOW)
    rows = rig.edge.count_records()
    assert later.epochs_written == rows
    # the cloud's mark steps over the seqs given up: every row is acknowledged
    run_sync(SyncClient(rig.edge, rig.sync_config(), TENANT), 30)
    settle(rig, rows)
    assert rig.cloud.tenant(TENANT).count_rows() == rows and rig.edge.outbox_size() == 0
    assert len(served(rig)) == 12


def test_an_import_pruned_on_the_edge_before_its_undo_leaves_the_cloud_whole(tmp_path):
    """A 4-day import (retention_days 1 here; 120 days against 30 in real use) is sent and
    acknowledged, and the node prunes what is older than its retention; then the import is
    undone. The retraction names the epochs the import wrote, not only those still on the
    edge, so the cloud keeps none of its rows or readings."""
    from nightlink.cloud.ingest import handle
    from nightlink.edge.store import EdgeStore
    from nightlink.shared.epoch import epoch_index
    from tests.support.cloud import two_tenants

    now = (time.time() // 300) * 300
    path = cgm_file(tmp_path, "cgm.json", now - 4 * 86400, 4 * 288, 100)
    store = EdgeStore(tmp_path / "e.db", retention_days=1)
    cloud = two_tenants(f"sqlite:///{tmp_path / 'cloud.db'}", [(store.device, "fam-1", "edge")])
    try:
        done = import_file(store, path, "nightscout", tz="UTC", now=now + 600)
        items = store.outbox(limit=10**6)
        for item in items:
            handle(cloud, topics.data_topic("fam-1", store.device, "cgm"), item.blob)
        store.mark_sent([i.record_id for i in items], time.time())
        store.ack(store.device, features.CGM, 10**9)
        data = cloud.tenant("fam-1")
        assert store.outbox_size() == 0 and data.count_rows() > 3 * 2880
        store.prune(epoch_index(now))
        assert store.count_records() < 2 * 2880  # the older days are gone here
        store.undo_import(done.import_id)
        handle(cloud, topics.status_topic("fam-1", store.device),
               json.dumps({"outbox": 0, "retracted": store.retractions()}).encode())
        assert data.count_rows() == 0 and data.entries(count=10**6) == []
    finally:
        cloud.close()
        store.close()
