"""A cloud store with the two tenants the cloud tests use (fam-1, fam-2) and their devices."""

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
