"""Store-and-forward from the edge outbox to the cloud through a real Mosquitto.

Every test ends the same way: the cloud holds exactly the rows the edge produced (count
and content hash), none twice, and the edge's outbox is empty (or its drops are counted).
"""

import os
import signal
import threading
import time

from nightlink.edge.sync.cloud_link import SyncClient
from nightlink.shared import codec, features
from tests.sync.conftest import (
    TENANT,
    cloud_digest,
    edge_digest,
    fill_backlog,
    run_sync,
    settle,
)


def test_sync__backlog_lands_exactly_once(rig, record_property):
    fill_backlog(rig.edge, nights=2)
    produced = edge_digest(rig.edge)
    client = SyncClient(rig.edge, rig.sync_config(), TENANT)
    run_sync(client, 60)
    settle(rig, produced[0])
    assert cloud_digest(rig.cloud, rig.edge.device) == produced
    assert rig.edge.outbox_size() == 0
    # Backfill went packed and compressed: far fewer messages than rows.
    assert client.stats.messages < produced[0] / 50
    record_property("fault_counts", f"backlog: {produced[0]} rows in "
                    f"{client.stats.messages} messages, {client.stats.bytes_sent} bytes")


def test_sync__live_glucose_goes_before_backfill(rig):
    fill_backlog(rig.edge, nights=1)
    now_epoch = int(time.time()) // 30
    cgm = codec.quantize_row(features.CGM, (64.0, 1.0, -6.0, -1.2, 6.0, None))
    live = rig.edge.append(features.CGM, now_epoch, [cgm])
    client = SyncClient(rig.edge, rig.sync_config(backfill_rows_per_s=500,
                                                  backfill_batch_rows=500), TENANT)
    stop = threading.Event()
    t = threading.Thread(target=client.run, args=(stop,))
    t.start()
    deadline = time.monotonic() + 10
    data = rig.cloud.tenant(TENANT)
    while time.monotonic() < deadline and not data.rows(features.CGM, now_epoch, now_epoch + 1):
        time.sleep(0.02)
    stored_then = data.count_rows()
    stop.set()
    t.join(10)
    assert data.rows(features.CGM, now_epoch, now_epoch + 1)[0].seq == live.seq
    assert stored_then < 4 * 960  # the backlog was still draining when glucose arrived
    assert data.entries(count=1)[0]["sgv"] == 64  # and it is on the Nightscout API


def test_sync__broker_killed_20_times(rig, tmp_path, record_property):
    fill_backlog(rig.edge, nights=7)
    produced = edge_digest(rig.edge)
    client = SyncClient(rig.edge, rig.sync_config(backfill_rows_per_s=8000,
                                                  backfill_batch_rows=2000), TENANT)
    stop = threading.Event()
    t = threading.Thread(target=client.run, args=(stop,), kwargs={"until_empty": True})
    t.start()
    kills = 0
    for _ in range(20):
        time.sleep(0.25)
        rig.broker.proc.send_signal(signal.SIGKILL)
        rig.broker.proc.wait()
        kills += 1
        time.sleep(0.1)
        rig.broker.start()
    t.join(120)
    stop.set()
    assert not t.is_alive(), "the outbox did not drain after the broker came back"
    settle(rig, produced[0], timeout=60)
    got = cloud_digest(rig.cloud, rig.edge.device)
    record_property("fault_counts", f"broker kill -9 survived: {kills}; rows produced "
                    f"{produced[0]}, stored {got[0]}; reconnects {client.stats.connects}; "
                    f"duplicates {got[0] - produced[0]}")
    assert got == produced
    assert rig.edge.outbox_size() == 0
    assert client.stats.connects >= 2


def test_sync__half_open_link_is_detected(rig, record_property):
    fill_backlog(rig.edge, nights=1)
    produced = edge_digest(rig.edge)
    client = SyncClient(rig.edge, rig.sync_config(keepalive_s=2, backfill_rows_per_s=1000,
                                                  backfill_batch_rows=500), TENANT)
    stop = threading.Event()
    t = threading.Thread(target=client.run, args=(stop,), kwargs={"until_empty": True})
    t.start()
    time.sleep(0.5)
    os.kill(rig.broker.proc.pid, signal.SIGSTOP)  # packets vanish, no FIN: half-open
    stopped_at = time.monotonic()
    while client.connected and time.monotonic() - stopped_at < 20:
        time.sleep(0.1)
    detected = time.monotonic() - stopped_at
    os.kill(rig.broker.proc.pid, signal.SIGCONT)
    t.join(60)
    stop.set()
    assert detected < 2 * 1.5 * 2 + 1, f"dead link noticed after {detected:.1f} s"
    record_property("fault_counts", f"broker SIGSTOP: dead link noticed after {detected:.1f} s "
                    "(keepalive 2 s)")
    settle(rig, produced[0])
    assert cloud_digest(rig.cloud, rig.edge.device) == produced


def test_sync__full_outbox_drops_low_priority_and_reports_it(rig, record_property):
    fill_backlog(rig.edge, nights=1)
    client = SyncClient(rig.edge, rig.sync_config(max_outbox_rows=2000), TENANT)
    run_sync(client, 60)
    drops = rig.edge.drops()
    assert drops and features.CGM not in drops
    assert sum(drops.values()) == 4 * 960 - 2000
    produced = edge_digest(rig.edge)[0]
    settle(rig, 2000)
    assert rig.cloud.tenant(TENANT).count_rows() == 2000 <= produced
    deadline = time.monotonic() + 10
    status = None
    while time.monotonic() < deadline:
        status = rig.cloud.device_status(rig.edge.device)
        if status and status.get("drops"):
            break
        time.sleep(0.05)
    assert status["drops"] == {features.stream(s)[features.S_NAME]: n for s, n in drops.items()}
    # Every glucose row reached the cloud, every drop is accounted for, the outbox drained.
    assert rig.cloud.tenant(TENANT).count_rows(features.CGM) == 960
    assert rig.cloud.dropped_count(rig.edge.device) == sum(drops.values())
    assert rig.cloud.tenant(TENANT).count_rows() + sum(drops.values()) == produced
    assert rig.edge.outbox_size() == 0
    record_property("fault_counts", f"outbox quota 2000 rows: dropped {sum(drops.values())} "
                    f"(none of them glucose), all accounted for by the cloud; rows produced "
                    f"{produced}, stored {rig.cloud.tenant(TENANT).count_rows()}")


def test_sync__gaps_the_cloud_reports_are_sent_again(rig):
    fill_backlog(rig.edge, nights=1)
    produced = edge_digest(rig.edge)
    # A lossy link at the lowest layer: the second room message never reaches the broker.
    # With the resend timer out of reach, only the gaps in the cloud's acks bring it back.
    client = SyncClient(rig.edge, rig.sync_config(resend_after_s=3600, backfill_batch_rows=100,
                                                  rows_per_record=20), TENANT)
    real_publish = client.client.publish
    seen = {"room": 0}

    def lossy(topic, payload=None, qos=0, retain=False):
        if topic.endswith("/room"):
            seen["room"] += 1
            if seen["room"] == 2:
                class Lost:
                    rc = 0
                return Lost()
        return real_publish(topic, payload, qos=qos, retain=retain)

    client.client.publish = lossy
    run_sync(client, 60)
    settle(rig, produced[0])
    assert cloud_digest(rig.cloud, rig.edge.device) == produced
    assert client.stats.resend_requests > 0


def test_sync__edge_process_killed_mid_batch(rig, tmp_path, record_property):
    """kill -9 the `nightlink edge sync` process while it sends; a new one finishes the job."""
    import subprocess
    import sys

    fill_backlog(rig.edge, nights=3)
    produced = edge_digest(rig.edge)
    db = rig.edge.path
    conf = tmp_path / "edge.toml"
    conf.write_text(f'tenant = "{TENANT}"\n[nightscout]\nenabled = false\n[sync]\nenabled = true\n'
                    f'host = "{rig.broker.host}"\nport = {rig.broker.port}\n'
                    "backfill_rows_per_s = 3000.0\nbackfill_batch_rows = 300\n")
    cmd = [sys.executable, "-m", "nightlink", "edge", "sync", "--config", str(conf), "--db",
           str(db), "--until-empty"]
    kills = 0
    data = rig.cloud.tenant(TENANT)
    for _ in range(3):
        with open(tmp_path / "sync.log", "ab") as log:  # never a pipe nobody reads
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + 20
        start_rows = data.count_rows()
        while data.count_rows() <= start_rows and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.kill()  # SIGKILL, mid-batch
        proc.wait()
        kills += 1
    assert data.count_rows() < produced[0], "killed before it could finish"
    with open(tmp_path / "final.log", "w") as log:
        final = subprocess.Popen(cmd[:3] + ["-v"] + cmd[3:], stdout=subprocess.DEVNULL, stderr=log)
        try:
            final.wait(120)
        except subprocess.TimeoutExpired:
            final.kill()
            final.wait()
    w = rig.worker
    assert final.returncode == 0, ((tmp_path / "final.log").read_text()[-3000:] +
                                   f"\ncloud rows {data.count_rows()} of {produced[0]}; outbox "
                                   f"{rig.edge.outbox_size()}; worker handled {w.handled} "
                                   f"rejected {w.rejected} held {w.held} retries {w.db_retries} "
                                   f"trouble {w.consumer_trouble()} connected "
                                   f"{w.connected.is_set()}")
    settle(rig, produced[0])
    assert cloud_digest(rig.cloud, rig.edge.device) == produced
    record_property("fault_counts", f"edge kill -9 survived: {kills}; rows {produced[0]}, "
                    f"stored {cloud_digest(rig.cloud, rig.edge.device)[0]}")


def test_messages_stay_under_the_wires_row_and_record_limits():
    """However the sync is configured, a message holds at most 64 records and
    codec.MAX_MESSAGE_ROWS epoch rows (the cloud refuses more), records whole and in order."""
    from nightlink.edge.sync.cloud_link import MAX_RECORDS_PER_BATCH, _messages

    row = codec.quantize_row(features.ROOM, (21.0, 40.0, 0.0, 600.0, 30.0))
    dev = codec.device_id("a4cf12b0c3d4")
    for n_rows, n_recs in ((2880, 10), (120, 200), (1, 300), (2000, 9)):
        recs = [codec.Record(features.ROOM, dev, 1, 1 + k * n_rows, 100 + k * n_rows,
                             [row] * n_rows) for k in range(n_recs)]
        parts = _messages(recs)
        assert [r for p in parts for r in p] == recs
        assert all(0 < len(p) <= MAX_RECORDS_PER_BATCH for p in parts)
        assert all(sum(len(r.rows) for r in p) <= codec.MAX_MESSAGE_ROWS for p in parts)
        assert len(parts) >= -(-n_rows * n_recs // codec.MAX_MESSAGE_ROWS)
    assert len(_messages(recs)) == 3  # 2,000-row records: 4 + 4 + 1


def test_sync__a_cloud_restored_from_a_backup_gets_back_what_it_lost(rig, tmp_path):
    """The cloud's database is restored from a backup taken before a night was synced: the
    edge had been acknowledged for that night and had let its rows go from the outbox, so
    when the restored cloud asked for them again nothing was sent, its mark stayed below
    every new row and the outbox grew for ever. The edge now queues the acknowledged rows
    the cloud asks for again, and the two end identical."""
    import sqlite3

    from nightlink.cloud.config import Settings
    from nightlink.cloud.ingest import IngestWorker
    from nightlink.cloud.store import Store
    from nightlink.nightscout import documents
    from nightlink.tools.bench.backlog import FIRST_EPOCH
    from tests.support.waiting import until

    def sync_all():
        client = SyncClient(rig.edge, rig.sync_config(resend_after_s=1.0), TENANT)
        stop = threading.Event()
        worker = threading.Thread(target=client.run, args=(stop,))
        worker.start()
        try:  # the rows and the treatments acknowledged
            until(lambda: rig.edge.outbox_size() == 0 and rig.edge.doc_outbox_size() == 0,
                  60, "the outboxes empty")
        finally:
            stop.set()
            worker.join(30)
        produced = edge_digest(rig.edge)
        settle(rig, produced[0])
        return client, produced

    def cloud_carbs():
        return [r.doc.get("carbs") for r in rig.cloud.tenant(TENANT).docs.history(
            "treatments", 0) if r.valid]

    fill_backlog(rig.edge, nights=1)
    _client, before = sync_all()
    assert cloud_digest(rig.cloud, rig.edge.device) == before and rig.edge.outbox_size() == 0
    backup = tmp_path / "backup.db"
    with sqlite3.connect(tmp_path / "cloud.db") as src, sqlite3.connect(backup) as dst:
        src.backup(dst)
    fill_backlog(rig.edge, nights=1, seed=2, first_epoch=FIRST_EPOCH + 2 * 2880)
    rig.edge.docs.put([documents.normalize("treatments", {
        "eventType": "Carb Correction", "carbs": 15,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
        int(time.time() * 1000))], mode="replace")
    _client, after = sync_all()
    assert cloud_digest(rig.cloud, rig.edge.device) == after and rig.edge.outbox_size() == 0
    assert cloud_carbs() == [15]

    # The operator restores the backup: the second night is gone from the cloud.
    rig.worker.stop()
    rig.cloud.close()
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"cloud.db{suffix}").unlink(missing_ok=True)
    backup.rename(tmp_path / "cloud.db")
    rig.cloud = Store.open(f"sqlite:///{tmp_path / 'cloud.db'}")
    assert cloud_digest(rig.cloud, rig.edge.device) == before
    rig.worker = IngestWorker(rig.cloud, Settings(env="test", jwt_secret="x" + "0123456789abcdef" * 3,
                                                  mqtt_host=rig.broker.host,
                                                  mqtt_port=rig.broker.port),
                              client_id="ingest-restored")
    rig.worker.start()
    assert rig.worker.connected.wait(10)
    # The edge records on (a third night) and syncs: the cloud's acks name the lost night
    # as a gap, and it comes back.
    fill_backlog(rig.edge, nights=1, seed=3, first_epoch=FIRST_EPOCH + 4 * 2880)
    assert cloud_carbs() == []  # lost with the night
    client, produced = sync_all()
    assert cloud_digest(rig.cloud, rig.edge.device) == produced
    assert rig.edge.outbox_size() == 0
    assert client.stats.resend_requests > 0
    until(lambda: cloud_carbs() == [15], 10, "the treatment entered after the backup back")


def test_sync__an_edge_store_put_back_from_an_older_copy_loses_nothing_new(rig, tmp_path):
    """edge.db is put back from a copy taken before a night was recorded and synced: the
    store numbers its new records from where the copy was, seqs the cloud already holds for
    that night, and the cloud took them as resends and dropped them (acknowledged). The
    cloud's acknowledgement now shows the store is behind: the new records are numbered
    after what the cloud holds and land."""
    import sqlite3

    import paho.mqtt.client as mqtt

    from nightlink.edge.store import EdgeStore
    from nightlink.shared import topics
    from nightlink.tools.bench.backlog import FIRST_EPOCH
    from tests.support.waiting import until

    def sync_all():
        # Small messages: many answers, some after a mark the first renumbered rows moved on.
        client = SyncClient(rig.edge, rig.sync_config(resend_after_s=1.0, rows_per_record=20,
                                                      backfill_batch_rows=100), TENANT)
        run_sync(client, 60)

    def cloud_rows(first, last):
        return rig.cloud.db.scalar("SELECT count(*) FROM epoch_rows WHERE device = ? AND "
                                   "epoch >= ? AND epoch < ?", (rig.edge.device, first, last))

    nights = [FIRST_EPOCH + k * 2880 for k in range(3)]
    fill_backlog(rig.edge, nights=1, first_epoch=nights[0])
    sync_all()
    copy = tmp_path / "edge-copy.db"
    with sqlite3.connect(tmp_path / "edge.db") as src, sqlite3.connect(copy) as dst:
        src.backup(dst)
    fill_backlog(rig.edge, nights=1, seed=2, first_epoch=nights[1])
    sync_all()
    settle(rig, 2 * 960 * 4)
    # While the edge is away, a resend of its last records reaches the cloud (one in
    # flight when it stopped): the answers wait in the edge's session at the broker, and
    # come as ordinary (not retained) messages when it is back; their marks are stale.
    last = {rec.stream: rec for rec in rig.edge.records(device=rig.edge.device)}
    handled = rig.worker.handled
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="in-flight-resend")
    pub.connect(rig.broker.host, rig.broker.port)
    pub.loop_start()
    for sid, rec in last.items():
        pub.publish(topics.data_topic(TENANT, rig.edge.device, features.stream(sid)[
            features.S_NAME]), codec.encode(rec), qos=1).wait_for_publish(5)
    until(lambda: rig.worker.handled >= handled + len(last), 10, "the resends handled")
    assert rig.worker.drain()
    pub.loop_stop()
    pub.disconnect()
    rig.edge.close()
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"edge.db{suffix}").unlink(missing_ok=True)
    copy.rename(tmp_path / "edge.db")
    rig.edge = EdgeStore(tmp_path / "edge.db")
    fill_backlog(rig.edge, nights=1, seed=3, first_epoch=nights[2])  # recorded after
    sync_all()
    settle(rig, 3 * 960 * 4)
    assert [cloud_rows(n, n + 2880) for n in nights] == [960 * 4] * 3
    assert rig.edge.outbox_size() == 0
