"""The clock's sync: its logic under real MicroPython, and the host port against a real broker
and cloud, rebooted (kill -9) in the middle of writing to flash."""

import hashlib
import os
import subprocess
import sys
import time

import pytest

from nightlink.cloud.store import unpack_row
from nightlink.shared import codec, features
from tests.conftest import ROOT
from tests.support.cloud import ingesting_cloud
from tests.support.mpy_board import HOSTPORT

CLOCK = "c0ffee000001"
TENANT = "fam-1"


@pytest.mark.micropython
def test_clock_sync__logic_under_micropython(mpy_json):
    out = mpy_json(ROOT / "tests" / "sync" / "clock_sync_check.py",
                   libs=[ROOT / "shared", ROOT / "device"], heap=192 * 1024)
    assert out["first_pass"] == [1, 2, 3, 4, 5, 6, 7, 8]  # batches of 8, oldest first
    assert out["subscribed"] == [["nl/v1/fam-1/c0ffee000001/+/ack", 1]]
    assert out["after_ack"] == [0, 10]  # everything acknowledged, the file emptied
    assert out["resent_after_gap"] == [4, 5]
    assert out["reconnect"]["connects"] == 2 and out["reconnect"]["backoff_waited"] is True
    # one client, one id, for the clock's whole life; its subscription renewed per session
    assert out["reconnect"]["clients"] == ["nl-clock-c0ffee000001"]
    assert out["reconnect"]["subs_after"] == 2
    assert out["resent_after_reconnect"] == [11, 12]
    assert out["status"] == [{"outbox": 5, "drops": {"room": 3},
                              "dropped": {"room": [[1, 3]]}}]
    assert out["sent_after_drops"] == [4, 5, 6, 7, 8]
    # damaged acks, and acks of rows never written, are ignored whole; a good one still works
    # 2**32 - 1, 1e308, "2" and -1 are no marks; 4, above the last seq, moves the numbering
    assert out["hostile_acks"] == [[], 3, 4, 1, 5]
    assert out["good_ack_after"] == 0
    # after a reflash: numbering goes on after the cloud's old mark, across a reboot; the
    # rows before it are sent first and the first ack above the mark covers them
    assert out["reflash"] == [2, 1001, 1002, 0, [1, 2, 1001]]
    assert out["handler_error"] == ["dropped", 1]  # a handler's error never stops the loop


@pytest.fixture
def cloud(tmp_path, mosquitto):
    with ingesting_cloud(tmp_path, mosquitto, TENANT, CLOCK, "ingest-clock") as pair:
        yield pair


def _expected(n):
    h = hashlib.sha256()
    for seq in range(1, n + 1):
        epoch = 58950540 + seq - 1
        i = epoch % 1000
        vals = (19.0 + (i % 40) / 10.0, 40.0 + i % 20, float(i % 5), 500.0 + i % 700,
                30.0 + i % 10)
        h.update(f"{seq}:{epoch}:{codec.quantize_row(features.ROOM, vals)}".encode())
    return h.hexdigest()


def _stored(store):
    h = hashlib.sha256()
    rows = store.db.query("SELECT seq, epoch, nfeat, row_data FROM epoch_rows WHERE device = ? "
                          "ORDER BY seq", (CLOCK,))
    for r in rows:
        h.update(f"{r['seq']}:{r['epoch']}:{unpack_row(features.ROOM, r['nfeat'], r['row_data'])}"
                 .encode())
    return len(rows), h.hexdigest()


def test_clock_host_port__power_cuts_mid_write_lose_nothing(tmp_path, mosquitto, cloud,
                                                          record_property):
    store, worker = cloud
    n = 300
    env = {**os.environ, "PYTHONPATH": str(HOSTPORT)}
    cmd = [sys.executable, str(HOSTPORT / "run_clock.py"),
           str(tmp_path / "outbox.bin"), mosquitto.host, str(mosquitto.port), TENANT, CLOCK,
           str(n), "0.005"]
    cuts = 0
    for delay in (0.6, 0.9, 1.2):
        with open(tmp_path / "clock.log", "ab") as log:  # never a pipe nobody reads
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log)
        time.sleep(delay)
        proc.kill()  # a power cut: mid-write, mid-publish, wherever it is
        proc.wait()
        cuts += 1
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"done {n}"
    deadline = time.monotonic() + 20
    while _stored(store)[0] < n and time.monotonic() < deadline:
        time.sleep(0.05)
    worker.drain()
    assert _stored(store) == (n, _expected(n))
    assert store.hwm(CLOCK, features.ROOM) == n
    record_property("fault_counts", f"clock power cuts survived: {cuts}; rows {n}; "
                    f"stored {_stored(store)[0]}; duplicates 0")


def test_clock_through_the_edge_bridge_to_the_cloud(tmp_path, cloud, mosquitto):
    """Clock -> LAN broker on the edge (the clock signs in with its own account) -> Mosquitto
    bridge -> cloud broker -> ingest, and the acks back the same way: the clock's outbox
    drains."""
    from nightlink.cloud.broker_config import mosquitto_hash
    from nightlink.cloud.routes.devices import lan_acl
    from nightlink.edge.node.config import load
    from nightlink.edge.sync.bridge import bridge_config, write_broker_files
    from tests.support.services import Broker

    store, worker = cloud
    conf = tmp_path / "edge.toml"
    conf.write_text(f'tenant = "{TENANT}"\n[nightscout]\nenabled = false\n[clocks]\nport = 1\n'
                    f'[sync]\nenabled = true\nhost = "{mosquitto.host}"\n'
                    f"port = {mosquitto.port}\n")
    cfg = load(conf, env={})
    lan_dir = tmp_path / "lan"
    lan_dir.mkdir()
    password = "clock-password-0123456789"
    write_broker_files([{"mqtt_username": f"{TENANT}.{CLOCK}", "kind": "clock",
                         "mqtt_password_hash": mosquitto_hash(password),
                         "acl": lan_acl(TENANT, CLOCK, "clock")}],
                       lan_dir / "passwd", lan_dir / "acl")
    lan = Broker(lan_dir)
    cfg.clocks.port = lan.port
    as_root = "user root\n" if os.geteuid() == 0 else ""  # no drop to a user who cannot read tmp
    lan.conf.write_text(bridge_config(cfg, "ed9e00000001", passwd_file=lan_dir / "passwd",
                                      acl_file=lan_dir / "acl", listen_host="127.0.0.1",
                                      persistence=None, extra=as_root + "log_dest stderr\n"))
    lan.start()
    try:
        n = 60
        env = {**os.environ, "PYTHONPATH": str(HOSTPORT)}
        done = subprocess.run(
            [sys.executable, str(HOSTPORT / "run_clock.py"),
             str(tmp_path / "outbox.bin"), lan.host, str(lan.port), TENANT, CLOCK, str(n),
             "0.001", f"{TENANT}.{CLOCK}", password], env=env, capture_output=True, text=True,
            timeout=120)
        assert done.returncode == 0, done.stderr + lan.log_text()
        deadline = time.monotonic() + 20
        while _stored(store)[0] < n and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _stored(store) == (n, _expected(n))
    finally:
        lan.stop()
