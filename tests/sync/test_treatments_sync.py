"""Treatments from the bedside node to the cloud through a real Mosquitto: the edge's Nightscout
API and its app's careportal on one side, the cloud's Nightscout API on the other, real SQLite
edge store, the cloud store on SQLite and PostgreSQL, the real ingest worker.

What must hold: a treatment stored while the broker is down is kept (across a restart of the
node) and arrives once the broker is back; a batch delivered again stores nothing twice; an
edit and a deletion follow; a malformed payload or document is dead-lettered with its reason
and the good ones around it are stored; the cloud's own documents applied on the edge are not
queued back. The other way, a treatment entered in the cloud reaches the node, and so does
its deletion, without coming back.
"""

import contextlib
import hashlib
import json
import threading
import time

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.publish import single

from nightlink.cloud.app import create_app as create_cloud
from nightlink.cloud.config import Settings
from nightlink.cloud.ingest import IngestWorker
from nightlink.edge.node.config import SyncConfig
from nightlink.edge.node.nightscout_site import create_app as create_edge
from nightlink.edge.store import EdgeStore
from nightlink.edge.sync.cloud_link import SyncClient
from nightlink.nightscout import documents
from nightlink.shared import topics
from tests.support.servers import serve
from tests.support.waiting import subscribed, until

TENANT = "fam-1"
SECRET = "bedside-upload-secret-2026"
SHA1 = {"api-secret": hashlib.sha1(SECRET.encode()).hexdigest()}


@contextlib.contextmanager
def cloud(url: str, broker, edge_device: str, **ingest):
    """The cloud app (its Nightscout API) with the edge provisioned, and an ingest worker."""
    app = create_cloud(Settings(env="test", database_url=url, jwt_secret="x" + "0123456789abcdef" * 3,
                                upload_rate_per_min=0))
    store = app.state.store
    store.create_tenant(TENANT, "One")
    store.set_api_secret(TENANT, SECRET)
    store.add_device(edge_device, TENANT, "edge", f"{TENANT}.{edge_device}", "-")
    worker = IngestWorker(store, Settings(env="test", jwt_secret="x" + "0123456789abcdef" * 3,
                                          mqtt_host=broker.host, mqtt_port=broker.port,
                                          **ingest),
                          client_id="ingest-treatments")
    worker.start()
    try:
        with serve(app) as root:
            yield store, worker, httpx.Client(base_url=f"{root}/t/{TENANT}", headers=SHA1)
    finally:
        worker.stop()
        store.close()


@contextlib.contextmanager
def edge_site(store: EdgeStore):
    with serve(create_edge(store, SECRET)) as root:
        yield httpx.Client(base_url=root, headers={**SHA1, "Origin": root})


@contextlib.contextmanager
def syncing(store: EdgeStore, broker, *, pull_every_s: float = 30.0, **kw):
    cfg = SyncConfig(enabled=True, host=broker.host, port=broker.port, keepalive_s=5,
                     reconnect_min_s=0.1, reconnect_max_s=0.5,
                     resend_after_s=kw.pop("resend_after_s", 30.0), **kw)
    client = SyncClient(store, cfg, TENANT)
    client.pull_every_s = pull_every_s
    stop = threading.Event()
    thread = threading.Thread(target=client.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield client
    finally:
        stop.set()
        thread.join(10)


def cloud_treatments(http: httpx.Client) -> list[dict]:
    r = http.get("/api/v1/treatments", params={"count": 100, "find[created_at][$gte]": "2000"})
    assert r.status_code == 200, r.text
    return r.json()


def cloud_stamps(store) -> dict[str, int]:
    """Each cloud treatment's srvModified, deleted ones too."""
    return {r.oid: r.srv_modified for r in store.tenant(TENANT).docs.history("treatments", 0)}


def iso(minutes_ago: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() - minutes_ago * 60))


def listener(broker, topic: str) -> tuple[mqtt.Client, list[bytes]]:
    got: list[bytes] = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.on_message = lambda _c, _u, m: got.append(bytes(m.payload))
    client.connect(broker.host, broker.port)
    client.loop_start()
    subscribed(client, topic)
    return client, got


def publish(broker, topic: str, payload: bytes) -> None:
    """One QoS 1 message from a client of its own, returning once the broker has it."""
    single(topic, payload, qos=1, hostname=broker.host, port=broker.port)


def test_treatments__stored_offline_reach_the_cloud_once(tmp_path, mosquitto, cloud_db_url):
    mosquitto.stop()  # the internet is down
    edge = EdgeStore(tmp_path / "edge.db")
    device = edge.device
    meal = {"eventType": "Meal Bolus", "carbs": 42, "insulin": 4.5, "created_at": iso(20),
            "enteredBy": "xDrip+"}
    with edge_site(edge) as lan:
        assert lan.post("/api/v1/treatments", json=meal).status_code == 200
        # The app's careportal on the LAN: signed in with the secret, as a phone is.
        assert lan.post("/app/login", data={"secret": SECRET},
                        follow_redirects=False).status_code == 303
        r = lan.post("/app/api/local/treatments", json={"eventType": "Exercise",
                                                         "duration": 30, "notes": "walk"})
        assert r.status_code == 200 and r.json()["stored"] is True
    assert edge.doc_outbox_size() == 2
    edge.close()  # the node restarts: the queue is in its SQLite file
    edge = EdgeStore(tmp_path / "edge.db")
    assert edge.doc_outbox_size() == 2
    with cloud(cloud_db_url, mosquitto, device) as (store, worker, http), \
            edge_site(edge) as lan:
        lan_ids = {t["eventType"]: t["_id"] for t in lan.get("/api/v1/treatments").json()}
        with syncing(edge, mosquitto) as client:
            until(lambda: "cannot reach" in client.last_error, 10, "the sync backing off")
        assert edge.doc_outbox_size() == 2
        mosquitto.start()  # the internet is back
        assert worker.connected.wait(20)
        spy, batches = listener(mosquitto, topics.treatments_topic(TENANT, device))
        with syncing(edge, mosquitto):
            until(lambda: len(cloud_treatments(http)) == 2, 30, "both treatments in the cloud")
            until(lambda: edge.doc_outbox_size() == 0, 10, "the acks emptying the outbox")
        stored = {t["eventType"]: t for t in cloud_treatments(http)}
        assert {k: v["_id"] for k, v in stored.items()} == lan_ids  # the edge's _id
        assert stored["Meal Bolus"]["carbs"] == 42 and stored["Meal Bolus"]["insulin"] == 4.5
        assert stored["Exercise"]["duration"] == 30
        assert stored["Exercise"]["notes"] == "walk"

        # The same batch delivered again (a lost ack, a broker's redelivery): nothing new,
        # nothing even touched.
        until(lambda: any(b'"docs"' in b for b in batches), 10, "the spy seeing the batch")
        sent = [b for b in batches if b'"docs"' in b]  # the edge's batches, not its pulls
        stamps = cloud_stamps(store)
        handled = worker.handled
        for payload in sent:
            publish(mosquitto, topics.treatments_topic(TENANT, device), payload)
        until(lambda: worker.handled >= handled + len(sent), 10, "the re-sends handled")
        assert len(cloud_treatments(http)) == 2
        assert cloud_stamps(store) == stamps
        spy.loop_stop()
    edge.close()


def test_treatments__edit_and_deletion_follow(tmp_path, mosquitto, cloud_db_url):
    edge = EdgeStore(tmp_path / "edge.db")
    with cloud(cloud_db_url, mosquitto, edge.device) as (
            _store, _worker, http), edge_site(edge) as lan, syncing(edge, mosquitto):
        note = {"eventType": "Note", "notes": "sensor changed", "created_at": iso(5)}
        carbs = {"eventType": "Carb Correction", "carbs": 12, "created_at": iso(3)}
        assert lan.post("/api/v1/treatments", json=[note, carbs]).status_code == 200
        until(lambda: len(cloud_treatments(http)) == 2, 20, "both treatments in the cloud")
        ids = {t["eventType"]: t["_id"] for t in lan.get("/api/v1/treatments").json()}

        edited = {**carbs, "_id": ids["Carb Correction"], "carbs": 15}
        assert lan.put("/api/v1/treatments", json=edited).status_code == 200
        until(lambda: [t.get("carbs") for t in cloud_treatments(http)
                       if t["eventType"] == "Carb Correction"] == [15], 20, "the edit")

        assert lan.delete(f"/api/v1/treatments/{ids['Note']}").status_code == 200
        until(lambda: [t["eventType"] for t in cloud_treatments(http)] == ["Carb Correction"],
              20, "the deletion")
        until(lambda: edge.doc_outbox_size() == 0, 10, "the outbox emptying")
    edge.close()


def test_treatments__entered_in_the_cloud_reach_the_node_and_do_not_come_back(
        tmp_path, mosquitto, cloud_db_url):
    edge = EdgeStore(tmp_path / "edge.db")
    with cloud(cloud_db_url, mosquitto, edge.device) as (
            store, worker, http), edge_site(edge) as lan, \
            syncing(edge, mosquitto, pull_every_s=0.2) as client:
        # One from the node first: it goes up, and the pull that brings it down changes nothing.
        mine = {"eventType": "Note", "notes": "from the node", "created_at": iso(4)}
        assert lan.post("/api/v1/treatments", json=mine).status_code == 200
        until(lambda: len(cloud_treatments(http)) == 1, 20, "the node's note in the cloud")
        snack = {"eventType": "Carb Correction", "carbs": 18, "created_at": iso(1),
                 "enteredBy": "family app"}
        assert http.post("/api/v1/treatments", json=snack).status_code == 200
        cloud_id = next(t["_id"] for t in cloud_treatments(http) if t.get("carbs"))

        def on_node():
            return {t["_id"]: t for t in lan.get("/api/v1/treatments").json()}

        until(lambda: cloud_id in on_node(), 20, "the cloud's carbs on the node")
        assert on_node()[cloud_id]["carbs"] == 18 and len(on_node()) == 2
        # What the carb hold reads: the newest treatment with carbs in the node's store.
        newest = edge.docs.latest("treatments", count=5)
        assert [r.doc.get("carbs") for r in newest if r.doc.get("carbs")] == [18]
        assert edge.doc_outbox_size() == 0  # not queued back to the cloud

        r = http.delete(f"/api/v1/treatments/{cloud_id}")
        assert r.status_code == 200
        until(lambda: cloud_id not in on_node(), 20, "the cloud's deletion on the node")
        after = cloud_stamps(store)
        handled = worker.handled
        until(lambda: worker.handled >= handled + 3, 10, "three more pulls answered")
        # Nothing the node received went back up: it sent its own note once, and the cloud's
        # documents did not change after the deletion.
        assert client.stats.docs_sent == 1
        assert edge.doc_outbox_size() == 0
        assert cloud_stamps(store) == after
        assert [t["notes"] for t in cloud_treatments(http)] == ["from the node"]
        # The answers on the node's cmd topic reach the ingest's filter too: not dead letters.
        assert worker.rejected == 0 and store.dead_letters() == []
    edge.close()


def test_treatments__malformed_goes_to_dead_letters_and_the_next_is_stored(tmp_path,
                                                                         mosquitto):
    edge = EdgeStore(tmp_path / "edge.db")
    device = edge.device
    topic = topics.treatments_topic(TENANT, device)
    with cloud(f"sqlite:///{tmp_path / 'cloud.db'}", mosquitto, device) as (store, worker, http):
        acks, got = listener(mosquitto, topics.ack_topic(TENANT, device, topics.TREATMENTS))
        publish(mosquitto, topic, b"{not json")
        publish(mosquitto, topic, json.dumps({"docs": "nope"}).encode())
        good = {"eventType": "Carb Correction", "carbs": 20, "created_at": iso(1),
                "_id": documents.new_oid()}
        bad = {"eventType": "Meal Bolus", "carbs": 30, "created_at": "not a time"}
        publish(mosquitto, topic, json.dumps({"docs": [{"seq": 7, "doc": bad},
                                                       {"seq": 8, "doc": good},
                                                       {"doc": good}]}).encode())
        until(lambda: len(cloud_treatments(http)) == 1, 20, "the good treatment stored")
        assert cloud_treatments(http)[0]["_id"] == good["_id"]
        until(lambda: len(store.dead_letters()) == 4, 10, "four dead letters")
        reasons = [d["reason"] for d in reversed(store.dead_letters())]
        assert "not JSON" in reasons[0]
        assert "docs is a list" in reasons[1]
        assert reasons[2].startswith("treatments change 7: created_at")
        assert "no sequence number" in reasons[3]
        assert json.loads(bytes(store.dead_letters()[1]["payload"]))["doc"] == bad
        # The sender is told which numbers were handled and which were refused, and why.
        until(lambda: got, 10, "the ack")
        ack = json.loads(got[-1])
        assert ack["seqs"] == [[7, 8]]
        assert ack["refused"][0][0] == 7 and "created_at" in ack["refused"][0][1]
        # The worker goes on: the next good message is stored.
        nxt = {"eventType": "Note", "notes": "after", "created_at": iso(0.5)}
        publish(mosquitto, topic, json.dumps({"docs": [{"seq": 9, "doc": nxt}]}).encode())
        until(lambda: len(cloud_treatments(http)) == 2, 20, "the next treatment")
        assert worker.problem() is None
        acks.loop_stop()
    edge.close()


def test_treatments__refused_change_leaves_the_outbox_and_is_kept_on_the_edge(tmp_path,
                                                                            mosquitto):
    """A change the cloud refuses for good is not sent forever: it is dead-lettered on both
    sides, and the ones after it are delivered."""
    edge = EdgeStore(tmp_path / "edge.db")
    now = int(time.time() * 1000)
    # Stored through the core, then made invalid for the cloud (an eventType too long for it
    # would be refused by the edge too; a document over the size limit is what can differ).
    big = documents.normalize("treatments", {"eventType": "Note", "created_at": iso(2),
                                             "notes": "x" * 100}, now)
    big.doc["notes"] = "x" * (documents.MAX_DOC_BYTES + 10)
    ok = documents.normalize("treatments", {"eventType": "Note", "created_at": iso(1),
                                            "notes": "fine"}, now)
    edge.docs.put([big, ok], mode="replace")
    with cloud(f"sqlite:///{tmp_path / 'cloud.db'}", mosquitto, edge.device) as (
            store, _worker, http), syncing(edge, mosquitto) as client:
        until(lambda: edge.doc_outbox_size() == 0, 20, "the outbox emptying")
        assert [t["notes"] for t in cloud_treatments(http)] == ["fine"]
        assert client.stats.docs_refused == 1
        assert any("the cloud refused treatment change" in d["reason"]
                   for d in edge.dead_letters())
        assert any("bytes of JSON" in d["reason"] for d in store.dead_letters())
    edge.close()


def test_treatments__an_older_cloud_that_drops_them_is_named(tmp_path, mosquitto, monkeypatch,
                                                             caplog):
    """A cloud from before treatments were synced stores the readings and dead-letters the
    treatment batches as an unknown stream: the edge said only that they were waiting. It
    now says the cloud acknowledges no treatment change though it acknowledges readings, and
    once the cloud is updated the change goes through and the reason goes."""
    from nightlink.cloud import ingest
    from nightlink.edge.sync import cloud_link
    from nightlink.shared import codec, features

    monkeypatch.setattr(cloud_link, "SILENT_CLOUD_S", 1.5)
    caplog.set_level("WARNING", logger="nightlink.edge.sync.cloud_link")
    newer_parse = ingest._parse

    def older_parse(topic):  # what a cloud without treatments sync answers
        kind, tenant, device, stream = newer_parse(topic)
        if stream in topics.DOC_STREAMS:
            raise ingest.Rejected(f"The stream {stream!r} is not one this cloud knows.")
        return kind, tenant, device, stream

    monkeypatch.setattr(ingest, "_parse", older_parse)
    edge = EdgeStore(tmp_path / "edge.db")
    cgm = codec.quantize_row(features.CGM, (120.0, 1.0, 0.0, 0.0, 6.0, None))
    start = int(time.time()) // 30 - 4
    for i in range(4):
        edge.append(features.CGM, start + i, [cgm])
    now = int(time.time() * 1000)
    edge.docs.put([documents.normalize("treatments", {"eventType": "Carb Correction",
                                                      "carbs": 15, "created_at": iso(1)}, now)],
                  mode="replace")
    with cloud(f"sqlite:///{tmp_path / 'cloud.db'}", mosquitto, edge.device) as (
            store, _worker, http), syncing(edge, mosquitto, resend_after_s=0.5) as client:
        until(lambda: edge.outbox_size() == 0, 20, "the readings acknowledged")
        until(lambda: client.last_error.startswith("the cloud has acknowledged no treatment"),
              20, "the edge naming the treatments' silence")
        assert client.last_error.endswith(", though it acknowledges the readings")
        said = [r.getMessage() for r in caplog.records if "no treatment" in r.getMessage()]
        assert len(said) == 1 and "older Nightlink" in said[0], said
        assert "provisioned there as a clock" in said[0]
        assert edge.doc_outbox_size() == 1  # kept
        assert any("not one this cloud knows" in d["reason"] for d in store.dead_letters())
        monkeypatch.setattr(ingest, "_parse", newer_parse)  # the cloud is updated
        until(lambda: edge.doc_outbox_size() == 0, 20, "the change delivered")
        until(lambda: client.last_error == "", 10, "the reason gone")
        assert [t["carbs"] for t in cloud_treatments(http)] == [15]
    edge.close()


def test_treatments__the_clouds_own_documents_are_not_queued_back(tmp_path):
    edge = EdgeStore(tmp_path / "edge.db")
    now = int(time.time() * 1000)
    with edge.quiet_docs():
        edge.docs.put([documents.normalize("treatments", {"eventType": "Note", "notes": "cloud",
                                                          "created_at": iso(1)}, now)])
    assert edge.doc_outbox_size() == 0
    edge.docs.put([documents.normalize("treatments", {"eventType": "Note", "notes": "here",
                                                      "created_at": iso(2)}, now)])
    due = edge.doc_changes_due(resend_after_s=30, now=time.time())
    assert [c.doc["notes"] for c in due] == ["here"]
    # Entries are not treatments: they reach the cloud as CGM records, not from this queue.
    edge.add_entries([{"type": "sgv", "sgv": 120, "date": now}])
    assert edge.doc_outbox_size() == 1
    edge.close()


@pytest.mark.parametrize("permanent", [False, True])
def test_treatments__a_deletion_is_queued_with_what_names_the_document(tmp_path, permanent):
    edge = EdgeStore(tmp_path / "edge.db")
    now = int(time.time() * 1000)
    row = edge.docs.put([documents.normalize("treatments", {
        "eventType": "Temp Basal", "identifier": "aaps-123", "created_at": iso(1),
        "absolute": 0.5, "duration": 30}, now)])[0].row
    edge.docs.delete([row], permanent=permanent)
    [change] = edge.doc_changes_due(resend_after_s=30, now=time.time())
    assert change.deleted
    assert change.doc["_id"] == row.oid and change.doc["identifier"] == "aaps-123"
    assert change.doc["eventType"] == "Temp Basal"
    edge.close()


def test_treatments__a_node_upgraded_queues_the_treatments_it_already_had(tmp_path,
                                                                         monkeypatch):
    from nightlink.edge.store import schema

    monkeypatch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:3])
    old = EdgeStore(tmp_path / "edge.db")
    now = int(time.time() * 1000)
    kept, gone = old.docs.put([
        documents.normalize("treatments", {"eventType": "Note", "notes": n, "created_at": iso(m)},
                            now) for n, m in (("kept", 2), ("gone", 1))])
    old.docs.delete([gone.row])
    assert old.schema_version() == 3
    old.close()
    monkeypatch.undo()
    new = EdgeStore(tmp_path / "edge.db")
    assert [c.doc["_id"] for c in new.doc_changes_due(resend_after_s=30, now=time.time())] == [
        kept.row.oid]
    new.close()


def test_treatments__a_fast_sender_is_held_to_its_rate_and_loses_nothing(tmp_path, mosquitto):
    edge = EdgeStore(tmp_path / "edge.db")
    topic = topics.treatments_topic(TENANT, edge.device)
    with cloud(f"sqlite:///{tmp_path / 'cloud.db'}", mosquitto, edge.device,
               ingest_rate_per_s=4, ingest_burst=1) as (_store, worker, http):
        for i in range(8):
            doc = {"eventType": "Note", "notes": f"n{i}", "created_at": iso(10 - i)}
            publish(mosquitto, topic, json.dumps({"docs": [{"seq": i + 1, "doc": doc}]}).encode())
        until(lambda: len(cloud_treatments(http)) == 8, 20, "all eight stored")
        assert worker.held > 0 and worker.rejected == 0
    edge.close()


CLOCK = "c10c0000beef"


def test_treatments__a_clock_may_neither_push_nor_pull(tmp_path, mosquitto):
    """A clock's broker login may publish on its own topics and read its own cmd topic; the
    treatments streams are an edge node's alone, or a clock could read the family's history
    or write carbs that hold the bedside low alarm."""
    edge = EdgeStore(tmp_path / "edge.db")
    with cloud(f"sqlite:///{tmp_path / 'cloud.db'}", mosquitto, edge.device) as (
            store, _worker, http):
        store.add_device(CLOCK, TENANT, "clock", f"{TENANT}.{CLOCK}", "-")
        assert http.post("/api/v1/treatments", json={"eventType": "Note", "notes": "private",
                                                     "created_at": iso(3)}).status_code == 200
        answers, got = listener(mosquitto, f"{topics.PREFIX}/{TENANT}/+/#")
        fake = {"eventType": "Carb Correction", "carbs": 80, "created_at": iso(1)}
        clock_topic = topics.treatments_topic(TENANT, CLOCK)
        publish(mosquitto, clock_topic, json.dumps({"docs": [{"seq": 1, "doc": fake}]}).encode())
        publish(mosquitto, clock_topic, json.dumps({"since": 0}).encode())
        until(lambda: len(store.dead_letters()) == 2, 10, "both refused")
        for letter in store.dead_letters():
            assert letter["reason"] == (f"The device {CLOCK} is a clock; only an edge node "
                                        "syncs treatments.")
        assert [t["notes"] for t in cloud_treatments(http)] == ["private"]
        # The edge's pull is answered; nothing was answered to the clock before it (the
        # ingest publishes in order).
        publish(mosquitto, topics.treatments_topic(TENANT, edge.device),
                json.dumps({"since": 0}).encode())
        until(lambda: any(b"private" in m for m in got), 10, "the edge's answer")
        assert [m for m in got if b'"cmd"' in m or b'"seqs"' in m] == [
            m for m in got if b"private" in m]
        answers.loop_stop()
    edge.close()


@pytest.mark.parametrize("bad", [
    b'{"eventType":"No\\u0000te","created_at":"%s"}',
    b'{"eventType":"Meal Bolus","carbs":30,"preBolus":1e308,"created_at":"%s"}',
    b'{"eventType":"Note","absorbed":1e400,"created_at":"%s"}',
], ids=["nul", "overflow", "infinite"])
def test_treatments__one_bad_document_is_refused_alone(tmp_path, mosquitto, cloud_db_url, bad):
    """A document the core's rules or the database cannot take (a NUL that PostgreSQL
    refuses, a time past the year 9999, a number JSON cannot hold) is refused alone: the
    others are stored and every number is acknowledged, so the node does not resend forever."""
    device = "ed9e00000001"
    topic = topics.treatments_topic(TENANT, device)
    with cloud(cloud_db_url, mosquitto, device) as (store, _worker, http):
        acks, got = listener(mosquitto, topics.ack_topic(TENANT, device, topics.TREATMENTS))
        first = {"eventType": "Note", "notes": "first", "created_at": iso(3)}
        last = {"eventType": "Note", "notes": "last", "created_at": iso(1)}
        payload = b'{"docs":[{"seq":1,"doc":%s},{"seq":2,"doc":%s},{"seq":3,"doc":%s}]}' % (
            json.dumps(first).encode(), bad % iso(2).encode(), json.dumps(last).encode())
        publish(mosquitto, topic, payload)
        until(lambda: got, 10, "the ack")
        ack = json.loads(got[-1])
        assert ack["seqs"] == [[1, 3]] and [seq for seq, _why in ack["refused"]] == [2]
        assert sorted(t["notes"] for t in cloud_treatments(http)) == ["first", "last"]
        [letter] = store.dead_letters()
        assert letter["reason"].startswith("treatments change 2: ")
        acks.loop_stop()


def test_treatments__bad_answers_from_the_cloud_do_not_stop_the_sync(tmp_path, mosquitto,
                                                                     caplog):
    """What arrives on the node's cmd topic cannot end its sync thread (glucose goes on it
    too), nor move its cursor past what the cloud can be asked from."""
    from nightlink.shared import codec, features

    caplog.set_level("INFO", logger="nightlink.edge.sync.cloud_link")
    edge = EdgeStore(tmp_path / "edge.db")
    cmd = topics.cmd_topic(TENANT, edge.device)
    with cloud(f"sqlite:///{tmp_path / 'cloud.db'}", mosquitto, edge.device) as (
            store, _worker, http), edge_site(edge) as lan, \
            syncing(edge, mosquitto, pull_every_s=0.2) as client:
        # Connected is not yet subscribed: a message published before the broker has the
        # node's subscription reaches no one. The cloud's first answer to a pull has come
        # through that subscription, so it is in place.
        until(lambda: client.connected and edge.cloud_cursor(topics.TREATMENTS) is not None,
              10, "the node connected and its first pull answered")
        nested = b'{"cmd":"treatments","until":1,"docs":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
        for payload in (b'{"cmd":"treatments","until":1e400,"docs":[]}', nested,
                        b'{"cmd":"treatments","until":1000000000000000000000000000000,'
                        b'"docs":[]}'):
            publish(mosquitto, cmd, payload)

        def ignored():
            return [r for r in caplog.records if "ignoring a malformed message" in r.message]

        until(lambda: len(ignored()) == 3, 10, "the three answers ignored")
        assert ignored()[0].levelname == "WARNING"
        # Glucose still goes up, and the pull still works.
        now_epoch = int(time.time()) // 30
        cgm = codec.quantize_row(features.CGM, (101.0, 1.0, 0.0, 0.0, 5.0, None))
        edge.append(features.CGM, now_epoch, [cgm])
        data = store.tenant(TENANT)
        until(lambda: data.rows(features.CGM, now_epoch, now_epoch + 1), 10, "the glucose row")
        assert http.post("/api/v1/treatments", json={"eventType": "Note", "notes": "later",
                                                     "created_at": iso(1)}).status_code == 200
        until(lambda: [t["notes"] for t in lan.get("/api/v1/treatments").json()] == ["later"],
              10, "the cloud's note on the node")
        assert edge.cloud_cursor(topics.TREATMENTS) < 2**63
    edge.close()


def test_treatments__a_pull_does_not_overwrite_a_local_edit_matched_by_time_and_kind(
        tmp_path):
    """A cloud document without a client identity matches a local one by created_at and
    eventType; when that local one has a change waiting to go up, the local change wins."""
    edge = EdgeStore(tmp_path / "edge.db")
    now = int(time.time() * 1000)
    when = iso(5)
    [local] = edge.docs.put([documents.normalize("treatments", {
        "eventType": "Carb Correction", "carbs": 10, "created_at": when}, now)])
    assert edge.doc_outbox_size() == 1
    theirs = documents.normalize("treatments", {
        "_id": documents.new_oid(), "eventType": "Carb Correction", "carbs": 99,
        "created_at": when}, now)
    applied, skipped = edge.apply_cloud_changes("treatments", [(theirs, False)], now)
    assert (applied, skipped) == (0, 1)
    assert edge.docs.get("treatments", local.row.oid).doc["carbs"] == 10
    # Once the local change is acknowledged, the cloud's version is applied.
    edge.ack_docs([(1, 10**6)])
    applied, skipped = edge.apply_cloud_changes("treatments", [(theirs, False)], now)
    assert (applied, skipped) == (1, 0)
    assert edge.docs.get("treatments", local.row.oid).doc["carbs"] == 99
    edge.close()


def test_treatments__one_batch_at_a_time_so_no_older_edit_lands_last(tmp_path, mosquitto):
    """The next batch of treatment changes waits for the ack of the one before, so ingest
    workers sharing the subscription are rarely handed two changes of one document at once
    (when a resend does it, the cloud keeps the newer: test_treatments_order.py)."""
    edge = EdgeStore(tmp_path / "edge.db")
    topic = topics.treatments_topic(TENANT, edge.device)
    watcher, got = listener(mosquitto, topic)
    now = int(time.time() * 1000)
    first = documents.normalize("treatments", {"eventType": "Note", "notes": "v1",
                                               "created_at": iso(5)}, now)
    edge.docs.put([first], mode="replace")
    try:
        with syncing(edge, mosquitto, pull_every_s=0.2):
            batches = lambda: [json.loads(p) for p in got if b'"docs"' in p]  # noqa: E731
            pulls = lambda: sum(b'"since"' in p for p in got)  # noqa: E731
            until(lambda: batches(), 20, "the first batch")
            [sent] = batches()[0]["docs"]
            assert sent["doc"]["notes"] == "v1"
            edited = dict(first.doc, notes="v2")
            edge.docs.put([documents.normalize("treatments", edited, now)], mode="replace")
            seen = pulls()
            until(lambda: pulls() >= seen + 3, 20, "three more passes of the sync loop")
            assert len(batches()) == 1  # v2 waits: v1 is not acked yet
            publish(mosquitto, topics.ack_topic(TENANT, edge.device, topics.TREATMENTS),
                    json.dumps({"seqs": [[sent["seq"], sent["seq"]]], "refused": []}).encode())
            until(lambda: len(batches()) == 2, 20, "the edit once the first was acked")
            assert [d["doc"]["notes"] for d in batches()[1]["docs"]] == ["v2"]
    finally:
        watcher.loop_stop()
        watcher.disconnect()
        edge.close()


def test_treatments__a_late_copy_of_an_older_batch_changes_nothing(tmp_path, mosquitto,
                                                                  cloud_db_url):
    """The node's first batch delivered again after its edit was stored (a broker's late
    redelivery, a resend on another worker): the cloud acknowledges it and keeps the edit,
    and the node, pulling the cloud's treatments, keeps it too."""
    edge = EdgeStore(tmp_path / "edge.db")
    topic = topics.treatments_topic(TENANT, edge.device)
    with cloud(cloud_db_url, mosquitto, edge.device) as (_store, worker, http), \
            edge_site(edge) as lan:
        spy, got = listener(mosquitto, topic)
        acks, acked = listener(mosquitto, topics.ack_topic(TENANT, edge.device,
                                                           topics.TREATMENTS))
        with syncing(edge, mosquitto, pull_every_s=0.2):
            carbs = {"eventType": "Carb Correction", "carbs": 12, "created_at": iso(3)}
            assert lan.post("/api/v1/treatments", json=carbs).status_code == 200
            until(lambda: [t.get("carbs") for t in cloud_treatments(http)] == [12], 20,
                  "the treatment in the cloud")
            # the broker hands the batch to the ingest and to the spy in no set order
            until(lambda: any(b'"docs"' in p for p in got), 10, "the spy's copy")
            first = next(p for p in got if b'"docs"' in p)
            [oid] = [t["_id"] for t in lan.get("/api/v1/treatments").json()]
            assert lan.put("/api/v1/treatments", json={**carbs, "_id": oid,
                                                       "carbs": 15}).status_code == 200
            until(lambda: [t.get("carbs") for t in cloud_treatments(http)] == [15], 20,
                  "the edit in the cloud")
            until(lambda: edge.doc_outbox_size() == 0, 10, "the outbox emptying")
            [sent] = json.loads(first)["docs"]

            def late_acks():  # the answers naming the first batch's number
                return sum(json.loads(a)["seqs"] == [[sent["seq"], sent["seq"]]] for a in acked)

            # Waiting for any new ack raced the edit's own ack reaching this listener late.
            until(lambda: late_acks() >= 1, 10, "the first batch's own ack heard")
            handled, answers = worker.handled, late_acks()
            publish(mosquitto, topic, first)
            until(lambda: worker.handled > handled and late_acks() > answers, 10,
                  "the late copy handled and acknowledged")
            assert [t.get("carbs") for t in cloud_treatments(http)] == [15]
            pulls = sum(b'"since"' in p for p in got)
            until(lambda: sum(b'"since"' in p for p in got) >= pulls + 2, 10, "two more pulls")
            assert [t.get("carbs") for t in lan.get("/api/v1/treatments").json()] == [15]
        for client in (spy, acks):
            client.loop_stop()
            client.disconnect()
    edge.close()


def test_treatments__an_apps_own_ids_keep_same_second_treatments_apart_across_tiers(
        tmp_path, mosquitto, cloud_db_url):
    """Juggluco PUTs a meal's insulin and carbs as two treatments in the same second, each with
    its own 24-hex _id and eventType "<none>". On the edge, in the cloud after the sync, and
    on a second edge pulling from the cloud they stay two (the id travels as the identifier),
    while documents synced without one still pair up by time and type (test above)."""
    edge = EdgeStore(tmp_path / "edge.db")
    created = iso(10)
    insulin, carbs = "ba0e12" + "b" * 18, "ba0e13" + "b" * 18
    with edge_site(edge) as lan:
        for _id, values in ((insulin, {"insulin": 4.5}), (carbs, {"carbs": 30})):
            r = lan.put("/api/v1/treatments", json={"_id": _id, "eventType": "<none>",
                                                    "created_at": created,
                                                    "enteredBy": "Juggluco", **values})
            assert r.status_code == 200, r.text
        assert {t["_id"] for t in lan.get("/api/v1/treatments").json()} == {insulin, carbs}
    with cloud(cloud_db_url, mosquitto, edge.device) as (store, worker, http):
        assert worker.connected.wait(20)
        with syncing(edge, mosquitto):
            until(lambda: len(cloud_treatments(http)) == 2, 30, "both treatments in the cloud")
        got = {t["_id"]: t for t in cloud_treatments(http)}
        assert got[insulin]["insulin"] == 4.5 and got[carbs]["carbs"] == 30
        other = EdgeStore(tmp_path / "other.db")  # a second node pulls them
        store.add_device(other.device, TENANT, "edge", f"{TENANT}.{other.device}", "-")
        with syncing(other, mosquitto, pull_every_s=0.2):
            until(lambda: len(other.docs.latest("treatments", count=10)) == 2, 30,
                  "both treatments on the second node")
        other.close()
    edge.close()
