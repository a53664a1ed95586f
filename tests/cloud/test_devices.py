"""Uploader secrets, read tokens and device provisioning, down to a real Mosquitto enforcing
the minted accounts and topic prefixes."""

import base64
import hashlib
import os
import shutil
import signal
import subprocess
import threading
import time

import paho.mqtt.client as mqtt
import pytest

from nightlink.cloud.broker_config import (
    device_username,
    mosquitto_files,
    mosquitto_hash,
    mosquitto_verify,
)
from nightlink.nightscout.store import find_token
from tests.support.services import Broker

API = "/api/nl/v1"
DEV = "a1b2c3d4e5f6"
DEV2 = "0a0b0c0d0e0f"
INGEST_PASSWORD = "ingest-password-for-tests"


def provision(cloud, device_id=DEV, tenant="fam-1", who="pat@example.org", kind="clock"):
    return cloud.client.post(f"{API}/tenants/{tenant}/devices", headers=cloud.auth(who),
                             json={"device_id": device_id, "kind": kind, "label": "bedside"})


def dump(cloud) -> str:
    """The whole database as SQL text, to grep for secrets."""
    return "\n".join(cloud.store.db.conn.iterdump())


# -- api-secret and read tokens ---------------------------------------------------------------


def test_api_secret__returned_once_and_stored_hashed(people):
    h = people.auth("pat@example.org")
    r = people.client.post(f"{API}/tenants/fam-1/api-secret", headers=h)
    assert r.status_code == 201
    secret, sha1 = r.json()["secret"], r.json()["sha1"]
    assert len(secret) == 32 and sha1 == hashlib.sha1(secret.encode()).hexdigest()
    assert people.store.api_secret(sha1) == {"tenant_id": "fam-1", "kind": "api-secret", "label": ""}
    db = dump(people)
    assert secret not in db and sha1 not in db
    entry = people.store.audit_log("fam-1")[0]
    assert entry["action"] == "key.create" and entry["detail"] == {"kind": "api-secret"}
    assert secret not in str(people.store.audit_log())


def test_api_secret__new_one_revokes_the_previous(people):
    h = people.auth("pat@example.org")
    first = people.client.post(f"{API}/tenants/fam-1/api-secret", headers=h).json()["sha1"]
    second = people.client.post(f"{API}/tenants/fam-1/api-secret", headers=h).json()["sha1"]
    assert first != second
    assert people.store.api_secret(first) is None
    assert people.store.api_secret(second)["tenant_id"] == "fam-1"


def test_read_token__created_stored_hashed_revocable(people):
    h = people.auth("pat@example.org")
    r = people.client.post(f"{API}/tenants/fam-1/read-tokens", headers=h, json={"label": "clock"})
    assert r.status_code == 201 and r.json()["label"] == "clock"
    token = r.json()["token"]
    found = find_token(people.store.db, token)
    assert (found.site_key, found.name, found.roles) == ("fam-1", "clock", ("readable",))
    assert token not in dump(people)
    assert people.store.audit_log("fam-1")[0]["detail"] == {"kind": "token", "label": "clock",
                                                            "role": "readable"}
    assert people.client.delete(f"{API}/tenants/fam-1/read-tokens", headers=h).status_code == 204
    assert find_token(people.store.db, token) is None


def test_read_token__without_body(people):
    r = people.client.post(f"{API}/tenants/fam-1/read-tokens", headers=people.auth("admin@example.org"))
    assert r.status_code == 201 and r.json()["label"] == ""


@pytest.mark.parametrize("path", ["api-secret", "read-tokens"])
@pytest.mark.parametrize("who,status", [("care@example.org", 403), ("doc@example.org", 403),
                                        ("pat2@example.org", 404)])
def test_keys__only_patient_or_admin(people, path, who, status):
    r = people.client.post(f"{API}/tenants/fam-1/{path}", headers=people.auth(who), json={})
    assert r.status_code == status
    assert people.store.db.scalar("SELECT count(*) AS n FROM api_secrets") == 0


# -- device provisioning ---------------------------------------------------------------------------


def test_devices__provision_mints_credentials_once(people):
    r = provision(people)
    assert r.status_code == 201, r.text
    body = r.json()
    password = body.pop("mqtt_password")
    created = body.pop("created_at")
    assert body == {"device_id": DEV, "kind": "clock", "label": "bedside",
                    "mqtt_username": f"fam-1.{DEV}", "topic_prefix": f"nl/v1/fam-1/{DEV}/",
                    "revoked_at": None, "mqtt_host": "127.0.0.1", "mqtt_port": 1883,
                    "mqtt_tls": False}
    assert len(password) == 32 and created > 0
    stored = people.store.device(DEV)["mqtt_password_hash"]
    assert stored.startswith("$7$101$") and mosquitto_verify(stored, password)
    assert password not in dump(people)
    entry = people.store.audit_log("fam-1")[0]
    assert entry["action"] == "device.provision"
    assert entry["detail"] == {"device_id": DEV, "kind": "clock"}


def test_devices__list_has_no_secrets(people):
    provision(people)
    r = people.client.get(f"{API}/tenants/fam-1/devices", headers=people.auth("care@example.org"))
    assert r.status_code == 200
    (dev,) = r.json()
    assert set(dev) == {"device_id", "kind", "label", "mqtt_username", "topic_prefix",
                        "created_at", "revoked_at"}
    assert people.client.get(f"{API}/tenants/fam-1/devices",
                          headers=people.auth("pat2@example.org")).status_code == 404


@pytest.mark.parametrize("body", [
    {"device_id": "A1B2C3D4E5F6", "kind": "clock"},
    {"device_id": "a1b2c3", "kind": "clock"},
    {"device_id": DEV, "kind": "phone"},
    {"kind": "clock"},
])
def test_devices__invalid_request_refused(people, body):
    r = people.client.post(f"{API}/tenants/fam-1/devices", headers=people.auth("pat@example.org"),
                        json=body)
    assert r.status_code == 422


def test_devices__already_provisioned_conflicts(people):
    assert provision(people).status_code == 201
    assert provision(people).status_code == 409
    assert provision(people, tenant="fam-2", who="pat2@example.org").status_code == 409


@pytest.mark.parametrize("who,status", [("care@example.org", 403), ("doc@example.org", 403),
                                        ("pat2@example.org", 404)])
def test_devices__only_patient_or_admin_provisions(people, who, status):
    assert provision(people, who=who).status_code == status
    assert people.store.device(DEV) is None


def test_devices__revoke(people):
    provision(people)
    h = people.auth("pat@example.org")
    assert people.client.delete(f"{API}/tenants/fam-1/devices/{DEV}",
                             headers=people.auth("doc@example.org")).status_code == 403
    assert people.client.delete(f"{API}/tenants/fam-1/devices/{DEV}", headers=h).status_code == 204
    assert people.client.delete(f"{API}/tenants/fam-1/devices/{DEV}", headers=h).status_code == 404
    (dev,) = people.client.get(f"{API}/tenants/fam-1/devices", headers=h).json()
    assert dev["revoked_at"] is not None and people.store.device(DEV) is None
    assert people.store.audit_log("fam-1")[0]["action"] == "device.revoke"


# -- the Mosquitto files ---------------------------------------------------------------------------


def test_mosquitto_hash__matches_mosquitto_passwd(tmp_path):
    salt = bytes(range(12))
    assert mosquitto_hash("secret", salt=salt) == (
        "$7$101$AAECAwQFBgcICQoL$" + base64.b64encode(
            hashlib.pbkdf2_hmac("sha512", b"secret", salt, 101)).decode())
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        pytest.skip("mosquitto_passwd is not installed")
    path = tmp_path / "pw"
    subprocess.run([tool, "-c", "-b", str(path), "alice", "correct horse"], check=True)
    theirs = path.read_text().strip().split(":", 1)[1]
    assert theirs.startswith("$7$101$")
    assert mosquitto_verify(theirs, "correct horse") and not mosquitto_verify(theirs, "wrong")


def test_mosquitto_files__exact_acl(people, tmp_path):
    provision(people)
    provision(people, DEV2, tenant="fam-2", who="pat2@example.org", kind="edge")
    provision(people, "ffffffffffff")
    people.client.delete(f"{API}/tenants/fam-1/devices/ffffffffffff",
                      headers=people.auth("pat@example.org"))
    n = mosquitto_files(people.store, tmp_path / "acl", tmp_path / "passwd",
                        ingest_username="ingest", ingest_password=INGEST_PASSWORD)
    assert n == 2
    assert (tmp_path / "acl").read_text() == (
        "# Written by nightlink.cloud.broker_config; do not edit.\n\n"
        "user ingest\n"
        "topic read nl/v1/#\n"
        "topic write nl/v1/+/+/+/ack\n"
        "topic write nl/v1/+/+/cmd\n\n"
        f"user fam-2.{DEV2}\n"
        f"topic write nl/v1/fam-2/{DEV2}/#\n"
        f"topic read nl/v1/fam-2/{DEV2}/+/ack\n"
        f"topic read nl/v1/fam-2/{DEV2}/cmd\n"
        # an edge is its tenant's gateway: its LAN broker bridges the tenant's clocks
        "topic write nl/v1/fam-2/+/+\n"
        "topic read nl/v1/fam-2/+/+/ack\n"
        "topic read nl/v1/fam-2/+/cmd\n\n"
        f"user fam-1.{DEV}\n"
        f"topic write nl/v1/fam-1/{DEV}/#\n"
        f"topic read nl/v1/fam-1/{DEV}/+/ack\n"
        f"topic read nl/v1/fam-1/{DEV}/cmd\n")
    lines = (tmp_path / "passwd").read_text().splitlines()
    assert [line.split(":")[0] for line in lines] == ["ingest", f"fam-2.{DEV2}", f"fam-1.{DEV}"]
    assert lines[2].split(":", 1)[1] == people.store.device(DEV)["mqtt_password_hash"]
    assert INGEST_PASSWORD not in (tmp_path / "passwd").read_text()


def test_mosquitto_files__leave_out_deleted_tenants(people, tmp_path):
    provision(people)
    people.store.set_tenant("fam-1", deleted_at=time.time())
    assert mosquitto_files(people.store, tmp_path / "acl", tmp_path / "passwd") == 0
    assert "fam-1" not in (tmp_path / "acl").read_text()


# -- a real Mosquitto with the minted accounts -------------------------------------------------------


class SecureBroker:
    """Mosquitto with allow_anonymous false and the files mosquitto_files writes."""

    def __init__(self, store, workdir):
        self.store, self.acl, self.passwd = store, workdir / "acl", workdir / "passwd"
        self.write()
        # Run as root, mosquitto drops to its own user, who cannot read pytest's tmp dirs.
        as_root = "user root\n" if hasattr(os, "geteuid") and os.geteuid() == 0 else ""
        self.broker = Broker(workdir, anonymous=False, extra=(
            f"password_file {self.passwd}\nacl_file {self.acl}\n{as_root}")).start()
        self.host, self.port = self.broker.host, self.broker.port

    def write(self):
        mosquitto_files(self.store, self.acl, self.passwd, ingest_username="ingest",
                        ingest_password=INGEST_PASSWORD)

    def reload(self):
        """Rewrite the files and have the broker read them again (SIGHUP)."""
        self.write()
        self.broker.proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)


@pytest.fixture
def secure_broker(people, tmp_path):
    if shutil.which("mosquitto") is None and not os.path.exists("/usr/sbin/mosquitto"):
        pytest.skip("mosquitto is not installed")
    b = SecureBroker(people.store, tmp_path)
    yield b
    b.broker.stop()


class Client:
    """A paho client that records what it receives and how CONNECT went."""

    def __init__(self, broker, username, password):
        self.messages, self.connected = [], threading.Event()
        self.reason = None
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{username}-{time.time()}")
        self.c.username_pw_set(username, password)
        self.c.on_connect = self._on_connect
        self.c.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload))
        self.c.connect(broker.host, broker.port)
        self.c.loop_start()
        assert self.connected.wait(5), "no CONNACK within 5 s"

    def _on_connect(self, client, userdata, flags, reason, props):
        self.reason = reason
        self.connected.set()

    def subscribe(self, topic):
        done = threading.Event()
        self.c.on_subscribe = lambda *a: done.set()
        self.c.subscribe(topic, qos=1)
        assert done.wait(5)

    def publish(self, topic, payload):
        self.c.publish(topic, payload, qos=1).wait_for_publish(5)

    def wait_for(self, topic, timeout=5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(t == topic for t, _ in self.messages):
                return True
            time.sleep(0.02)
        return False

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def test_broker__accepts_minted_device_refuses_wrong_password(people, secure_broker):
    password = provision(people).json()["mqtt_password"]
    secure_broker.reload()
    good = Client(secure_broker, device_username("fam-1", DEV), password)
    assert not good.reason.is_failure
    good.close()
    bad = Client(secure_broker, device_username("fam-1", DEV), password + "x")
    assert bad.reason.is_failure
    bad.close()
    anonymous = Client(secure_broker, "", "")
    assert anonymous.reason.is_failure
    anonymous.close()


def test_broker__device_publishes_only_below_its_prefix(people, secure_broker):
    password = provision(people).json()["mqtt_password"]
    provision(people, DEV2, tenant="fam-2", who="pat2@example.org")
    secure_broker.reload()
    ingest = Client(secure_broker, "ingest", INGEST_PASSWORD)
    ingest.subscribe("nl/v1/#")
    device = Client(secure_broker, f"fam-1.{DEV}", password)
    outside = [f"nl/v1/fam-2/{DEV2}/room", f"nl/v1/fam-1/{DEV2}/room", "nl/v1/fam-1/x"]
    for topic in outside:
        device.publish(topic, b"forged")
    device.publish(f"nl/v1/fam-1/{DEV}/room", b"mine")
    assert ingest.wait_for(f"nl/v1/fam-1/{DEV}/room")
    assert ingest.messages == [(f"nl/v1/fam-1/{DEV}/room", b"mine")]
    ingest.close()
    device.close()


def test_broker__device_receives_its_acks_and_commands_only(people, secure_broker):
    password = provision(people).json()["mqtt_password"]
    provision(people, DEV2)
    secure_broker.reload()
    device = Client(secure_broker, f"fam-1.{DEV}", password)
    device.subscribe("nl/v1/#")  # asks for everything; the ACL delivers only its own
    ingest = Client(secure_broker, "ingest", INGEST_PASSWORD)
    ingest.publish(f"nl/v1/fam-1/{DEV2}/cmd", b"not yours")
    ingest.publish(f"nl/v1/fam-1/{DEV2}/room/ack", b"not yours")
    ingest.publish(f"nl/v1/fam-1/{DEV}/room/ack", b"7")
    ingest.publish(f"nl/v1/fam-1/{DEV}/cmd", b"reboot")
    assert device.wait_for(f"nl/v1/fam-1/{DEV}/cmd")
    assert device.messages == [(f"nl/v1/fam-1/{DEV}/room/ack", b"7"),
                               (f"nl/v1/fam-1/{DEV}/cmd", b"reboot")]
    ingest.close()
    device.close()


def test_broker__revoked_device_refused_after_reload(people, secure_broker):
    password = provision(people).json()["mqtt_password"]
    secure_broker.reload()
    first = Client(secure_broker, f"fam-1.{DEV}", password)
    assert not first.reason.is_failure
    first.close()
    people.client.delete(f"{API}/tenants/fam-1/devices/{DEV}", headers=people.auth("pat@example.org"))
    secure_broker.reload()
    again = Client(secure_broker, f"fam-1.{DEV}", password)
    assert again.reason.is_failure
    again.close()


def test_broker_conf__tls_with_minted_credentials(people, tmp_path):
    """The generated mosquitto.conf: TLS only, no anonymous clients, the minted account works."""
    import subprocess

    from nightlink.cloud.broker_config import mosquitto_conf
    from tests.support.services import free_port, mosquitto_binary

    if mosquitto_binary() is None or shutil.which("openssl") is None:
        pytest.skip("mosquitto or openssl is not installed")
    creds = provision(people).json()
    mosquitto_files(people.store, tmp_path / "acl", tmp_path / "passwd")
    key, cert = tmp_path / "server.key", tmp_path / "server.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    port = free_port()
    text = mosquitto_conf(tmp_path / "acl", tmp_path / "passwd", port=port, host="127.0.0.1",
                          certfile=str(cert), keyfile=str(key),
                          persistence_dir=str(tmp_path) + "/")
    assert "allow_anonymous false" in text and f"certfile {cert}" in text
    as_root = "user root\n" if hasattr(os, "geteuid") and os.geteuid() == 0 else ""
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(text + as_root)
    with open(tmp_path / "mosquitto.log", "ab") as log:  # never a pipe nobody reads
        proc = subprocess.Popen([mosquitto_binary(), "-c", str(conf)], stderr=log)
    try:
        time.sleep(0.5)
        ok = threading.Event()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="tls-device")
        c.username_pw_set(creds["mqtt_username"], creds["mqtt_password"])
        c.tls_set(ca_certs=str(cert))
        c.on_connect = lambda _c, _u, _f, reason, _p: reason.is_failure or ok.set()
        c.connect("127.0.0.1", port)
        c.loop_start()
        assert ok.wait(5), "the minted account could not connect over TLS"
        # A packet over the largest batch is refused at the broker, which hangs up, rather
        # than held in its memory and the ingest's (200 MB messages were delivered).
        from nightlink.shared import topics as _topics

        assert f"max_packet_size {_topics.MAX_PACKET_BYTES}" in text
        gone = threading.Event()
        c.on_disconnect = lambda *_a: gone.set()
        c.publish(f"nl/v1/fam-1/{DEV}/room", b"x" * (_topics.MAX_PACKET_BYTES + 1), qos=1)
        assert gone.wait(10), "the broker took a packet over max_packet_size"
        c.loop_stop()
        c.disconnect()
        plain = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="plain")
        plain.username_pw_set(creds["mqtt_username"], creds["mqtt_password"])
        in_clear = threading.Event()
        plain.on_connect = lambda _c, _u, _f, reason, _p: reason.is_failure or in_clear.set()
        try:
            plain.connect("127.0.0.1", port)
            plain.loop_start()
        except OSError:
            pass
        assert not in_clear.wait(1.5), "the TLS listener accepted a plaintext client"
        plain.loop_stop()
    finally:
        proc.kill()
        proc.wait()


def test_add_device__revoked_in_this_tenant_registers_again_inside_a_transaction(cloud_db_url):
    """A revoked device of the tenant is registered again with a new hash, also within a
    transaction on PostgreSQL (a failed INSERT there would end it); an active one or another
    tenant's stays a conflict and leaves the transaction usable."""
    from nightlink.cloud.store import ConflictError, Store

    store = Store.open(cloud_db_url)
    try:
        store.create_tenant("fam-1", "One")
        store.create_tenant("fam-2", "Two")
        store.add_device("abcdef012345", "fam-1", "edge", "fam-1.abcdef012345", "$7$old")
        with store.transaction():
            with pytest.raises(ConflictError, match="revoke it first"):
                store.add_device("abcdef012345", "fam-1", "edge", "fam-1.abcdef012345", "$7$x")
            store.create_tenant("fam-3", "Three")  # the transaction still works
        assert store.tenant("fam-1").revoke_device("abcdef012345")
        with store.transaction():
            with pytest.raises(ConflictError):
                store.add_device("abcdef012345", "fam-2", "edge", "fam-2.abcdef012345", "$7$y")
            row = store.add_device("abcdef012345", "fam-1", "edge", "fam-1.abcdef012345",
                                   "$7$new", "Edge again")
        assert (row["mqtt_password_hash"], row["label"], row["revoked_at"]) == (
            "$7$new", "Edge again", None)
        assert store.get_tenant("fam-3")["id"] == "fam-3"
        assert [d["id"] for d in store.active_devices()] == ["abcdef012345"]
    finally:
        store.close()
