"""device/main.py's own wiring through a simulated night: one MQTT link (one client, one id,
one broker session) carries the edge's glucose feed in and the outbox's records out. Under
real MicroPython the doubles are only the pins and buses, Wi-Fi, the clock, and the broker
behind the real umqtt.simple's socket; on the host port the broker is a real Mosquitto whose
log file records every connection."""

import json
import subprocess
import sys
import time

import paho.mqtt.client as mqtt
import pytest

from tests.conftest import ROOT
from tests.support.cloud import ingesting_cloud
from tests.support.mpy_board import BOARD_LIBS, double_puts, host_env

SCRIPT = ROOT / "tests" / "device" / "main_check.py"
T0 = 1768510800
CLOCK = "a4cf12b0c3d4"
CLIENT_ID = "nl-clock-" + CLOCK
FEED = "nl/v1/smith/ed9e00000001/clock/glucose"


def _sgv(k):  # as main_check.reading(k)
    return 130 - 9 * k if k < 8 else 58 + 12 * (k - 8)


@pytest.mark.micropython
def test_main__one_link_through_a_night__micropython(mpy_json):
    got = mpy_json(SCRIPT, libs=BOARD_LIBS, puts=double_puts(), heap=512 * 1024, timeout=300)
    broker = got["broker"]
    # One connection under the clock's id, never taken over, still open at dawn.
    assert broker["log"] == [["connect", CLIENT_ID]]
    assert broker["sessions"] == [CLIENT_ID]
    assert got["client_id"] == CLIENT_ID and got["connects"] == 1 and got["failures"] == 0
    assert got["wifi"] == "home" and broker["pings"] > 0
    # Every message of the edge's feed reached the app, the retained one and the night's.
    assert got["readings"] == [[T0 + 1800 * k + 60, _sgv(k)] for k in range(16)]
    # Every room epoch the clock wrote reached the broker once, in order, and was acked.
    assert got["written"] >= 90
    assert broker["data"] == [["room", seq] for seq in range(1, got["written"] + 1)]
    assert got["published"] == got["acks"] == got["written"] and got["unacked"] == 0


@pytest.fixture
def logged_broker(mosquitto):
    """The test's Mosquitto, restarted to log every connection to its log file."""
    mosquitto.stop()
    with open(mosquitto.conf, "a") as f:
        f.write("log_type notice\nlog_type information\nconnection_messages true\n")
    mosquitto.start()
    return mosquitto


@pytest.fixture
def cloud(tmp_path, logged_broker):
    with ingesting_cloud(tmp_path, logged_broker, "smith", CLOCK, "ingest-main") as pair:
        yield pair


def _rows(store):
    return store.db.query("SELECT seq FROM epoch_rows WHERE device = ? ORDER BY seq", (CLOCK,))


def test_main__one_link_through_a_night__host_port(tmp_path, logged_broker, cloud):
    store, worker = cloud
    edge = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="edge-feed")
    edge.connect(logged_broker.host, logged_broker.port)
    edge.loop_start()
    body = json.dumps({"t": T0 + 60, "sgv": 64, "trend": 5, "delta": -6})
    edge.publish(FEED, body, qos=1, retain=True).wait_for_publish(10)
    edge.loop_stop()
    edge.disconnect()
    root = tmp_path / "clock"
    root.mkdir()
    proc = subprocess.run([sys.executable, str(SCRIPT), f"{root}/", logged_broker.host,
                           str(logged_broker.port)], env=host_env(), capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    log = logged_broker.log_text()
    mine = [ln for ln in log.splitlines()
            if "New client connected" in ln and f" as {CLIENT_ID} " in ln]
    assert len(mine) == 1, log
    assert "already connected" not in log
    assert got["client_id"] == CLIENT_ID and got["connects"] == 1 and got["failures"] == 0
    assert [T0 + 60, 64] in got["readings"]  # the edge's feed reached the app
    assert got["written"] >= 90 and got["published"] >= got["written"] - 1
    deadline = time.monotonic() + 20
    while len(_rows(store)) < got["published"] and time.monotonic() < deadline:
        time.sleep(0.05)
    worker.drain()
    assert [r["seq"] for r in _rows(store)] == list(range(1, got["published"] + 1))


def test_main__the_time_is_tried_again_until_ntp_answers():
    """After a power cut the RTC starts at 2000-01-01; with Wi-Fi late or NTP silent at start
    the clock must not go on with that time (readings' ages, quiet hours and the shown time
    would all be wrong): _set_time says the time is still unknown, so the loop retries."""
    import subprocess
    import sys

    from tests.conftest import ROOT
    from tests.support.mpy_board import host_env

    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "device" / "ntp_check.py")],
                          capture_output=True, text=True, env=host_env(), check=True, cwd=ROOT)
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got == {"results": [False, True], "calls": ["no answer", "set"]}


@pytest.mark.micropython
def test_main__a_lan_without_ntp_takes_the_edges_time(mpy_json):
    """After a power cut on a LAN with no NTP server the RTC reads 2000: the edge's time
    message (not retained) sets it, malformed ones are dropped and counted, and a reading
    then has its real age. Once NTP answers, the edge's time is not taken."""
    got = mpy_json(ROOT / "tests" / "device" / "edge_time_check.py", libs=BOARD_LIBS,
                   puts=double_puts(), heap=512 * 1024, timeout=300)
    lan = got["no_ntp"]
    assert lan["bad"] == 2 and lan["rtc_set"] == [T0]  # set once, then within 2 s of it
    assert T0 < lan["now"] <= T0 + 6 * 60  # the passes after the message, a minute each
    assert lan["readings"] == [T0 - 120] and 2 <= lan["age_min"] <= 8
    assert lan["now_hm"][0] in (21, 20) and not lan["retained_time"]
    ntp = got["ntp"]
    assert ntp["rtc_set"] == [] and ntp["bad"] == 0
    assert T0 <= ntp["now"] < T0 + 600 and 2 <= ntp["age_min"] <= 12
