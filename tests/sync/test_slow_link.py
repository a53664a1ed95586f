"""The edge sync and the clock's host-port link over a slow, lossy link (tests/support/
delayproxy.py: 150 ms, 300 ms and 1 s round trips, 2 % loss as retransmission delays) to a
real Mosquitto and the real cloud ingest: a handful of connection attempts, no take-over of
the session by the client's own next attempt, every row delivered exactly once."""

import dataclasses
import subprocess
import sys
import time

import pytest

from nightlink.edge.sync.cloud_link import SyncClient
from nightlink.shared import features
from tests.support.delayproxy import DelayProxy
from tests.support.mpy_board import HOSTPORT, host_env
from tests.support.services import Broker
from tests.sync.conftest import TENANT, cloud_digest, edge_digest, fill_backlog, run_sync, settle

CLOCK = "c0ffee000001"


@pytest.fixture
def mosquitto(tmp_path):
    """The rig's broker, logging every connection (and every take-over) to its log file."""
    broker = Broker(tmp_path, extra="log_type notice\nlog_type information\n"
                                    "connection_messages true\n").start()
    yield broker
    broker.stop()


def _connections(broker, client_id):
    return [ln for ln in broker.log_text().splitlines()
            if "New client connected" in ln and f" as {client_id} " in ln]


@pytest.mark.parametrize("rtt_s", [0.15, 0.3, 1.0])
def test_slow_link__edge_sync_connects_once_and_delivers_once(rig, rtt_s, record_property):
    fill_backlog(rig.edge, nights=1)
    produced = edge_digest(rig.edge)
    with DelayProxy(rig.broker.host, rig.broker.port, rtt_s=rtt_s, loss=0.02, seed=1) as proxy:
        cfg = dataclasses.replace(rig.sync_config(), host=proxy.host, port=proxy.port)
        client = SyncClient(rig.edge, cfg, TENANT)
        t0 = time.monotonic()
        run_sync(client, 25)
        took = time.monotonic() - t0
        attempts = proxy.connections
    assert rig.edge.outbox_size() == 0, f"not drained in 25 s: {client.last_error}"
    settle(rig, produced[0])
    assert cloud_digest(rig.cloud, rig.edge.device) == produced
    assert client.stats.attempts == attempts <= 3
    log = rig.broker.log_text()
    assert "already connected" not in log, log  # never its own session taken over
    assert len(_connections(rig.broker, f"nl-edge-{rig.edge.device}")) == client.stats.connects
    record_property("fault_counts", f"slow link {rtt_s * 1000:.0f} ms RTT, 2 % loss: "
                    f"{attempts} connection attempts, {produced[0]} rows drained in "
                    f"{took:.1f} s, {proxy.retransmits} chunks held for a retransmission")


@pytest.mark.parametrize(("rtt_s", "records"), [(0.3, 20), (1.0, 6)])
def test_slow_link__clock_host_port_connects_and_publishes(rig, tmp_path, rtt_s, records):
    """device/mqtt_link.py over the host port's umqtt.simple, through the slow link."""
    rig.cloud.add_device(CLOCK, TENANT, "clock", f"{TENANT}.{CLOCK}", "-")
    with DelayProxy(rig.broker.host, rig.broker.port, rtt_s=rtt_s, loss=0.02, seed=2) as proxy:
        done = subprocess.run(
            [sys.executable, str(HOSTPORT / "run_clock.py"), str(tmp_path / "outbox.bin"),
             proxy.host, str(proxy.port), TENANT, CLOCK, str(records), "0.001"],
            env=host_env(), capture_output=True, text=True, timeout=60)
        attempts = proxy.connections
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"done {records}"  # every record acknowledged by the cloud
    rig.worker.drain()
    assert rig.cloud.hwm(CLOCK, features.ROOM) == records
    assert attempts == 1
    assert "already connected" not in rig.broker.log_text()
    assert len(_connections(rig.broker, f"clock-{CLOCK}")) == 1
