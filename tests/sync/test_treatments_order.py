"""The order of a node's treatment changes in the cloud, through the real ingest code
(`ingest.handle`, what every ingest worker runs) on a real SQLite file and a real PostgreSQL.

What must hold: a batch resent by the node (its ack was late, or the link dropped) while its
first copy is still being applied can be handled after a newer change of the same document;
the cloud keeps the node's change number per document and ignores the older change, whether
it is an edit or a deletion, and whichever of two workers commits last. The older change is
still acknowledged. The cloud's own edits keep working, and a cloud from before the column
keeps its treatments.
"""

import contextlib
import hashlib
import json
import threading

import httpx
import pytest

from nightlink.cloud import ingest
from nightlink.cloud.app import create_app as create_cloud
from nightlink.cloud.config import Settings
from nightlink.cloud.store import Store
from nightlink.shared import topics
from nightlink.sql import connect
from tests.support.servers import serve
from tests.support.waiting import until

TENANT = "fam-1"
NODE = "0a1b2c3d4e5f"
OID = "65a1b2c3d4e5f60718293a4b"
CARBS = {"_id": OID, "eventType": "Carb Correction", "created_at": "2026-11-30T06:00:00.000Z"}


def provisioned(url: str) -> Store:
    store = Store.open(url)
    store.create_tenant(TENANT, "One")
    store.add_device(NODE, TENANT, "edge", f"{TENANT}.{NODE}", "-")
    return store


def carbs(grams: int) -> dict:
    return {**CARBS, "carbs": grams}


def deletion(grams: int = 10) -> dict:
    return {**carbs(grams), "isValid": False}


def send(store: Store, *changes: tuple[int, dict]) -> ingest.Outcome:
    """One batch of (seq, document) from the node, handled as an ingest worker handles it."""
    payload = json.dumps({"docs": [{"seq": seq, "doc": doc} for seq, doc in changes]})
    return ingest.handle(store, topics.treatments_topic(TENANT, NODE), payload.encode())


def acked(outcome: ingest.Outcome) -> tuple[list, list]:
    [(topic, body)] = outcome.acks
    assert topic == topics.ack_topic(TENANT, NODE, topics.TREATMENTS)
    return body["seqs"], body["refused"]


def stored(store: Store):
    """The cloud's row of the document (deleted ones too) and what API v1 lists."""
    data = store.tenant(TENANT)
    return data.docs.get("treatments", OID), data.treatments(0, 2**53)


def test_order__an_older_edit_resent_after_a_newer_one_is_ignored(cloud_db_url):
    store = provisioned(cloud_db_url)
    try:
        send(store, (1, carbs(10)))
        assert acked(send(store, (2, carbs(15)))) == ([[2, 2]], [])
        row, _ = stored(store)
        assert row.doc["carbs"] == 15
        # The first batch again, handled after the edit: acknowledged, and nothing changes.
        assert acked(send(store, (1, carbs(10)))) == ([[1, 1]], [])
        again, listed = stored(store)
        assert again.doc["carbs"] == 15 and again.srv_modified == row.srv_modified
        assert [t["carbs"] for t in listed] == [15]
        # A newer edit still goes through.
        send(store, (3, carbs(20)))
        assert stored(store)[0].doc["carbs"] == 20
    finally:
        store.close()


def test_order__the_resend_of_a_creation_after_its_edit_is_ignored(cloud_db_url):
    """The document is new to the cloud: the newer copy creates it, the older finds it."""
    store = provisioned(cloud_db_url)
    try:
        send(store, (5, carbs(15)))
        assert acked(send(store, (4, carbs(10)))) == ([[4, 4]], [])
        row, listed = stored(store)
        assert row.doc["carbs"] == 15 and [t["carbs"] for t in listed] == [15]
    finally:
        store.close()


def test_order__an_older_edit_does_not_bring_back_a_newer_deletion(cloud_db_url):
    store = provisioned(cloud_db_url)
    try:
        send(store, (1, carbs(10)))
        send(store, (3, deletion()))
        assert acked(send(store, (2, carbs(15)))) == ([[2, 2]], [])
        row, listed = stored(store)
        assert not row.valid and listed == []
    finally:
        store.close()


def test_order__an_older_deletion_does_not_delete_a_newer_edit(cloud_db_url):
    store = provisioned(cloud_db_url)
    try:
        send(store, (1, carbs(10)))
        send(store, (3, carbs(15)))
        assert acked(send(store, (2, deletion()))) == ([[2, 2]], [])
        row, listed = stored(store)
        assert row.valid and [t["carbs"] for t in listed] == [15]
    finally:
        store.close()


def test_order__a_deletion_of_a_document_still_on_the_way_stays_deleted(cloud_db_url):
    """The node created and deleted a treatment; the deletion (the resend) is handled before
    the creation (the first copy): the creation must not bring the treatment to life."""
    store = provisioned(cloud_db_url)
    try:
        send(store, (8, deletion()))
        assert stored(store)[1] == []
        assert acked(send(store, (7, carbs(10)))) == ([[7, 7]], [])
        row, listed = stored(store)
        assert listed == [] and not row.valid
        # API v3 history reports it as any deleted document.
        history = store.tenant(TENANT).docs.history("treatments", 0)
        assert [(r.oid, r.v3().get("isValid")) for r in history] == [(OID, False)]
    finally:
        store.close()


def test_order__an_older_change_in_the_same_batch_loses_too(cloud_db_url):
    store = provisioned(cloud_db_url)
    try:
        send(store, (12, carbs(15)), (11, carbs(10)))
        assert stored(store)[0].doc["carbs"] == 15
    finally:
        store.close()


def test_order__the_clouds_own_edits_keep_working(cloud_db_url):
    """A phone app's PUT and DELETE on the cloud's Nightscout API: a resend older than the
    node's change the document holds does not undo them; a newer change of the node wins
    (last writer wins, as before)."""
    app = create_cloud(Settings(env="test", database_url=cloud_db_url, jwt_secret="x" + "0123456789abcdef" * 3,
                                upload_rate_per_min=0))
    store = app.state.store
    store.create_tenant(TENANT, "One")
    store.set_api_secret(TENANT, "cloud-api-secret-2026")
    store.add_device(NODE, TENANT, "edge", f"{TENANT}.{NODE}", "-")
    headers = {"api-secret": hashlib.sha1(b"cloud-api-secret-2026").hexdigest()}
    try:
        with serve(app) as root:
            http = httpx.Client(base_url=f"{root}/t/{TENANT}", headers=headers)
            send(store, (1, carbs(10)))
            send(store, (2, carbs(12)))
            assert http.put("/api/v1/treatments", json=carbs(30)).status_code == 200
            send(store, (1, carbs(10)))  # an older resend
            assert stored(store)[0].doc["carbs"] == 30
            send(store, (3, carbs(40)))  # the node's newer edit
            assert stored(store)[0].doc["carbs"] == 40
            assert http.delete(f"/api/v1/treatments/{OID}").status_code == 200
            send(store, (3, carbs(40)))  # the same change again
            assert stored(store)[1] == []
            send(store, (4, carbs(50)))  # edited again on the node after the cloud's delete
            assert [t["carbs"] for t in stored(store)[1]] == [50]
            http.close()
    finally:
        store.close()


def test_order__another_node_is_not_held_to_this_nodes_numbers(cloud_db_url):
    """Numbers are the sending node's: a second node's change with a smaller number is
    its newest and is applied."""
    store = provisioned(cloud_db_url)
    other = "0a1b2c3d4e60"
    store.add_device(other, TENANT, "edge", f"{TENANT}.{other}", "-")
    try:
        send(store, (500, carbs(10)))
        payload = json.dumps({"docs": [{"seq": 3, "doc": carbs(25)}]}).encode()
        ingest.handle(store, topics.treatments_topic(TENANT, other), payload)
        assert stored(store)[0].doc["carbs"] == 25
    finally:
        store.close()


@contextlib.contextmanager
def held_before_commit(store: Store):
    """The store's outermost transaction waits, its writes done and its locks held, until
    released: `with held_before_commit(s) as (inside, release):`."""
    inside, release = threading.Event(), threading.Event()
    original, depth = store.db.transaction, [0]

    @contextlib.contextmanager
    def transaction():
        with original():
            depth[0] += 1
            try:
                yield
            finally:
                depth[0] -= 1
            if depth[0] == 0:
                inside.set()
                assert release.wait(30), "the test never released the transaction"

    store.db.transaction = transaction
    try:
        yield inside, release
    finally:
        release.set()
        store.db.transaction = original


def blocked_on_a_lock(url: str) -> bool | None:
    """Whether a PostgreSQL session waits for a lock (None for SQLite, which cannot say)."""
    if not url.startswith("postgresql"):
        return None
    db = connect(url)
    try:
        return bool(db.scalar("SELECT count(*) AS n FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
            "WHERE NOT l.granted AND d.datname = current_database()"))
    finally:
        db.close()


@pytest.mark.parametrize("first", ["newer", "older"])
@pytest.mark.parametrize("change", ["edit", "deletion"])
def test_order__two_workers_at_once_end_with_the_newer_change(cloud_db_url, first, change):
    """Two ingest workers (each its own database connection, as two processes have) apply
    the first copy and the resend at the same time: the one that got its batch first holds
    its transaction open until the other has started and waits; either order ends with the
    newer state."""
    setup = provisioned(cloud_db_url)
    send(setup, (1, carbs(10)))
    setup.close()
    newer = (3, carbs(15) if change == "edit" else deletion())
    older = (2, deletion() if change == "edit" else carbs(12))
    batches = {"newer": newer, "older": older}
    second = "older" if first == "newer" else "newer"
    workers = [Store.open(cloud_db_url), Store.open(cloud_db_url)]
    outcomes: dict[str, ingest.Outcome] = {}
    entering = threading.Event()

    def work(store: Store, which: str) -> None:
        outcomes[which] = send(store, batches[which])

    try:
        with held_before_commit(workers[0]) as (inside, release):
            one = threading.Thread(target=work, args=(workers[0], first))
            one.start()
            assert inside.wait(20), "the first worker never reached its commit"
            original = workers[1].db.transaction

            def entering_transaction():
                entering.set()
                return original()

            workers[1].db.transaction = entering_transaction
            two = threading.Thread(target=work, args=(workers[1], second))
            two.start()
            assert entering.wait(20), "the second worker never began its transaction"
            if blocked_on_a_lock(cloud_db_url) is not None:
                until(lambda: blocked_on_a_lock(cloud_db_url), 20,
                      "the second worker waiting for the first one's lock")
            release.set()
            one.join(30)
            two.join(30)
        assert not one.is_alive() and not two.is_alive()
        for which, (seq, _doc) in batches.items():
            assert acked(outcomes[which]) == ([[seq, seq]], [])
        row, listed = stored(workers[0])
        if change == "edit":
            assert row.valid and [t["carbs"] for t in listed] == [15]
        else:
            assert not row.valid and listed == []
    finally:
        for store in workers:
            store.close()


def test_order__a_cloud_from_before_the_column_keeps_its_treatments(cloud_db_url, monkeypatch):
    """The migration adds the node's change number to the stored documents: the treatments
    stay as they were, without a number, and the first change of the node after it is
    applied; its older resend is then ignored."""
    from nightlink.cloud.store import schema

    before = [m for m in schema.MIGRATIONS if m[0] < 10]
    monkeypatch.setattr(schema, "MIGRATIONS", before)
    old = provisioned(cloud_db_url)
    assert old.version == 9
    old.tenant(TENANT).add_documents("treatments", [carbs(10), {
        "eventType": "Note", "notes": "from an uploader", "created_at": "2026-11-30T05:00:00Z"}])
    kept = {t["eventType"]: t for t in old.tenant(TENANT).treatments(0, 2**53)}
    old.close()
    monkeypatch.undo()

    new = Store.open(cloud_db_url)
    try:
        assert new.version == schema.MIGRATIONS[-1][0] >= 10
        assert {t["eventType"]: t for t in new.tenant(TENANT).treatments(0, 2**53)} == kept
        assert {r["src_seq"] for r in new.db.query("SELECT src_seq FROM ns_docs")} == {None}
        send(new, (6, carbs(15)))
        send(new, (5, carbs(12)))
        assert stored(new)[0].doc["carbs"] == 15
    finally:
        new.close()
