"""A cloud store with the two tenants the cloud tests use (fam-1, fam-2) and their devices, and
a cloud with one tenant, one clock and a running MQTT ingest for the clock's end-to-end tests."""

from contextlib import contextmanager
from pathlib import Path

from nightlink.cloud.config import Settings
from nightlink.cloud.ingest import IngestWorker
from nightlink.cloud.store import Store


def two_tenants(url: str, devices=(), *, password_hash: str = "-",
                names=("One", "Two")) -> Store:
    """Open the store at `url` with tenants fam-1 and fam-2; `devices` are (device id, tenant,
    kind) triples, provisioned with the MQTT username `{tenant}.{device}`."""
    store = Store.open(url)
    store.create_tenant("fam-1", names[0])
    store.create_tenant("fam-2", names[1])
    for device, tenant, kind in devices:
        store.add_device(device, tenant, kind, f"{tenant}.{device}", password_hash)
    return store


@contextmanager
def ingesting_cloud(folder: Path, broker, tenant: str, clock: str, client_id: str):
    """A SQLite cloud store in `folder` holding `tenant` and its `clock`, with an ingest worker
    connected to `broker`: yields (store, worker), stops both afterwards."""
    store = Store.open(f"sqlite:///{folder / 'cloud.db'}")
    store.create_tenant(tenant, tenant.title())
    store.add_device(clock, tenant, "clock", f"{tenant}.{clock}", "-")
    worker = IngestWorker(store, Settings(env="test", jwt_secret="x" + "0123456789abcdef" * 3,
                                          mqtt_host=broker.host, mqtt_port=broker.port),
                          client_id=client_id)
    worker.start()
    try:
        assert worker.connected.wait(10), "the ingest worker did not connect to the broker"
        yield store, worker
    finally:
        worker.stop()
        store.close()


def cloud_of_edge(edge, url: str, tenant: str = "sim"):
    """A cloud store at `url` with a tenant holding everything the edge store recorded, as the
    ingest stores it: the epoch rows, and the CGM readings as Nightscout entries. Returns
    (store, the tenant's data)."""
    from nightlink.cloud.ingest import glucose_entries
    from nightlink.shared import codec, features

    store = Store.open(url)
    store.create_tenant(tenant, tenant.title())
    data = store.tenant(tenant)
    records = list(edge.records())
    data.put_rows(records)
    data.add_entries([e for r in records if r.stream == features.CGM
                      for e in glucose_entries(r, codec.device_name(r.device))])
    return store, data
