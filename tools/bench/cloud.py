"""`nightlink bench ingest`: epoch rows per second from a real broker into each store."""

from __future__ import annotations

import tempfile
import time
import uuid
from pathlib import Path

from nightlink.shared import codec, features

DEV = "a4cf12b0c3d4"


def _publish_and_measure(url: str, broker, rows: int, per_record: int = 120,
                         per_batch: int = 8) -> float:
    import paho.mqtt.client as mqtt

    from nightlink.cloud.config import Settings
    from nightlink.cloud.ingest import IngestWorker
    from nightlink.cloud.store import Store
    from nightlink.shared import topics

    store = Store.open(url)
    store.create_tenant("bench", "Bench")
    store.add_device(DEV, "bench", "edge", f"bench.{DEV}", "-")
    settings = Settings(env="test", jwt_secret="x" + "0123456789abcdef" * 3, mqtt_host=broker.host,
                        mqtt_port=broker.port, mqtt_shared_group="")
    worker = IngestWorker(store, settings, client_id=f"bench-{uuid.uuid4().hex[:6]}")
    worker.start()
    if not worker.connected.wait(10):
        raise RuntimeError("the ingest worker could not connect to the broker")
    time.sleep(0.2)
    row = codec.quantize_row(features.AUDIO, tuple((f[features.F_LO] + f[features.F_HI]) / 2
                                            for f in features.features(features.AUDIO)))
    payloads = []
    seq = 1
    while seq <= rows:
        recs = []
        for _ in range(per_batch):
            if seq > rows:
                break
            n = min(per_record, rows - seq + 1)
            recs.append(codec.Record(features.AUDIO, codec.device_id(DEV), 1, seq, 58950540 + seq,
                                     [row] * n))
            seq += n
        payloads.append(codec.encode_batch(recs, compress=True))
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    pub.max_inflight_messages_set(100)
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    topic = topics.data_topic("bench", DEV, "audio")
    t0 = time.perf_counter()
    for p in payloads:
        pub.publish(topic, p, qos=1)
    data = store.tenant("bench")
    deadline = time.monotonic() + 300
    while data.count_rows() < rows and time.monotonic() < deadline:
        time.sleep(0.02)
    elapsed = time.perf_counter() - t0
    stored = data.count_rows()
    pub.loop_stop()
    pub.disconnect()
    worker.stop()
    store.close()
    if stored != rows:
        raise RuntimeError(f"only {stored} of {rows} rows were stored")
    return rows / elapsed


def bench_ingest(rows: int = 200_000) -> dict:
    """Rows per second stored by one ingest worker into SQLite and into PostgreSQL."""
    from nightlink.tools.services import Broker, PostgresServer

    out = {"rows": rows, "sqlite_records_per_s": None, "postgres_records_per_s": None}
    with tempfile.TemporaryDirectory(prefix="nl-bench-ingest-") as tmp:
        broker = Broker(Path(tmp)).start()
        try:
            out["sqlite_records_per_s"] = round(_publish_and_measure(
                f"sqlite:///{Path(tmp) / 'cloud.db'}", broker, rows))
            if PostgresServer.available():
                pg = PostgresServer().start()
                try:
                    url = pg.create_database("bench")
                    out["postgres_records_per_s"] = round(_publish_and_measure(url, broker, rows))
                finally:
                    pg.stop()
            else:
                out["postgres_note"] = "PostgreSQL server binaries not installed"
        finally:
            broker.stop()
    return out


def bench_sync(nights: int = 7) -> dict:
    """A `nights`-night backlog from one edge node through Mosquitto into the cloud store."""
    import threading

    from nightlink.cloud.config import Settings
    from nightlink.cloud.ingest import IngestWorker
    from nightlink.cloud.store import Store
    from nightlink.edge.node.config import SyncConfig
    from nightlink.edge.store import EdgeStore
    from nightlink.edge.sync.cloud_link import SyncClient
    from nightlink.tools.bench.backlog import fill_backlog
    from nightlink.tools.services import Broker

    with tempfile.TemporaryDirectory(prefix="nl-bench-sync-") as tmp:
        broker = Broker(Path(tmp)).start()
        edge = EdgeStore(Path(tmp) / "edge.db")
        cloud = Store.open(f"sqlite:///{Path(tmp) / 'cloud.db'}")
        try:
            rows = fill_backlog(edge, nights)
            cloud.create_tenant("home", "Home")
            cloud.add_device(edge.device, "home", "edge", f"home.{edge.device}", "-")
            worker = IngestWorker(cloud, Settings(env="test", jwt_secret="x" + "0123456789abcdef" * 3,
                                                  mqtt_host=broker.host, mqtt_port=broker.port,
                                                  mqtt_shared_group=""), client_id="bench")
            worker.start()
            worker.connected.wait(10)
            cfg = SyncConfig(enabled=True, host=broker.host, port=broker.port,
                             backfill_rows_per_s=1e9, backfill_batch_rows=20000)
            client = SyncClient(edge, cfg, "home")
            stop = threading.Event()
            timer = threading.Timer(300, stop.set)
            timer.start()
            t0 = time.perf_counter()
            client.run(stop, until_empty=True)
            data = cloud.tenant("home")
            while data.count_rows() < rows and not stop.is_set():
                time.sleep(0.01)
            seconds = time.perf_counter() - t0
            timer.cancel()
            worker.stop()
            stored = data.count_rows()
            distinct = data.distinct_seqs()
        finally:
            edge.close()
            cloud.close()
            broker.stop()
    return {
        "nights": nights,
        "records": rows,
        "messages": client.stats.messages,
        "seconds": round(seconds, 2),
        "records_per_s": round(rows / seconds),
        "lost": rows - stored,
        "duplicates": stored - int(distinct),
        "bytes_on_wire": client.stats.bytes_sent,
    }
