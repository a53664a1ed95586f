"""An edge's undone import in the cloud (TenantStore.retract_boot through the ingest), against
races and edges a review found: a status report handled while the import's rows are being
stored, two workers retracting at once, a boot number given again after the edge's store was
put back from an older copy, and a second home's edge carrying the same reading."""

import json
import threading
import time

import pytest

from nightlink.cloud.ingest import handle
from nightlink.cloud.store import Store
from nightlink.cloud.store import tenant as tenant_mod
from nightlink.cloud.store.tenant import TenantStore
from nightlink.shared import codec, features, topics
from tests.support.cloud import two_tenants

DEV = "a4cf12b0c3d4"
DEV2 = "0000000000e2"
FIRST = 58950540


@pytest.fixture
def store(cloud_db_url):
    s = two_tenants(cloud_db_url, [(DEV, "fam-1", "edge"), (DEV2, "fam-1", "edge")])
    yield s
    s.close()


def rec(dev, boot, seq, epoch, glucose, n=1):
    rows = [codec.quantize_row(features.CGM, (glucose, 0.5 + 0.5 * i, 0.0, 0.0, 4.0, None))
            for i in range(n)]
    return codec.Record(features.CGM, codec.device_id(dev), boot, seq, epoch, rows)


def data(dev, r):
    return topics.data_topic("fam-1", dev, "cgm"), codec.encode(r)


def status(dev, doc):
    return topics.status_topic("fam-1", dev), json.dumps(doc).encode()


def retract(boot, epochs=None):
    item = {"boot": boot, "nights": []}
    if epochs is not None:
        item["epochs"] = list(epochs)
    return status(DEV, {"outbox": 0, "retracted": [item]})


def test_rows_stored_while_the_retraction_runs_do_not_stay(store, monkeypatch):
    """Two workers: one stores a batch of the import's rows, the other handles the report that
    retracts the import in between its reading and its writing. The rows are checked under
    the lock the retraction takes, in the transaction that stores them."""
    handle(store, *data(DEV, rec(DEV, 2, 1, FIRST, 100.0, n=5)))
    check = TenantStore._retracted_at
    fired = []

    def racing(self, device, keys):
        if not fired:  # the other worker's retraction, before this one's check
            fired.append(1)
            handle(store, *retract(2))
        return check(self, device, keys)

    monkeypatch.setattr(TenantStore, "_retracted_at", racing)
    out = handle(store, *data(DEV, rec(DEV, 2, 6, FIRST + 5, 80.0, n=5)))
    data_ = store.tenant("fam-1")
    assert fired and out.rows == 0 and out.acks
    assert data_.count_rows() == 0 and data_.entries(count=10) == []


def test_two_workers_retracting_the_same_boot_at_once(cloud_db_url, monkeypatch):
    """Two workers (two connections) handle two reports naming the same boot at once (a
    retained copy replayed while the new one is handled): one retracts, the other finds it
    done; neither fails (a failed report would lose its dropped ranges and screens)."""
    first = two_tenants(cloud_db_url, [(DEV, "fam-1", "edge")])
    second = Store.open(cloud_db_url)
    handle(first, *data(DEV, rec(DEV, 2, 1, FIRST, 100.0, n=5)))
    decode = tenant_mod._reading_dates

    def slow(rows):
        out = decode(rows)
        time.sleep(0.5)  # as a 120-day import's rows take
        return out

    monkeypatch.setattr(tenant_mod, "_reading_dates", slow)
    errors = []

    def run(s):
        try:
            handle(s, *retract(2))
        except Exception as exc:  # noqa: BLE001 - what the test looks for
            errors.append(repr(exc))

    workers = [threading.Thread(target=run, args=(s,)) for s in (first, second)]
    for w in workers:
        w.start()
        time.sleep(0.1)
    for w in workers:
        w.join(30)
    try:
        assert errors == []
        assert first.tenant("fam-1").count_rows() == 0
    finally:
        first.close()
        second.close()


def test_a_boot_number_given_again_after_a_restore_is_stored_outside_the_import(store):
    """The edge's store put back from a copy older than the undo: its next start is given the
    undone import's boot number again. Rows of that boot outside the import's epochs are the
    node's own and are stored; inside them they are the import's and are not."""
    handle(store, *data(DEV, rec(DEV, 1, 1, FIRST, 120.0, n=10)))
    handle(store, *data(DEV, rec(DEV, 2, 11, FIRST + 100, 90.0, n=10)))  # the import
    handle(store, *retract(2, (FIRST + 100, FIRST + 109)))
    data_ = store.tenant("fam-1")
    assert data_.count_rows() == 10
    late = handle(store, *data(DEV, rec(DEV, 2, 21, FIRST + 105, 90.0, n=2)))
    live = handle(store, *data(DEV, rec(DEV, 2, 23, FIRST + 5000, 140.0, n=10)))
    assert (late.rows, live.rows) == (0, 10) and data_.count_rows() == 20
    assert sorted(e["sgv"] for e in data_.entries(count=10)) == [120, 140]


def test_a_reading_a_second_home_s_edge_carries_stays_served(store):
    """Two edges of one tenant carry the same reading; the first's (an import) gave the
    entry. Retracting the import leaves it: the second edge's row carries it."""
    handle(store, *data(DEV, rec(DEV, 2, 1, FIRST, 120.0)))
    handle(store, *data(DEV2, rec(DEV2, 1, 1, FIRST, 120.0)))
    data_ = store.tenant("fam-1")
    assert len(data_.entries(count=10)) == 1
    handle(store, *retract(2))
    assert [e["sgv"] for e in data_.entries(count=10)] == [120]
    assert data_.count_rows() == 1


def test_readings_of_a_record_crossing_the_import_s_epochs_follow_their_own_rows(store):
    """A record of the boot number given again starts inside the undone import's epochs and
    runs past them: its rows outside are stored, and so are the readings they carry."""
    rows = [codec.quantize_row(features.CGM, (90.0, 0.5, 0.0, 0.0, 4.0, None))] * 10
    handle(store, *data(DEV, codec.Record(features.CGM, codec.device_id(DEV), 2, 1, FIRST + 100,
                                          rows)))
    handle(store, *retract(2, (FIRST + 100, FIRST + 109)))
    rows = [codec.quantize_row(features.CGM, (g, 0.5, 0.0, 0.0, 4.0, None))
            for g in range(150, 160)]
    out = handle(store, *data(DEV, codec.Record(features.CGM, codec.device_id(DEV), 2, 21,
                                                FIRST + 105, rows)))
    assert out.rows == 5
    assert sorted(e["sgv"] for e in store.tenant("fam-1").entries(count=50)) == list(
        range(155, 160))
