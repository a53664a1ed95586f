"""The ingest worker against what goes wrong around it, with a real Mosquitto and a real store:
a full disk, a lost PostgreSQL connection, a consumer thread that dies or hangs, a broker
that refuses, vanishes or sits behind a slow link, and a device that sends too fast."""

import json
import logging
import random
import re
import subprocess
import sys
import textwrap
import threading
import time
from types import SimpleNamespace

import paho.mqtt.client as mqtt
import pytest
from fastapi.testclient import TestClient

from nightlink.backoff import Backoff
from nightlink.cloud import ingest
from nightlink.cloud.app import create_app
from nightlink.cloud.config import Settings
from nightlink.cloud.ingest import IngestWorker
from nightlink.cloud.store import Store
from nightlink.shared import codec, features, topics
from tests.support.cloud import two_tenants
from tests.support.services import Broker
from tests.support.waiting import until

DEV = "a4cf12b0c3d4"
OTHER = "0123456789ab"
ROW = codec.quantize_row(features.ROOM, (21.0, 40.0, 0.0, 600.0, 30.0))
JWT = "x" + "0123456789abcdef" * 3


def _settings(port, host="127.0.0.1", group="", **extra):
    """Settings with the ingest's own knobs (read with getattr, so any object will do)."""
    base = Settings(env="test", jwt_secret=JWT, mqtt_host=host, mqtt_port=port,
                    mqtt_shared_group=group)
    return SimpleNamespace(**{**base.model_dump(), "mqtt_backoff_max_s": 1.0,
                              "db_backoff_max_s": 0.5, "ingest_stall_s": 1.0, **extra})


def _open(url):
    return two_tenants(url, [(DEV, "fam-1", "edge"), (OTHER, "fam-2", "clock")])


@pytest.fixture
def store(tmp_path):
    s = _open(f"sqlite:///{tmp_path / 'cloud.db'}")
    yield s
    s.close()


def _msg(seq, n=12, dev=DEV):
    rec = codec.Record(features.ROOM, codec.device_id(dev), 1, seq, 58950540 + seq, [ROW] * n)
    return codec.encode(rec)


def _device(broker):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    c.connect(broker.host, broker.port)
    c.loop_start()
    return c


def _publish(client, topic, payload):
    client.publish(topic, payload, qos=1).wait_for_publish(5)


def _rows(store, tenant="fam-1"):
    return store.tenant(tenant).count_rows()


@pytest.fixture
def running(store, mosquitto):
    """Start workers on the store (stopped at the end); returns the starter."""
    workers = []

    def start(**extra):
        worker = IngestWorker(store, _settings(mosquitto.port, **extra),
                              client_id=extra.pop("client_id", ""))
        worker.start()
        workers.append(worker)
        assert worker.connected.wait(10)
        return worker

    yield start
    for w in workers:
        w.stop()


# -- poison through the broker ---------------------------------------------------------------


def test_worker__poison_messages_leave_the_consumer_alive_and_ready(store, mosquitto, running):
    worker = running()
    app = TestClient(create_app(Settings(env="test", jwt_secret=JWT), store))
    device = _device(mosquitto)
    status = topics.status_topic("fam-1", DEV)
    for topic, payload in [
        (topics.data_topic("fam-1", DEV, "snore"), b"NB\x01\x00\x01\x00" + b"\x00" * 8),
        (status, b'{"dropped": [[1, 2]]}'), (status, b'{"drops": ["room"]}'),
        (status, b'{"dropped": {"room": [[1, 1e400]]}}'),
        (status, json.dumps({"dropped": {"room": [[1, 10**30]]}}).encode()),
    ]:
        _publish(device, topic, payload)
    _publish(device, topics.data_topic("fam-1", DEV, "room"), _msg(1))
    until(lambda: _rows(store) == 12 and worker.rejected == 5, what="the good message stored")
    assert worker.restarts == 0 and worker.consumer_trouble() is None
    r = app.get("/readyz")
    assert r.status_code == 200, r.text
    device.loop_stop()
    device.disconnect()


# -- the database ------------------------------------------------------------------------------


def test_worker__full_disk_keeps_the_message_unacknowledged_until_it_clears(
        store, mosquitto, caplog):
    """SQLite says "database or disk is full" (max_page_count stands in for the disk): the
    worker waits it out, /readyz says why, and a restart meanwhile loses nothing, because the
    broker never had the message acknowledged."""
    caplog.set_level(logging.WARNING, logger="nightlink.cloud.ingest")
    app = TestClient(create_app(Settings(env="test", jwt_secret=JWT), store))
    first = IngestWorker(store, _settings(mosquitto.port), client_id="ingest-disk")
    first.start()
    assert first.connected.wait(10)
    pages = store.db.scalar("PRAGMA page_count")
    store.db.query(f"PRAGMA max_page_count = {int(pages)}")
    device = _device(mosquitto)
    _publish(device, topics.data_topic("fam-1", DEV, "room"), _msg(1, n=400))
    until(lambda: first.db_retries >= 2, what="a retried write")
    r = app.get("/readyz")
    assert r.status_code == 503 and "database or disk is full" in r.json()["detail"], r.text
    assert app.get("/healthz").status_code == 200
    assert _rows(store) == 0 and first.consumer_trouble() is None
    first.stop()  # restarted while the disk is still full

    store.db.query("PRAGMA max_page_count = 1073741823")
    second = IngestWorker(store, _settings(mosquitto.port), client_id="ingest-disk")
    second.start()
    try:
        until(lambda: _rows(store) == 400, what="the redelivered message stored")
        assert second.drain()
        until(lambda: app.get("/readyz").status_code == 200, what="ready again")
    finally:
        second.stop()
        device.loop_stop()
        device.disconnect()
    warnings = [r.getMessage() for r in caplog.records if "refused a write" in r.getMessage()]
    assert warnings and all("database or disk is full" in w for w in warnings)
    assert len(warnings) == first.db_retries  # one line per back-off step


def test_process__disk_full_at_commit_is_waited_out(tmp_path):
    """A real write error at COMMIT: the process's file size limit (RLIMIT_FSIZE) makes the
    WAL append fail as a full disk does. The message is tried again until the limit is lifted."""
    url = f"sqlite:///{tmp_path / 'cloud.db'}"
    _open(url).close()
    script = textwrap.dedent(f"""
        import json, resource, signal, threading, time
        from nightlink.cloud.config import Settings
        from nightlink.cloud.ingest import IngestWorker, Message
        from nightlink.cloud.store import Store
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        store = Store.open({url!r})
        settings = Settings(env="test", jwt_secret="x" + "0123456789abcdef" * 3, db_backoff_max_s=0.2)
        worker = IngestWorker(store, settings)
        store.db.query("PRAGMA wal_checkpoint(TRUNCATE)")
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1, hard))
        msg = Message({topics.data_topic("fam-1", DEV, "room")!r}, {_msg(1)!r})
        thread = threading.Thread(target=worker._deliver, args=(msg, worker._gen))
        thread.start()
        deadline = time.monotonic() + 10
        while worker.db_retries < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        seen = worker._db_error
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        thread.join(10)
        print(json.dumps({{"retries": worker.db_retries, "seen": seen, "alive": thread.is_alive(),
                          "rows": store.tenant("fam-1").count_rows(), "after": worker._db_error}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["retries"] >= 3 and "disk I/O error" in got["seen"], got
    assert (got["rows"], got["alive"], got["after"]) == (12, False, None), got


def test_worker__lost_postgresql_connection_is_waited_out(postgres_server, mosquitto):
    import psycopg

    url = postgres_server.create_database("t" + random.randbytes(6).hex())
    store = _open(url)
    worker = IngestWorker(store, _settings(mosquitto.port))
    worker.start()
    device = _device(mosquitto)
    try:
        assert worker.connected.wait(10)
        _publish(device, topics.data_topic("fam-1", DEV, "room"), _msg(1))
        until(lambda: worker.handled == 1, what="the first message stored")
        dbname = url.rsplit("/", 1)[-1]
        with psycopg.connect(postgres_server.url(), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = %s AND pid <> pg_backend_pid()", (dbname,))
        _publish(device, topics.data_topic("fam-1", DEV, "room"), _msg(13))
        until(lambda: worker.handled == 2, what="the second message stored")
        check = Store.open(url)
        # the database layer opens a new connection for the dropped one (nightlink/sql.py):
        # the message is stored, the consumer never restarted
        assert _rows(check) == 24 and worker.restarts == 0
        check.close()
    finally:
        worker.stop()
        device.loop_stop()
        device.disconnect()
        store.close()


# -- the supervisor ------------------------------------------------------------------------------


def _trap(monkeypatch, payload, action):
    """Make handle() run `action` for one payload (a bug, a hang) and behave otherwise."""
    real = ingest.handle

    def handle(store, topic, body, **options):
        if body == payload:
            action()
        return real(store, topic, body, **options)

    monkeypatch.setattr(ingest, "handle", handle)


def test_supervisor__a_dead_consumer_is_restarted_and_its_message_dead_lettered(
        store, mosquitto, running, monkeypatch):
    def die():
        raise SystemExit("the consumer thread ends here")

    _trap(monkeypatch, b"die", die)
    worker = running()
    device = _device(mosquitto)
    _publish(device, topics.data_topic("fam-1", DEV, "room"), b"die")
    _publish(device, topics.data_topic("fam-1", DEV, "room"), _msg(1))
    until(lambda: _rows(store) == 12, what="the message behind it stored")
    assert worker.restarts == 1
    assert [d["reason"] for d in store.dead_letters()] == [
        "The ingest consumer thread died handling this message (SystemExit: the consumer "
        "thread ends here)."]
    assert worker.drain() and worker.consumer_trouble() is None
    device.loop_stop()
    device.disconnect()


def test_supervisor__a_stalled_consumer_is_replaced(store, mosquitto, running, monkeypatch):
    release = threading.Event()
    _trap(monkeypatch, b"hang", lambda: release.wait(30))
    worker = running()
    device = _device(mosquitto)
    _publish(device, topics.data_topic("fam-1", DEV, "room"), b"hang")
    until(lambda: worker.consumer_trouble() is not None or worker.restarts,
           what="the stall noticed")
    _publish(device, topics.data_topic("fam-1", DEV, "room"), _msg(1))
    until(lambda: _rows(store) == 12, what="the message behind the hung one stored")
    assert worker.restarts == 1
    release.set()
    until(lambda: worker.drain(0.1) and worker.rejected == 1, what="the hung one finished")
    assert [d["payload"] for d in store.dead_letters()] == [b"hang"]  # handled once
    assert worker.restarts == 1 and worker.consumer_trouble() is None
    device.loop_stop()
    device.disconnect()


def test_readyz__503_while_the_broker_is_away(store, mosquitto, running):
    worker = running()
    app = TestClient(create_app(Settings(env="test", jwt_secret=JWT), store))
    assert app.get("/readyz").status_code == 200
    mosquitto.stop()
    until(lambda: app.get("/readyz").status_code == 503, what="not ready")
    detail = app.get("/readyz").json()["detail"]
    assert f"not connected to the MQTT broker at 127.0.0.1:{mosquitto.port}" in detail
    assert app.get("/healthz").status_code == 200
    mosquitto.start()
    until(lambda: app.get("/readyz").status_code == 200, what="ready again")
    assert worker.connected.is_set()


def test_readyz__a_worker_not_running_is_not_ready(store):
    worker = IngestWorker(store, _settings(1))
    assert worker.problem() == "the ingest worker is not running"


# -- the broker link ---------------------------------------------------------------------------


def test_backoff__doubles_to_its_ceiling_with_jitter():
    delays = [Backoff(0.5, 30, rng=random.Random(seed)).next() for seed in range(20)]
    assert all(0.25 <= d <= 0.5 for d in delays) and len(set(delays)) == 20
    backoff = Backoff(0.5, 30, rng=random.Random(1))
    steps = [backoff.next() for _ in range(10)]
    bounds = [min(0.5 * 2**i, 30) for i in range(10)]
    assert all(b / 2 <= d <= b for d, b in zip(steps, bounds, strict=True))


def _attempts(caplog):
    return [r for r in caplog.records if r.levelno == logging.WARNING
            and "trying the broker" in r.getMessage()]


@pytest.mark.parametrize("fault", ["refused login", "nothing listening"])
def test_link__failures_back_off_with_jitter_and_say_why(store, tmp_path, caplog, fault):
    caplog.set_level(logging.WARNING, logger="nightlink.cloud.ingest")
    broker = None
    if fault == "refused login":
        broker = Broker(tmp_path, anonymous=False).start()
        port = broker.port
    else:
        from tests.support.services import free_port

        port = free_port()
    worker = IngestWorker(store, _settings(port, mqtt_backoff_max_s=2.0))
    worker.start()
    try:
        until(lambda: len(_attempts(caplog)) >= 4, timeout=15, what="four attempts")
        assert not worker.connected.is_set()
        assert "not connected to the MQTT broker" in worker.problem()
    finally:
        worker.stop()
        if broker is not None:
            broker.stop()
    lines = [r.getMessage() for r in _attempts(caplog)]
    why = "refused the login" if fault == "refused login" else "cannot reach the broker"
    assert all(why in line for line in lines), lines
    delays = [float(re.search(r"again in ([\d.]+) s", line).group(1)) for line in lines]
    for i, d in enumerate(delays[:4]):
        ceiling = min(0.5 * 2**i, 2.0)
        assert ceiling / 2 - 0.05 <= d <= ceiling + 0.05, delays


@pytest.mark.parametrize("rtt_s", [0.15, 0.3, 1.0])
def test_link__connects_and_stores_through_a_slow_link(store, mosquitto, rtt_s):
    from tests.support.delayproxy import DelayProxy

    with DelayProxy(mosquitto.host, mosquitto.port, rtt_s=rtt_s, loss=0.02, seed=1) as proxy:
        worker = IngestWorker(store, _settings(proxy.port, mqtt_connect_timeout_s=10.0))
        started = time.monotonic()
        worker.start()
        device = _device(mosquitto)
        try:
            assert worker.connected.wait(20)
            took = time.monotonic() - started
            _publish(device, topics.data_topic("fam-1", DEV, "room"), _msg(1))
            until(lambda: _rows(store) == 12, what="the message stored")
            # One attempt, which waited out two round trips (CONNECT/CONNACK, SUBSCRIBE/SUBACK).
            assert proxy.connections == 1 and took >= 2 * rtt_s * 0.95
        finally:
            worker.stop()
            device.loop_stop()
            device.disconnect()


# -- the rate limit ------------------------------------------------------------------------------


def test_rate_limit__a_fast_device_is_slowed_down_and_loses_nothing(store, mosquitto, running,
                                                                     record_property):
    worker = running(ingest_rate_per_s=20.0, ingest_burst=5)
    device = _device(mosquitto)
    topic = topics.data_topic("fam-1", DEV, "room")
    started = time.monotonic()
    for i in range(40):
        device.publish(topic, _msg(1 + 12 * i), qos=1)
    for i in range(3):
        device.publish(topics.data_topic("fam-2", OTHER, "room"), _msg(1 + 12 * i, dev=OTHER),
                       qos=1)
    until(lambda: _rows(store) == 480 and _rows(store, "fam-2") == 36, timeout=20,
           what="every message stored")
    took = time.monotonic() - started
    assert worker.drain()
    assert worker.handled == 43 and worker.rejected == 0
    assert 0 < worker.held <= 35  # only the fast device was held back
    assert took >= (40 - 5) / 20 * 0.9
    assert store.advance_hwm(DEV, features.ROOM) == 480
    record_property("fault_counts", f"rate limit 20/s burst 5: 40 messages held {worker.held} "
                    f"times, all stored in {took:.1f} s, none refused")
    device.loop_stop()
    device.disconnect()


def test_postgres__a_dropped_idle_connection_costs_no_statement(postgres_server):
    """PostgreSQL restarted (or an admin ended the sessions): each thread's idle connection
    is dead and its next statement fails. Outside a transaction it runs again on a new
    connection (nightlink/sql.py), so the API's next request gets no 500 for it."""
    import psycopg

    from nightlink.sql import DatabaseError, connect

    url = postgres_server.create_database("t" + random.randbytes(6).hex())
    db = connect(url)
    try:
        db.execute("CREATE TABLE t (x INTEGER)")
        db.execute("INSERT INTO t (x) VALUES (?)", (1,))
        dbname = url.rsplit("/", 1)[-1]

        def kill():
            with psycopg.connect(postgres_server.url(), autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = %s AND pid <> pg_backend_pid()", (dbname,))

        kill()
        assert db.scalar("SELECT COUNT(*) FROM t") == 1
        kill()
        with db.transaction():  # the transaction's first statement reconnects too
            db.execute("INSERT INTO t (x) VALUES (?)", (2,))
        assert db.scalar("SELECT SUM(x) FROM t") == 3
        # A session ended inside a transaction: nothing of it is run again outside it.
        kill()
        with pytest.raises(DatabaseError), db.transaction():
            db.execute("INSERT INTO t (x) VALUES (?)", (4,))
            kill()
            db.execute("INSERT INTO t (x) VALUES (?)", (8,))
        assert db.scalar("SELECT SUM(x) FROM t") == 3
    finally:
        db.close()
