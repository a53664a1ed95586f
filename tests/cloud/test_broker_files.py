"""`nightlink cloud broker-files` against a real Mosquitto that starts as root and drops to the
user `mosquitto`, as Debian's package runs it: the files it writes stay readable by that user
after every rewrite and SIGHUP, and the configuration it writes starts a TLS broker."""

import datetime
import grp
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from nightlink.cloud.broker_config import mosquitto_hash, new_device_password
from nightlink.cloud.store import Store
from tests.support.services import free_port, mosquitto_binary, needs_mosquitto_user

INGEST_PASSWORD = "ingest-" + "p" * 30
DEVICES = ["a4cf12b0c3d4", "a4cf12b0c3d5"]


@pytest.fixture
def shared_dir():
    """A folder the user mosquitto can reach (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="nl-broker-", dir="/tmp"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _run(env, *args):
    return subprocess.run([sys.executable, "-m", "nightlink", "cloud", *args], env=env,
                          capture_output=True, text=True, timeout=60)


def _self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (root-only, as keys are made)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    cert_path.chmod(0o644)
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


class TlsBroker:
    """Mosquitto run with exactly the configuration broker-files wrote."""

    def __init__(self, conf: Path, port: int, log: Path):
        self.conf, self.port, self.log = conf, port, log
        self.proc = None

    def start(self):
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([mosquitto_binary(), "-c", str(self.conf), "-v"],
                                         stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text(errors="replace")[-2000:]
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        raise AssertionError(f"mosquitto did not listen: {self.log.read_text()[-2000:]}")

    def reload(self):
        """SIGHUP, then wait until the broker logged that it reloaded (it reloads in its one
        thread, so a connection made after that line meets the new files)."""
        before = self.log.read_text(errors="replace").count("Reloading config")
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while self.log.read_text(errors="replace").count("Reloading config") == before:
            assert time.monotonic() < deadline, "mosquitto logged no reload within 10 s"
            time.sleep(0.05)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def _client(port, username, password, ca):
    """A TLS MQTT client that has connected (or been refused): (client, reason code)."""
    import paho.mqtt.client as mqtt

    answered, result = threading.Event(), {}

    def on_connect(_c, _u, _f, reason_code, _p):
        result["rc"] = reason_code
        answered.set()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.username_pw_set(username, password)
    client.tls_set(ca_certs=str(ca))
    client.on_connect = on_connect
    client.connect("127.0.0.1", port, keepalive=30)
    client.loop_start()
    assert answered.wait(10), "no CONNACK within 10 s"
    return client, result["rc"]


def _login(port, username, password, ca) -> bool:
    client, rc = _client(port, username, password, ca)
    client.loop_stop()
    client.disconnect()
    return not rc.is_failure


def test_broker_files__broker_dropping_to_mosquitto_reads_them_after_every_rewrite(
        tmp_path, shared_dir):
    needs_mosquitto_user()
    url = f"sqlite:///{tmp_path / 'cloud.db'}"
    store = Store.open(url)
    store.create_tenant("fam-1", "One")
    passwords = {d: new_device_password() for d in DEVICES}
    store.add_device(DEVICES[0], "fam-1", "clock", f"fam-1.{DEVICES[0]}",
                     mosquitto_hash(passwords[DEVICES[0]]))
    store.close()
    cert, key = _self_signed(shared_dir)
    persist = shared_dir / "persist"
    persist.mkdir()
    mosquitto = pwd.getpwnam("mosquitto")
    os.chown(persist, mosquitto.pw_uid, mosquitto.pw_gid)
    port = free_port()
    env = {**os.environ, "NIGHTLINK_DATABASE_URL": url, "NIGHTLINK_MQTT_USERNAME": "ingest",
           "NIGHTLINK_MQTT_PASSWORD": INGEST_PASSWORD}
    env.pop("NIGHTLINK_JWT_SECRET", None)  # these commands sign nothing
    files = dict(acl=shared_dir / "acl", passwd=shared_dir / "passwd",
                 conf=shared_dir / "mosquitto.conf")
    args = ["broker-files", "--acl", str(files["acl"]), "--passwd", str(files["passwd"]),
            "--conf", str(files["conf"]), "--port", str(port), "--bind", "127.0.0.1",
            "--certfile", str(cert), "--keyfile", str(key), "--persistence-dir", str(persist)]
    first = _run(env, *args)
    assert first.returncode == 0, first.stderr
    assert f"listens on port {port} of 127.0.0.1." in first.stdout
    # Mosquitto 2 opens the key only once it runs as mosquitto: a root-only key is named.
    assert f"warning: Mosquitto 2 opens {key} only after dropping" in first.stderr
    os.chown(key, 0, grp.getgrnam("mosquitto").gr_gid)
    key.chmod(0o640)
    group = grp.getgrnam("mosquitto").gr_gid
    for path in files.values():
        st = path.stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, group, 0o640), path
    broker = TlsBroker(files["conf"], port, shared_dir / "mosquitto.log").start()
    ingest = None
    try:
        assert _login(port, f"fam-1.{DEVICES[0]}", passwords[DEVICES[0]], cert)
        assert not _login(port, f"fam-1.{DEVICES[0]}", "wrong-" + "x" * 20, cert)
        ingest, rc = _client(port, "ingest", INGEST_PASSWORD, cert)
        assert not rc.is_failure, rc
        received = []
        got = threading.Event()
        ingest.on_message = lambda _c, _u, msg: (received.append(msg.topic), got.set())
        ingest.subscribe("nl/v1/#", qos=1)
        # A second device is provisioned; the files are written again and the broker,
        # by now running as mosquitto, reloads them.
        store = Store.open(url)
        store.add_device(DEVICES[1], "fam-1", "clock", f"fam-1.{DEVICES[1]}",
                         mosquitto_hash(passwords[DEVICES[1]]))
        store.close()
        again = _run(env, *args)
        assert again.returncode == 0, again.stderr
        assert "Wrote " in again.stdout and "(2 devices)" in again.stdout
        for path in files.values():
            st = path.stat()
            assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, group, 0o640)
        broker.reload()
        for device in DEVICES:
            assert _login(port, f"fam-1.{device}", passwords[device], cert), device
        assert _login(port, "ingest", INGEST_PASSWORD, cert)
        new, rc = _client(port, f"fam-1.{DEVICES[1]}", passwords[DEVICES[1]], cert)
        new.publish(f"nl/v1/fam-1/{DEVICES[1]}/room", b"x", qos=1).wait_for_publish(10)
        new.loop_stop()
        new.disconnect()
        assert got.wait(10), "the ingest account, connected before the reload, got nothing"
        assert received == [f"nl/v1/fam-1/{DEVICES[1]}/room"]
        log = (shared_dir / "mosquitto.log").read_text(errors="replace")
        assert "Unable to open" not in log, log[-2000:]
    finally:
        if ingest is not None:
            ingest.loop_stop()
            ingest.disconnect()
        broker.stop()


def _files(tmp_path, url, *extra):
    env = {**os.environ, "NIGHTLINK_DATABASE_URL": url}
    return _run(env, "broker-files", "--acl", str(tmp_path / "acl"), "--passwd",
                str(tmp_path / "passwd"), *extra)


@pytest.fixture
def one_device(tmp_path):
    url = f"sqlite:///{tmp_path / 'cloud.db'}"
    store = Store.open(url)
    store.create_tenant("fam-1", "One")
    store.add_device(DEVICES[0], "fam-1", "clock", f"fam-1.{DEVICES[0]}", "$7$101$x$y")
    store.close()
    return url


def test_broker_files__rewrite_keeps_owner_group_and_mode_and_skips_unchanged(tmp_path,
                                                                              one_device):
    if os.geteuid() != 0:
        pytest.skip("needs root to hand the files to another user")
    nobody = pwd.getpwnam("nobody")
    first = _files(tmp_path, one_device)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith(f"Wrote {tmp_path / 'passwd'} and {tmp_path / 'acl'}"), first.stdout
    passwd = tmp_path / "passwd"
    os.chown(passwd, nobody.pw_uid, nobody.pw_gid)
    passwd.chmod(0o604)  # readable by everyone: the rewrite takes that away
    assert _files(tmp_path, one_device).returncode == 0
    st = passwd.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (nobody.pw_uid, nobody.pw_gid,
                                                                0o600)
    inode = st.st_ino
    again = _files(tmp_path, one_device)
    assert again.returncode == 0
    assert passwd.stat().st_ino == inode  # nothing new: the file was left alone
    # and its journal (a timer runs it every two minutes) does not claim a write
    assert again.stdout.startswith("Unchanged:") and "(1 devices)" in again.stdout, again.stdout
    assert not list(tmp_path.glob(".*.tmp"))


def test_broker_files__explicit_owner_and_mode(tmp_path, one_device):
    me = pwd.getpwuid(os.geteuid())
    done = _files(tmp_path, one_device, "--owner", f"{me.pw_name}:{grp.getgrgid(me.pw_gid).gr_name}",
                  "--mode", "0600")
    assert done.returncode == 0, done.stderr
    st = (tmp_path / "acl").stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (me.pw_uid, me.pw_gid, 0o600)


@pytest.mark.parametrize("extra, message", [
    (["--mode", "0644"], "would let every user read"),
    (["--mode", "rw"], "octal permissions"),
    (["--mode", "4640"], "octal permissions"),
    (["--owner", "no-such-user-here"], "No user 'no-such-user-here'"),
    (["--owner", "root:no-such-group-here"], "No group 'no-such-group-here'"),
])
def test_broker_files__bad_owner_or_mode_is_one_sentence(tmp_path, one_device, extra, message):
    done = _files(tmp_path, one_device, *extra)
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and message in done.stderr
    assert done.stderr.count("\n") == 1
    assert not (tmp_path / "passwd").exists()


@pytest.mark.parametrize("option", ["--bind", "--persistence-dir", "--certfile"])
def test_broker_files__a_line_break_cannot_add_a_setting_to_the_conf(tmp_path, one_device,
                                                                     option):
    """`--bind $'0.0.0.0\\nallow_anonymous true'` wrote a setting of its own into the
    broker's configuration (found by an audit); refused in one sentence, nothing written."""
    extra = ["--keyfile", str(tmp_path / "k.pem")] if option == "--certfile" else []
    done = _files(tmp_path, one_device, "--conf", str(tmp_path / "m.conf"), *extra,
                  option, "0.0.0.0\nallow_anonymous true")
    assert done.returncode == 2, done.stdout
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1
    assert option in done.stderr and "line break" in done.stderr
    for name in ("m.conf", "passwd", "acl"):
        assert not (tmp_path / name).exists(), name


def test_broker_files__conf_listens_where_told(tmp_path, one_device):
    done = _files(tmp_path, one_device, "--conf", str(tmp_path / "m.conf"), "--persistence-dir",
                  "/srv/mq/")
    assert done.returncode == 0, done.stderr
    assert "port 8883 of every interface" in done.stdout and "plain MQTT" in done.stdout
    text = (tmp_path / "m.conf").read_text()
    assert "listener 8883\n" in text and "persistence_location /srv/mq/\n" in text
    bound = _files(tmp_path, one_device, "--conf", str(tmp_path / "m.conf"), "--bind", "10.0.0.5")
    assert "listener 8883 10.0.0.5\n" in (tmp_path / "m.conf").read_text()
    assert "of 10.0.0.5." in bound.stdout


def test_broker_files__ingest_without_password_is_one_sentence(tmp_path, one_device):
    env = {**os.environ, "NIGHTLINK_DATABASE_URL": one_device, "NIGHTLINK_MQTT_USERNAME": "ingest"}
    env.pop("NIGHTLINK_MQTT_PASSWORD", None)
    done = _run(env, "broker-files", "--acl", str(tmp_path / "acl"), "--passwd",
                str(tmp_path / "passwd"))
    assert done.returncode == 2 and "NIGHTLINK_MQTT_PASSWORD" in done.stderr


def test_broker_files__an_empty_database_does_not_lock_the_devices_out(tmp_path, one_device):
    """Run against a database that never had a tenant (a mistyped URL, a restore under way)
    while the password file lets devices in: refused in one sentence, the files untouched;
    once the file is removed (a new install), written."""
    assert _files(tmp_path, one_device).returncode == 0
    before = (tmp_path / "passwd").read_bytes()
    assert b"fam-1." in before
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    r = _files(tmp_path, empty)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "The database has no tenant at all" in r.stderr and "1 devices" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert (tmp_path / "passwd").read_bytes() == before
    (tmp_path / "passwd").unlink()
    assert _files(tmp_path, empty).returncode == 0
