"""The edge sync facing a cloud broker that refuses it, does not answer, or is not there: one
attempt at a time, each waiting for its CONNACK; a jittered back-off between attempts that
doubles up to reconnect_max_s; the reason said at WARNING (without -v, rate-limited), and in
the one-sentence error `edge sync --until-empty` ends with. An empty outbox ends it at once."""

import logging
import socket
import subprocess
import sys
import time

import pytest

from nightlink.edge.node.config import SyncConfig
from nightlink.edge.store import EdgeStore
from nightlink.edge.sync.cloud_link import SyncClient
from nightlink.shared import codec, features
from tests.support.delayproxy import DelayProxy
from tests.support.services import Broker, free_port
from tests.sync.conftest import TENANT, run_sync


@pytest.fixture
def locked_broker(tmp_path):
    """A Mosquitto that refuses every login (no anonymous clients, no accounts)."""
    broker = Broker(tmp_path, anonymous=False).start()
    yield broker
    broker.stop()


@pytest.fixture
def edge(tmp_path):
    store = EdgeStore(tmp_path / "edge.db")
    yield store
    store.close()


def _config(host, port, **kw):
    return SyncConfig(enabled=True, host=host, port=port, keepalive_s=5,
                      reconnect_min_s=kw.pop("reconnect_min_s", 0.1),
                      reconnect_max_s=kw.pop("reconnect_max_s", 1.0), **kw)


def _rows(store, n):
    cgm = codec.quantize_row(features.CGM, (120.0, 1.0, 0.0, 0.0, 6.0, None))
    for i in range(n):
        store.append(features.CGM, 58950540 + i, [cgm])


def _cli(tmp_path, db, host, port, timeout):
    conf = tmp_path / "edge.toml"
    conf.write_text(f'tenant = "{TENANT}"\n[nightscout]\nenabled = false\n[sync]\nenabled = true\n'
                    f'host = "{host}"\nport = {port}\nreconnect_min_s = 0.2\n'
                    "reconnect_max_s = 2.0\n")
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "nightlink", "edge", "sync", "--config",
                           str(conf), "--db", str(db), "--until-empty", "--timeout",
                           str(timeout)], capture_output=True, text=True, timeout=timeout + 30)
    return done, time.monotonic() - t0


def _backs_off(times, first, ceiling, slack=0.15):
    """Each wait between attempts lies within half and all of a delay doubling from first up
    to ceiling (plus the step's granularity)."""
    delay = first
    for a, b in zip(times, times[1:], strict=False):
        if not delay / 2 - 0.02 <= b - a <= delay + slack:
            return False
        delay = min(delay * 2, ceiling)
    return True


def test_refused_login__backs_off_with_jitter_and_says_why(locked_broker, edge, caplog):
    _rows(edge, 11)
    with DelayProxy(locked_broker.host, locked_broker.port, rtt_s=0) as proxy:
        client = SyncClient(edge, _config(proxy.host, proxy.port), TENANT)
        with caplog.at_level(logging.INFO, logger="nightlink.edge.sync.cloud_link"):
            run_sync(client, 4.0, until_empty=False)
        times = list(proxy.accepted_at)
    assert 4 <= len(times) <= 12, f"{len(times)} connections in 4 s"
    assert client.stats.attempts == len(times) and client.stats.connects == 0
    assert _backs_off(times, 0.1, 1.0), [round(b - a, 3) for a, b in zip(times, times[1:],
                                                                          strict=False)]
    reason = f"cloud broker 127.0.0.1:{proxy.port} refused the login (Not authorized)"
    assert client.last_error == reason
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned and all(m.startswith(reason + "; next try in ") for m in warned)
    assert len(warned) <= 2  # the same reason at WARNING at most every 10 s; INFO in between
    assert edge.outbox_size() == 11


def test_refused_login__the_cli_says_why_without_verbose(locked_broker, edge, tmp_path):
    _rows(edge, 11)
    done, _ = _cli(tmp_path, edge.path, locked_broker.host, locked_broker.port, timeout=3)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    reason = f"cloud broker {locked_broker.host}:{locked_broker.port} refused the login " \
             "(Not authorized)"
    assert lines[-1] == f"error: 11 rows could not be delivered: {reason}.", done.stderr
    warned = [ln for ln in lines if " WARNING " in ln]
    assert warned and reason + "; next try in " in warned[0]
    assert len(lines) <= 6, done.stderr  # not a flood


def test_unreachable_broker__the_final_error_says_why(edge, tmp_path):
    _rows(edge, 11)
    port = free_port()  # nothing listens there
    done, _ = _cli(tmp_path, edge.path, "127.0.0.1", port, timeout=2)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: 11 rows could not be delivered: cannot reach 127.0.0.1:{port} "
        "(Connection refused).")


def test_until_empty__an_empty_outbox_ends_it_at_once(edge, tmp_path):
    """Nothing to send: no need to wait for a broker, reachable or not."""
    done, took = _cli(tmp_path, edge.path, "127.0.0.1", free_port(), timeout=60)
    assert done.returncode == 0, done.stderr
    assert took < 15, f"took {took:.1f} s"
    assert "0 still in the outbox" in done.stderr


def test_silent_broker__one_attempt_waits_for_its_connack(edge):
    """A broker that takes the TCP connection but never answers the login: each attempt
    waits connect_timeout_s, then the back-off; never a new attempt on every pass."""
    _rows(edge, 3)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", free_port()))
        silent.listen(16)  # the kernel completes the handshakes; nobody reads
        port = silent.getsockname()[1]
        client = SyncClient(edge, _config("127.0.0.1", port, connect_timeout_s=0.5), TENANT)
        run_sync(client, 3.0, until_empty=False)
    assert 2 <= client.stats.attempts <= 5, client.stats.attempts
    assert client.last_error == (f"cloud broker 127.0.0.1:{port} did not answer the login "
                                 "within 0.5 s")


def test_tls_error__is_named_and_backed_off(mosquitto, edge):
    """TLS to a plain-MQTT listener fails in the handshake: said as a TLS failure."""
    _rows(edge, 3)
    client = SyncClient(edge, _config(mosquitto.host, mosquitto.port, tls=True), TENANT)
    run_sync(client, 1.5, until_empty=False)
    assert client.last_error.startswith(f"TLS with the cloud broker {mosquitto.host}:"
                                        f"{mosquitto.port} failed ("), client.last_error
    assert 2 <= client.stats.attempts <= 6


def test_silent_cloud__said_and_resends_slow_down(mosquitto, edge, caplog, monkeypatch):
    """The broker takes the rows but no cloud acknowledges them (the edge is not
    provisioned for its tenant, or edge.toml names another): said, with what to check, and
    the outbox is not sent again every resend_after_s for ever. Nothing is lost."""
    from nightlink.edge.sync import cloud_link

    monkeypatch.setattr(cloud_link, "SILENT_CLOUD_S", 1.5)
    _rows(edge, 40)
    caplog.set_level(logging.WARNING)
    client = SyncClient(edge, _config(mosquitto.host, mosquitto.port, resend_after_s=0.5),
                        TENANT)
    assert client._resend_after() == 0.5
    run_sync(client, 4.0, until_empty=False)
    said = [r.getMessage() for r in caplog.records if "acknowledged nothing" in r.getMessage()]
    assert len(said) == 1, said  # once (then every 10 minutes)
    assert f"device {edge.device}" in said[0] and "provisioned in the cloud for tenant" in \
        said[0] and "`tenant` in edge.toml" in said[0]
    # a command that exists (`nightlink cloud devices` did not)
    assert f"`nightlink device register-edge --edge-id {edge.device}`" in said[0]
    assert "acknowledged nothing" in client.last_error
    assert client._resend_after() > 1.5  # half the silence: slower and slower, to 30 min
    assert client.stats.rows_sent < 40 * 5  # not every 0.5 s for 4 s (8 rounds)
    assert edge.outbox_size() == 40  # kept for when the cloud answers
    # The cloud answers at last: the reason goes, the resends are timed as configured again.
    client._handle_one(f"nl/v1/{TENANT}/{edge.device}/cgm/ack", b'{"stream": "cgm", "hwm": 0}')
    assert client.last_error == "" and client._resend_after() == 0.5


def test_silent_cloud__the_one_shot_sync_says_what_to_check(mosquitto, edge, tmp_path):
    _rows(edge, 7)
    done, _ = _cli(tmp_path, edge.path, mosquitto.host, mosquitto.port, timeout=3)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: 7 rows could not be delivered: the broker took them but the cloud "
        f"acknowledged none; is this edge (device {edge.device}) provisioned in the cloud "
        f"for tenant '{TENANT}', and is `tenant` in the config right?")
