"""An edge store with a backlog, a real broker, a real cloud store and ingest worker."""

import hashlib
import threading
import time
from dataclasses import dataclass

import pytest

from nightlink.cloud.config import Settings
from nightlink.cloud.ingest import IngestWorker
from nightlink.cloud.store import Store
from nightlink.edge.node.config import SyncConfig
from nightlink.edge.store import EdgeStore
from nightlink.shared import codec
from nightlink.tools.bench.backlog import NIGHT_EPOCHS, fill_backlog  # noqa: F401

TENANT = "fam-1"


def edge_digest(store: EdgeStore) -> tuple[int, str]:
    """(rows, hash of every row's identity and bytes) of the edge's own records."""
    h = hashlib.sha256()
    n = 0
    for rec in sorted(store.records(device=store.device), key=lambda r: (r.stream, r.seq)):
        for row in codec.split(rec):
            h.update(f"{row.stream}:{row.boot}:{row.seq}:{row.epoch}:{row.rows[0]}".encode())
            n += 1
    return n, h.hexdigest()


def cloud_digest(store: Store, device: str) -> tuple[int, str]:
    from nightlink.cloud.store import unpack_row

    h = hashlib.sha256()
    rows = store.db.query("SELECT stream, boot, seq, epoch, nfeat, row_data FROM epoch_rows "
                          "WHERE device = ? ORDER BY stream, seq", (device,))
    for r in rows:
        row = unpack_row(r["stream"], r["nfeat"], bytes(r["row_data"]))
        h.update(f"{r['stream']}:{r['boot']}:{r['seq']}:{r['epoch']}:{row}".encode())
    return len(rows), h.hexdigest()


@dataclass
class Rig:
    edge: EdgeStore
    cloud: Store
    worker: IngestWorker
    broker: object

    def sync_config(self, **kw) -> SyncConfig:
        return SyncConfig(enabled=True, host=self.broker.host, port=self.broker.port,
                          keepalive_s=kw.pop("keepalive_s", 5), reconnect_min_s=0.1,
                          reconnect_max_s=1.0, resend_after_s=kw.pop("resend_after_s", 5.0),
                          **kw)


@pytest.fixture
def rig(tmp_path, mosquitto):
    edge = EdgeStore(tmp_path / "edge.db")
    cloud = Store.open(f"sqlite:///{tmp_path / 'cloud.db'}")
    cloud.create_tenant(TENANT, "One")
    cloud.add_device(edge.device, TENANT, "edge", f"{TENANT}.{edge.device}", "-")
    settings = Settings(env="test", jwt_secret="x" + "0123456789abcdef" * 3, mqtt_host=mosquitto.host,
                        mqtt_port=mosquitto.port)
    worker = IngestWorker(cloud, settings, client_id="ingest-test")
    worker.start()
    assert worker.connected.wait(10)
    yield Rig(edge, cloud, worker, mosquitto)
    worker.stop()
    edge.close()
    cloud.close()


def settle(rig, rows: int, timeout: float = 30) -> None:
    """Wait until the cloud holds `rows` rows (or the timeout) and the ingest is idle."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if rig.cloud.tenant(TENANT).count_rows() >= rows:
            break
        time.sleep(0.05)
    rig.worker.drain()


def run_sync(client, stop_after_s: float, until_empty=True):
    stop = threading.Event()
    timer = threading.Timer(stop_after_s, stop.set)
    timer.start()
    try:
        client.run(stop, until_empty=until_empty)
    finally:
        timer.cancel()


def status_reported(rig, key: str, what: str):
    """Run the edge's sync until the cloud holds its status report with `key`; its value."""
    from nightlink.edge.sync.cloud_link import SyncClient
    from tests.support.waiting import until

    client = SyncClient(rig.edge, rig.sync_config(), TENANT)
    stop = threading.Event()
    worker = threading.Thread(target=client.run, args=(stop,), kwargs={"until_empty": False})
    worker.start()
    try:
        until(lambda: (rig.cloud.device_status(rig.edge.device) or {}).get(key),
              timeout=20, what=what)
    finally:
        stop.set()
        worker.join(30)
    return rig.cloud.device_status(rig.edge.device)[key]
