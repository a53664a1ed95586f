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

DB = "sqlite:///named-by-its-settings.db"  # production names its database


def test_cloud_serve__api_and_ingest_in_one_process(tmp_path, mosquitto):
    import paho.mqtt.client as mqtt

    url = f"sqlite:///{tmp_path / 'cloud.db'}"
    store = Store.open(url)
    store.create_tenant("fam-1", "One")
    store.add_device("a4cf12b0c3d4", "fam-1", "edge", "fam-1.a4cf12b0c3d4", "-")
    store.close()
    port = free_port()
    env = {**os.environ, "NIGHTLINK_ENV": "production", "NIGHTLINK_JWT_SECRET": "s" + "0123456789abcdef" * 3,
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
    where = f"{mosquitto.host}:{mosquitto.port}"
    assert f"Ingest connecting to {where}" in err
    assert f"Ingest connected to {where}, subscribed to $share/ingest/nl/v1/+/+/+." in err


def test_cloud_serve__default_secret_refused_in_production(tmp_path):
    env = {**os.environ, "NIGHTLINK_ENV": "production", "NIGHTLINK_JWT_SECRET": "changeme",
           "NIGHTLINK_DATABASE_URL": f"sqlite:///{tmp_path / 'c.db'}"}
    proc = subprocess.run([sys.executable, "-m", "nightlink", "cloud", "serve"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: NIGHTLINK_JWT_SECRET must be set")


def _bare_env(**settings) -> dict:
    """The environment without any NIGHTLINK_ setting, plus `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NIGHTLINK_")}
    return {**env, **settings}


def test_cloud_serve__no_settings_at_all_is_production_and_refuses(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "nightlink", "cloud", "serve"],
                          env=_bare_env(), cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: NIGHTLINK_JWT_SECRET must be set")
    assert "NIGHTLINK_ENV is production" in proc.stderr and proc.stderr.count("\n") == 1
    assert not (tmp_path / "nightlink-cloud.db").exists()


def _wait_for_text(path, text, proc, timeout=30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = path.read_text(errors="replace")
        if text in got:
            return got
        assert proc.poll() is None, got
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not printed within {timeout} s: {path.read_text()}")


def test_cloud_serve__development_says_so_and_no_broker_is_not_claimed(tmp_path):
    """NIGHTLINK_ENV=development takes the default secret and says so; with no broker the
    ingest says where it connects and never that it subscribed."""
    dead = free_port()  # nothing listens there
    env = _bare_env(NIGHTLINK_ENV="development", NIGHTLINK_MQTT_PORT=str(dead),
                    NIGHTLINK_DATABASE_URL=f"sqlite:///{tmp_path / 'c.db'}")
    err = tmp_path / "stderr"
    with open(err, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "nightlink", "cloud", "serve",
                                 "--ingest-only"], env=env, cwd=tmp_path, stderr=out, text=True)
    try:
        text = _wait_for_text(err, f"Ingest connecting to 127.0.0.1:{dead}", proc)
        assert "Development mode (NIGHTLINK_ENV=development)" in text
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    text = err.read_text()
    assert proc.returncode == 0, text
    assert "subscribed" not in text and "Ingest connected" not in text


def test_cloud_serve__public_sign_up_is_announced_at_start():
    """Sign-up is on by default: a deployment upgraded from a version without it is told at
    start, with where the confirmation links go; turned off, or for an ingest worker alone,
    nothing is said."""
    from nightlink.cloud.cli import startup_notes
    from nightlink.cloud.config import load_settings

    secret = "s" + "0123456789abcdef" * 3
    public = "https://nightlink.example.org"
    notes = startup_notes(load_settings(env="production", database_url=DB, jwt_secret=secret,
                                        mail_dir="/srv/mail", public_base_url=public), api=True)
    assert notes == ["Public sign-up is on: anyone who reaches this server can create an "
                     "account and a tenant (with no NIGHTLINK_SMTP_HOST the confirmation links "
                     "are written to /srv/mail/ for you to forward); "
                     "NIGHTLINK_SIGNUP_ENABLED=false turns it off.",
                     "No alerts reach locked phones: NIGHTLINK_PUSH_KEY is not set (`nightlink "
                     "cloud push-key` makes one); the app says so to those who turn sound on."]
    mailed = load_settings(env="production", database_url=DB, jwt_secret=secret, smtp_host="mail.example.org",
                           public_base_url=public)
    assert "mailed through mail.example.org" in startup_notes(mailed, api=True)[0]
    assert startup_notes(mailed, api=False) == []
    off = load_settings(env="production", database_url=DB, jwt_secret=secret, signup_enabled=False,
                        public_base_url=public)
    assert startup_notes(off, api=True) == [notes[1]]
    # the default address (or plain http) in production: said, since every mailed link
    # and the app's service worker depend on it
    local = startup_notes(load_settings(env="production", database_url=DB, jwt_secret=secret,
                                        signup_enabled=False), api=True)
    assert local[0].startswith("NIGHTLINK_PUBLIC_BASE_URL is http://127.0.0.1:8000: the "
                               "links in mails") and len(local) == 2
    for odd in ("http://nl.example.org", "https://[::1", "https://", "https://0.0.0.0",
                "https://app.localhost", "https://[::ffff:127.0.0.1]"):
        assert len(startup_notes(load_settings(env="production", database_url=DB, jwt_secret=secret,
                                               signup_enabled=False, public_base_url=odd),
                                 api=True)) == 2, odd
    for fine in ("https://nl.example.org/", "https://203.0.113.7"):
        assert len(startup_notes(load_settings(env="production", database_url=DB, jwt_secret=secret,
                                               signup_enabled=False, public_base_url=fine),
                                 api=True)) == 1, fine
    from nightlink.cloud.push import new_key

    pushing = load_settings(env="production", database_url=DB, jwt_secret=secret, signup_enabled=False,
                            push_key=new_key(), push_subject="mailto:ops@example.org",
                            public_base_url=public)
    assert startup_notes(pushing, api=True) == [
        "Alerts reach locked phones (Web Push) through fcm.googleapis.com,"
        "push.services.mozilla.com,push.apple.com,notify.windows.com, signed for "
        "mailto:ops@example.org."]


def test_cloud_serve__port_in_use_is_one_sentence(tmp_path):
    import socket

    env = _bare_env(NIGHTLINK_JWT_SECRET="s" + "0123456789abcdef" * 3,
                    NIGHTLINK_DATABASE_URL=f"sqlite:///{tmp_path / 'c.db'}")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", free_port()))
        taken.listen()
        port = taken.getsockname()[1]
        for extra in ([], ["--api-only", "--workers", "2"]):
            proc = subprocess.run([sys.executable, "-m", "nightlink", "cloud", "serve",
                                   "--port", str(port), *extra], env=env, cwd=tmp_path,
                                  capture_output=True, text=True, timeout=60)
            assert proc.returncode == 2, proc.stderr
            assert proc.stderr == (f"error: Port {port} on 127.0.0.1 is in use; choose "
                                   "another with --port.\n")


def test_cloud_serve__a_database_it_cannot_use_is_the_only_line(tmp_path):
    """Its start-up notes came before the database's error, as if it were starting (an
    audit found it): the error alone, on one line."""
    bad = tmp_path / "notadb.db"
    bad.write_bytes(b"this is not a database" * 100)
    env = _bare_env(NIGHTLINK_ENV="development", NIGHTLINK_DATABASE_URL=f"sqlite:///{bad}")
    for extra in ([], ["--api-only", "--workers", "2"]):
        proc = subprocess.run([sys.executable, "-m", "nightlink", "cloud", "serve", "--port",
                               str(free_port()), *extra], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr


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


def test_cloud_serve__several_workers_read_the_env_file_given(tmp_path):
    """`cloud --env-file FILE serve --api-only --workers 2` with nothing in the environment
    (a shell without the unit's EnvironmentFile): every worker process reads FILE too (they
    read only the environment and ./.env, and were restarted for ever)."""
    env_file = tmp_path / "cloud.env"
    env_file.write_text(f"NIGHTLINK_JWT_SECRET={'s' + '0123456789abcdef' * 3}\n"
                        f"NIGHTLINK_DATABASE_URL=sqlite:///{tmp_path / 'c.db'}\n")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "nightlink", "cloud", "--env-file",
                             str(env_file), "serve", "--api-only", "--workers", "2", "--port",
                             str(port)], env=_bare_env(), cwd=tmp_path / "..",
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 40
        while True:
            assert proc.poll() is None, proc.stderr.read()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "no worker served within 40 s"
            time.sleep(0.2)
        status = httpx.get(f"http://127.0.0.1:{port}/api/v1/status.json", timeout=5)
        assert status.status_code in (200, 401), status.text  # served by a worker
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def test_served__the_serving_process_keeps_its_start_up_heap_out_of_the_collectors_passes(
        tmp_path):
    """cloud/app.served (every serving process's app goes through it): the objects made up
    to the start are frozen (gc.freeze), after the garbage among them was collected. In a
    process of its own: freezing this test process's heap would outlive the test."""
    script = (
        "import gc, weakref\n"
        "from nightlink.cloud.app import create_app, served\n"
        "from nightlink.cloud.config import load_settings\n"
        "app = create_app(load_settings())\n"
        "class Cycle: pass\n"
        "c = Cycle(); c.me = c; ref = weakref.ref(c); del c\n"  # only the collector frees it
        "before = gc.get_freeze_count()\n"
        "assert served(app) is app\n"
        "print(before, gc.get_freeze_count(), int(ref() is not None))\n")
    env = {**os.environ, "NIGHTLINK_ENV": "development",
           "NIGHTLINK_DATABASE_URL": f"sqlite:///{tmp_path / 'cloud.db'}"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=120, check=True)
    before, frozen, garbage = map(int, out.stdout.split()[-3:])
    assert before == 0 and frozen > 10_000, out.stdout  # the modules, routes and app
    assert garbage == 0  # collected, not frozen
