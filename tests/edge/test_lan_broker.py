"""The edge's LAN broker with the clocks' own logins, end to end on this machine: the real
cloud (uvicorn) registers the edge and provisions a clock through the CLI; the edge fetches
the tenant's accounts and writes its broker files and mosquitto.conf; a real Mosquitto runs
that configuration, bridged to a cloud Mosquitto with the cloud's own broker files; the
edge node publishes its glucose feed there; the clock firmware (host port) signs in with the
provisioned account and shows the reading, and its room records reach the cloud's ingest
through the bridge. A clock with a wrong password is refused, and the emulator says so."""

import asyncio
import grp
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from nightlink.cli import main
from nightlink.cloud.app import create_app
from nightlink.cloud.auth import hash_password
from nightlink.cloud.broker_config import mosquitto_files
from nightlink.cloud.config import Settings
from nightlink.cloud.ingest import IngestWorker
from nightlink.edge.node.config import load
from nightlink.edge.node.live_node import LiveNode
from nightlink.edge.sources.cgm import glucose_to_entry
from nightlink.edge.sources.samples import Glucose
from nightlink.edge.store import EdgeStore
from nightlink.edge.sync import bridge
from nightlink.errors import NightlinkError
from nightlink.shared import features, topics
from nightlink.tools.device import emulate
from nightlink.tools.device.build import read_fs_image
from tests.support.mpy_board import HOSTPORT
from tests.support.servers import serve
from tests.support.services import Broker

TENANT = "fam-1"
PASSWORD = "correct horse battery"
INGEST = ("ingest", "ingest-password-0123456789")
LAN_ACCOUNTS = "/api/nl/v1/tenants/{}/devices/lan-accounts"
AS_ROOT = "user root\n" if os.geteuid() == 0 else ""  # tmp dirs are root's own: no drop


def cli(*args, env=None):
    return CliRunner().invoke(main, list(args), env={"NIGHTLINK_EMAIL": "pat@example.org",
                                                     "NIGHTLINK_PASSWORD": PASSWORD,
                                                     **(env or {})})


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    """The cloud (API and its broker), the edge registered and configured, one clock
    provisioned against the edge's LAN broker; the brokers are not started yet."""
    root = tmp_path_factory.mktemp("lan")
    for d in ("cloud-broker", "lan", "clock"):
        (root / d).mkdir()
    cloud_broker = Broker(root / "cloud-broker", anonymous=False)
    lan = Broker(root / "lan")
    settings = Settings(env="test", database_url=f"sqlite:///{root / 'cloud.db'}",
                        jwt_secret="test-secret-" + "x" + "0123456789abcdef" * 3, mqtt_host=cloud_broker.host,
                        mqtt_port=cloud_broker.port, mqtt_username=INGEST[0],
                        mqtt_password=INGEST[1], login_attempts_per_minute=1000)
    app = create_app(settings)
    store = app.state.store
    store.create_tenant(TENANT, "Family one")
    store.create_tenant("fam-2", "Family two")
    user = store.create_user("pat@example.org", hash_password(PASSWORD))
    store.grant(TENANT, user["id"], "patient", by=None)
    edge_db = root / "edge.db"
    with serve(app) as url:
        r = cli("edge", "id", "--db", str(edge_db))
        assert r.exit_code == 0, r.output
        edge_id = r.output.strip()
        r = cli("device", "register-edge", "--cloud", url, "--tenant", TENANT, "--edge-id",
                edge_id, "--out", str(root / "edge-account.toml"))
        assert r.exit_code == 0, r.output
        edge_toml = root / "edge.toml"
        edge_toml.write_text(
            f'tenant = "{TENANT}"\nclose_delay_s = 0.5\n[audio]\nenabled = false\n'
            f'[nightscout]\nenabled = false\n[clocks]\nenabled = true\nhost = "{lan.host}"\n'
            f"port = {lan.port}\n" + (root / "edge-account.toml").read_text())
        r = cli("device", "provision", "--cloud", url, "--tenant", TENANT, "--name",
                "Nightstand", "--wifi", "home:correct horse", "--edge", lan.host,
                "--mqtt-port", str(lan.port), "--out", str(root / "clock"))
        assert r.exit_code == 0, r.output
        image = (root / "clock" / "fs-esp32.img").read_bytes()
        clock_cfg = json.loads(read_fs_image(image)["config.json"])
        output = r.output
        r = cli("device", "provision", "--cloud", url, "--tenant", TENANT, "--name",
                "Kitchen", "--wifi", "home:correct horse", "--edge", lan.host,
                "--mqtt-port", str(lan.port), "--out", str(root / "clock2"))
        assert r.exit_code == 0, r.output
        other = json.loads(read_fs_image((root / "clock2" / "fs-esp32.img").read_bytes())[
            "config.json"])
        yield {"url": url, "store": store, "settings": settings, "root": root,
               "edge_id": edge_id, "edge_toml": edge_toml, "edge_db": edge_db,
               "clock": clock_cfg, "other_clock": other, "provision_output": output,
               "cloud_broker": cloud_broker, "lan": lan}
    store.close()


def _clock_feed_spoof_heard(lan, listener: dict, spoofer: dict) -> list[str]:
    """What one clock hears on the feed after another clock publishes a glucose and a time
    below its own prefix: only the edge's retained reading."""
    import paho.mqtt.client as mqtt

    heard, got = [], threading.Event()

    def on_message(_c, _u, msg):
        body = json.loads(msg.payload)
        heard.append(f"{msg.topic.rsplit('/', 1)[-1]} {body.get('sgv', body.get('t'))}")
        got.set()

    def client(cfg, role):
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=role + cfg["device"]["id"])
        c.username_pw_set(cfg["mqtt"]["user"], cfg["mqtt"]["password"])
        c.connect(lan.host, lan.port)
        c.loop_start()
        return c

    ear = client(listener, "ear-")
    ear.on_message = on_message
    mouth = client(spoofer, "mouth-")
    try:
        ear.subscribe(topics.clock_feed_filter(TENANT), 1)
        assert got.wait(10), "the edge's retained reading"
        prefix = topics.device_prefix(TENANT, spoofer["device"]["id"])
        mouth.publish(prefix + "clock/glucose", json.dumps({"t": int(time.time()), "sgv": 40}),
                      1).wait_for_publish(5)
        mouth.publish(prefix + "clock/time", json.dumps({"t": 1_900_000_000}),
                      1).wait_for_publish(5)
        time.sleep(1.0)
    finally:
        for c in (ear, mouth):
            c.loop_stop()
            c.disconnect()
    return heard


def test_lan_accounts__only_the_tenants_edge_gets_them(rig):
    url, store = rig["url"], rig["store"]
    sync = load(rig["edge_toml"], env={}).sync
    clock = rig["clock"]["mqtt"]
    path = LAN_ACCOUNTS.format(TENANT)
    with httpx.Client(base_url=url) as http:
        assert http.get(path).status_code == 401
        assert http.get(path, auth=(sync.username, sync.password + "x")).status_code == 401
        r = http.get(path, auth=(clock["user"], clock["password"]))
        assert r.status_code == 403 and "is a clock" in r.json()["detail"]
        assert http.get(LAN_ACCOUNTS.format("fam-2"),
                        auth=(sync.username, sync.password)).status_code == 401
        r = http.get(path, auth=(sync.username, sync.password))
    assert r.status_code == 200
    accounts = {a["mqtt_username"]: a for a in r.json()["accounts"]}
    assert set(accounts) == {sync.username, clock["user"], rig["other_clock"]["mqtt"]["user"]}
    row = store.device(rig["clock"]["device"]["id"])
    assert accounts[clock["user"]]["mqtt_password_hash"] == row["mqtt_password_hash"]
    prefix = f"nl/v1/{TENANT}/{rig['clock']['device']['id']}/"
    assert accounts[clock["user"]]["acl"] == [
        f"user {clock['user']}", f"topic write {prefix}#", f"topic read {prefix}+/ack",
        f"topic read {prefix}cmd", f"topic deny {prefix}clock/#",
        f"topic read nl/v1/{TENANT}/+/clock/+"]
    assert accounts[sync.username]["acl"] == [
        f"user {sync.username}", f"topic read nl/v1/{TENANT}/+/+",
        f"topic write nl/v1/{TENANT}/{rig['edge_id']}/clock/+"]


def _run_node(node, stop_flag):
    """The edge node in its own thread (its own event loop) until stop_flag is set."""
    async def main_():
        stop = asyncio.Event()

        async def watch():
            while not stop_flag.is_set():
                await asyncio.sleep(0.05)
            stop.set()
        await asyncio.gather(node.run(stop), watch())

    thread = threading.Thread(target=asyncio.run, args=(main_(),), daemon=True)
    thread.start()
    return thread


def test_lan_files__the_ones_the_lan_broker_reads_when_not_given(tmp_path, monkeypatch):
    """Letting a clock in later (`broker-files --cloud URL --config FILE`, as provisioning
    prints it) writes the files the running LAN broker reads, and names its unit: before, it
    wrote /etc/mosquitto/nightlink.* beside a nightlink-mosquitto@edge that never read them."""
    unit = tmp_path / "nightlink" / "broker-edge"
    unit.mkdir(parents=True)
    (unit / "mosquitto.conf").write_text(f"listener 1883 0.0.0.0\npassword_file {unit}/passwd"
                                         f"\nacl_file {unit}/acl\nallow_anonymous false\n")
    monkeypatch.setattr(bridge, "UNIT_CONF", unit / "mosquitto.conf")
    assert bridge.lan_files(None, None, None) == (
        unit / "passwd", unit / "acl", "systemctl reload nightlink-mosquitto@edge")
    second = tmp_path / "nightlink" / "broker-kid2"  # a second edge's broker (docs/deploy.md)
    second.mkdir()
    (second / "mosquitto.conf").write_text(f"password_file {second}/passwd\n"
                                           f"acl_file {second}/acl\n")
    assert bridge.lan_files(None, None, second / "mosquitto.conf") == (
        second / "passwd", second / "acl", "systemctl reload nightlink-mosquitto@kid2")
    (second / "mosquitto.conf").write_text(f"password_file\t{second}/passwd\n"  # a tab
                                           f"acl_file   {second}/acl\n")
    assert bridge.lan_files(None, None, second / "mosquitto.conf")[:2] == (
        second / "passwd", second / "acl")
    new = tmp_path / "nightlink" / "broker-kid3" / "mosquitto.conf"  # written by this run
    assert bridge.lan_files(None, None, new) == (
        new.parent / "passwd", new.parent / "acl", "systemctl reload nightlink-mosquitto@kid3")
    (second / "mosquitto.conf").write_text(f"password_file {second}/users\n")  # one named
    assert bridge.lan_files(None, None, second / "mosquitto.conf")[:2] == (
        second / "users", second / "acl")
    with pytest.raises(NightlinkError, match="cannot be read"):  # not Debian's files instead
        bridge.lan_files(None, None, second)  # (a folder: as a file root may not read)
    given = (tmp_path / "p", tmp_path / "a")
    assert bridge.lan_files(*given, None) == (*given, "systemctl reload mosquitto")
    monkeypatch.setattr(bridge, "UNIT_CONF", tmp_path / "none" / "mosquitto.conf")
    assert bridge.lan_files(None, None, None) == (  # Debian's own broker serves the clocks
        Path(bridge.DEFAULT_PASSWD), Path(bridge.DEFAULT_ACL), "systemctl reload mosquitto")


def test_clock_signs_in_at_the_edge_and_shows_its_feed(rig, record_property):
    root, store = rig["root"], rig["store"]
    assert rig["clock"]["mqtt"] == {**rig["clock"]["mqtt"], "host": rig["lan"].host,
                                    "port": rig["lan"].port, "tls": False}
    assert "on the edge: nightlink edge broker-files --cloud" in rig["provision_output"]
    # The cloud's broker, with the cloud's own files: the bridge signs in as the edge.
    cb = rig["cloud_broker"]
    mosquitto_files(store, root / "cloud-broker" / "acl", root / "cloud-broker" / "passwd",
                    ingest_username=INGEST[0], ingest_password=INGEST[1])
    cb.conf.write_text(cb.conf.read_text() + AS_ROOT
                       + f"password_file {root / 'cloud-broker' / 'passwd'}\n"
                       + f"acl_file {root / 'cloud-broker' / 'acl'}\n")
    cb.start()
    # The edge writes its LAN broker's files and configuration from the cloud's list.
    lan = rig["lan"]
    lan_dir = root / "lan"
    t0 = time.monotonic()
    r = cli("edge", "broker-files", "--cloud", rig["url"], "--config", str(rig["edge_toml"]),
            "--db", str(rig["edge_db"]), "--passwd", str(lan_dir / "passwd"), "--acl",
            str(lan_dir / "acl"), "--conf", str(lan.conf), "--listen", lan.host,
            "--persistence", "")
    assert r.exit_code == 0, r.output
    assert r.output.startswith(f"Wrote {lan_dir / 'passwd'} and {lan_dir / 'acl'}: 2 clocks "
                               f"and 1 edge accounts of tenant {TENANT}")
    assert r.output.rstrip().endswith("Reload the LAN broker to use them: systemctl reload "
                                      "mosquitto."), r.output  # not a unit's folder
    for path in (lan_dir / "passwd", lan_dir / "acl", lan.conf):  # the conf: bridge password
        assert oct(path.stat().st_mode & 0o777) == "0o640"
    if os.geteuid() == 0:  # new files for a broker that drops to the user mosquitto
        assert (lan_dir / "passwd").stat().st_gid == grp.getgrnam("mosquitto").gr_gid
        assert lan.conf.stat().st_gid == 0  # a rewritten file keeps its group
    conf = lan.conf.read_text()
    assert "allow_anonymous false\n" in conf and f"password_file {lan_dir / 'passwd'}\n" in conf
    lan.conf.write_text(conf + AS_ROOT + "log_dest stderr\nlog_type error\nlog_type warning\n")
    lan.start()
    ingest = IngestWorker(store, rig["settings"], client_id="ingest-lan")
    ingest.start()
    edge_cfg = load(rig["edge_toml"], env={})
    edge_store = EdgeStore(rig["edge_db"])
    now = time.time()
    edge_store.add_entries([glucose_to_entry(Glucose(t=now - 60, sgv=123), "cgm")])
    stop = threading.Event()
    node_thread = _run_node(LiveNode(edge_cfg, edge_store), stop)
    try:
        assert ingest.connected.wait(10), cb.log_text()
        deadline = time.monotonic() + 15
        while edge_store.sources().get("clocks", {}).get("state") != "subscribed":
            assert time.monotonic() < deadline, lan.log_text()
            time.sleep(0.05)
        # The clock firmware signs in with its provisioned account and shows the reading.
        cfg_file = root / "clock" / "config.json"
        cfg_file.write_text(json.dumps(rig["clock"]))
        events = []
        end = emulate.run(["--config", str(cfg_file), "--out", str(root / "clock" / "screens"),
                           "--speed", "60", "--minutes", "2"], timeout=60,
                          echo=lambda line: events.append(json.loads(line)))
        shown = [e["sgv"] for e in events if e["event"] == "screen" and e["sgv"] is not None]
        assert shown and shown[-1] == 123, events
        assert end["broker_refused"] == 0 and end["broker_unreachable"] == 0
        # A clock cannot feed the others: its own "glucose" or "time" is refused.
        assert _clock_feed_spoof_heard(lan, rig["clock"], rig["other_clock"]) == \
            ["glucose 123"]
        # Its room records go through the bridge to the cloud's ingest, acks come back.
        clock_id = rig["clock"]["device"]["id"]
        done = subprocess.run(
            [sys.executable, str(HOSTPORT / "run_clock.py"), str(root / "clock" / "outbox.bin"),
             lan.host, str(lan.port), TENANT, clock_id, "20", "0.001",
             rig["clock"]["mqtt"]["user"], rig["clock"]["mqtt"]["password"]],
            env={**os.environ, "PYTHONPATH": str(HOSTPORT)}, capture_output=True, text=True,
            timeout=60)
        assert done.returncode == 0, done.stderr + lan.log_text() + cb.log_text()
        assert store.hwm(clock_id, features.ROOM) == 20
        # A clock with a wrong password is refused, and the emulator says so.
        bad = json.loads(json.dumps(rig["clock"]))
        bad["mqtt"]["password"] = "not-the-provisioned-password"
        bad_file = root / "clock" / "bad.json"
        bad_file.write_text(json.dumps(bad))
        r = cli("device", "emulate", "--config", str(bad_file), "--out",
                str(root / "clock" / "bad-screens"), "--speed", "60", "--minutes", "2",
                "--quiet")
        assert r.exit_code == 0, r.output
        refused = (f"The broker at {lan.host}:{lan.port} refused the clock's login "
                   f"{bad['mqtt']['user']} (not authorised): check the config's mqtt user and "
                   "password")
        assert r.stderr.startswith(refused), r.stderr
        assert len(r.stderr.splitlines()) == 1  # one sentence, not one per retry
        end = json.loads(r.stdout.strip().splitlines()[-1])
        assert end["broker_refused"] >= 1
        record_property("lan_broker", f"edge files, LAN broker, clock feed and bridge in "
                        f"{time.monotonic() - t0:.1f} s")
    finally:
        stop.set()
        node_thread.join(15)
        ingest.stop()
        edge_store.close()
        lan.stop()
        cb.stop()
