"""`nightlink cloud serve` as a real process: API and ingest together, clean stop."""

import os
import signal
import subprocess
import sys
import time

import httpx

from nightlink.cloud.store import Store
from nightlink.shared import codec, features, topics
from tests.support.services import free_port


def test_cloud_serve__api_and_ingest_in_one_process(tmp_path, mosquitto):
    import paho.mqtt.client as mqtt

    url = f"sqlite:///{tmp_path / 'cloud.db'}"
    store = Store.open(url)
    store.create_tenant("fam-1", "One")
    store.add_device("a4cf12b0c3d4", "fam-1", "edge", "fam-1.a4cf12b0c3d4", "-")
    store.close()
    port = free_port()
    env = {**os.environ, "NIGHTLINK_ENV": "production", "NIGHTLINK_JWT_SECRET": "s" * 40,
           "NIGHTLINK_DATABASE_URL": url, "NIGHTLINK_MQTT_HOST": mosquitto.host,
           "NIGHTLINK_MQTT_PORT": str(mosquitto.port)}
    proc = subprocess.Popen([sys.executable, "-m", "nightlink", "cloud", "serve", "--port",
                             str(port)], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").json() == {"status": "ok"}
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        pub.connect(mosquitto.host, mosquitto.port)
        pub.loop_start()
        row = codec.quantize_row(features.ROOM, (21.0, 40.0, 0.0, 600.0, 30.0))
        rec = codec.Record(features.ROOM, codec.device_id("a4cf12b0c3d4"), 1, 1, 100, [row] * 5)
        time.sleep(1.0)  # the worker subscribes once the app is up
        pub.publish(topics.data_topic("fam-1", "a4cf12b0c3d4", "room"), codec.encode(rec),
                    qos=1).wait_for_publish(5)
        check = Store.open(url)
        while check.tenant("fam-1").count_rows() < 5 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert check.tenant("fam-1").count_rows() == 5
        check.close()
        pub.loop_stop()
        pub.disconnect()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


def test_cloud_serve__default_secret_refused_in_production(tmp_path):
    env = {**os.environ, "NIGHTLINK_ENV": "production", "NIGHTLINK_JWT_SECRET": "changeme",
           "NIGHTLINK_DATABASE_URL": f"sqlite:///{tmp_path / 'c.db'}"}
    proc = subprocess.run([sys.executable, "-m", "nightlink", "cloud", "serve"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: NIGHTLINK_JWT_SECRET must be set")


def test_cloud_create_tenant__prints_secret_once(tmp_path):
    env = {**os.environ, "NIGHTLINK_DATABASE_URL": f"sqlite:///{tmp_path / 'c.db'}"}
    run = lambda *a: subprocess.run([sys.executable, "-m", "nightlink", "cloud", *a],  # noqa: E731
                                    env=env, capture_output=True, text=True, timeout=60)
    first = run("create-tenant", "fam-9")
    assert first.returncode == 0 and "secret (shown once)" in first.stdout
    again = run("create-tenant", "fam-9")
    assert again.returncode == 2 and "already exists" in again.stderr


def test_cloud_broker_files_and_purge(tmp_path):
    from nightlink.cloud.store import Store

    url = f"sqlite:///{tmp_path / 'c.db'}"
    store = Store.open(url)
    store.create_tenant("fam-1", "One")
    store.add_device("a4cf12b0c3d4", "fam-1", "clock", "fam-1.a4cf12b0c3d4", "$7$101$x$y")
    store.create_tenant("gone", "Gone")
    store.set_tenant("gone", deleted_at=1.0)
    store.close()
    env = {**os.environ, "NIGHTLINK_DATABASE_URL": url}
    run = lambda *a: subprocess.run([sys.executable, "-m", "nightlink", "cloud", *a],  # noqa: E731
                                    env=env, capture_output=True, text=True, timeout=60)
    files = run("broker-files", "--acl", str(tmp_path / "acl"), "--passwd",
                str(tmp_path / "passwd"))
    assert files.returncode == 0, files.stderr
    assert "fam-1.a4cf12b0c3d4:" in (tmp_path / "passwd").read_text()
    assert "nl/v1/fam-1/a4cf12b0c3d4/#" in (tmp_path / "acl").read_text()
    purged = run("purge")
    assert purged.returncode == 0 and "Purged 1 tenants: gone." in purged.stdout
