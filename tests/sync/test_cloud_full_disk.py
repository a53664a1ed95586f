"""The cloud on a full disk (its SQLite database on a small tmpfs), served by the real
`nightlink cloud serve` process while an edge drains a backlog into it.

While the disk is full the process stays up, `/readyz` says why, uploads get 503 with
Retry-After (never a 500), and nothing the edge sent is acknowledged without being stored;
once there is room every row lands exactly once and the database is sound.
"""

import hashlib
import os
import sqlite3
import subprocess
import sys
import threading
import time

import httpx

from nightlink.cloud.store import Store
from nightlink.edge.store import EdgeStore
from nightlink.edge.sync.cloud_link import SyncClient
from tests.support import disk
from tests.support.services import Broker, free_port
from tests.support.waiting import until
from tests.sync.conftest import TENANT, cloud_digest, edge_digest, fill_backlog

SECRET = "cloud-disk-secret-1234"
LEFT_FREE = 40 * 1024


def _ready(api: str) -> httpx.Response | None:
    try:
        return httpx.get(f"{api}/readyz", timeout=5)
    except httpx.TransportError:
        return None


def test_cloud_full_disk__says_why_keeps_everything_and_catches_up(tmp_path, record_property):
    with disk.small_disk(tmp_path / "disk", "8m") as where:
        url = f"sqlite:///{where / 'cloud.db'}"
        edge = EdgeStore(tmp_path / "edge.db")
        fill_backlog(edge, nights=2)
        produced = edge_digest(edge)
        cloud = Store.open(url)
        cloud.create_tenant(TENANT, "One")
        cloud.set_api_secret(TENANT, SECRET)
        cloud.add_device(edge.device, TENANT, "edge", f"{TENANT}.{edge.device}", "-")
        data = cloud.tenant(TENANT)

        (tmp_path / "broker").mkdir()
        broker = Broker(tmp_path / "broker").start()
        port = free_port()
        api = f"http://127.0.0.1:{port}"
        env = {**os.environ, "NIGHTLINK_ENV": "test", "NIGHTLINK_JWT_SECRET": "d" + "0123456789abcdef" * 3,
               "NIGHTLINK_MQTT_HOST": broker.host, "NIGHTLINK_MQTT_PORT": str(broker.port),
               "NIGHTLINK_DATABASE_URL": url, "NIGHTLINK_DB_BACKOFF_MAX_S": "1"}
        log = tmp_path / "cloud.log"
        with open(log, "ab") as out:  # never a pipe nobody reads
            serve = subprocess.Popen([sys.executable, "-m", "nightlink", "cloud", "serve",
                                      "--port", str(port), "--client-id", "cloud-disk"],
                                     stdout=subprocess.DEVNULL, stderr=out, env=env)
        client = SyncClient(edge, _sync_config(broker), TENANT)
        stop = threading.Event()
        syncing = threading.Thread(target=client.run, args=(stop,))
        filler = None
        try:
            until(lambda: (r := _ready(api)) is not None and r.status_code == 200, 60,
                   "the cloud ready")
            filler = disk.fill(where, LEFT_FREE)
            syncing.start()
            until(lambda: (r := _ready(api)) is not None and r.status_code == 503, 60,
                   "/readyz saying the database cannot be written")
            reason = _ready(api).json()
            entry = [{"type": "sgv", "sgv": 120, "date": int(time.time() * 1000)}]
            upload = httpx.post(f"{api}/t/{TENANT}/api/v1/entries", json=entry, timeout=30,
                                headers={"api-secret": hashlib.sha1(SECRET.encode()).hexdigest()})
            full_rows = data.count_rows()
            assert serve.poll() is None, log.read_text()[-3000:]
            assert upload.status_code == 503 and upload.headers.get("retry-after"), upload.text
            assert full_rows < produced[0]
            # Nothing leaves the edge's outbox unless the cloud stored it.
            assert edge.outbox_size() + full_rows >= produced[0]

            filler.unlink()
            filler = None
            until(lambda: data.count_rows() >= produced[0] and edge.outbox_size() == 0, 120,
                   "every row stored once there was room")
            until(lambda: (r := _ready(api)) is not None and r.status_code == 200, 30,
                   "ready again")
            again = httpx.post(f"{api}/t/{TENANT}/api/v1/entries", json=entry, timeout=30,
                               headers={"api-secret": hashlib.sha1(SECRET.encode()).hexdigest()})
            assert again.status_code == 200, again.text
        finally:
            stop.set()
            if syncing.is_alive():
                syncing.join(30)
            serve.terminate()
            serve.wait(30)
            broker.stop()
            if filler is not None:
                filler.unlink()
        assert cloud_digest(cloud, edge.device) == produced
        with sqlite3.connect(where / "cloud.db") as conn:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        record_property("fault_counts", f"cloud full disk: /readyz 503 ({reason}), upload 503 "
                        f"with Retry-After; {full_rows} of {produced[0]} rows stored while full, "
                        "all stored once there was room, integrity ok")
        cloud.close()
        edge.close()


def _sync_config(broker):
    from nightlink.edge.node.config import SyncConfig

    return SyncConfig(enabled=True, host=broker.host, port=broker.port, keepalive_s=5,
                      reconnect_min_s=0.1, reconnect_max_s=1.0, resend_after_s=5.0,
                      backfill_rows_per_s=2000.0, backfill_batch_rows=500)
