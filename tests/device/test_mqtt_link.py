"""The clock's one MQTT link (device/mqtt_link.py) under real MicroPython, driving the real
umqtt.simple over a socket double whose other end is an in-process broker: per-topic
handlers, keepalive, take-over and loss of the session, back-off with jitter while the broker
refuses (never a tight loop), re-subscription, and Wi-Fi network by network."""

import json
import re

import pytest

from tests.conftest import ROOT
from tests.support.micropython import run_micropython
from tests.support.mpy_board import BOARD_LIBS, double_puts

SCRIPT = ROOT / "tests" / "device" / "mqtt_link_check.py"
FEED = [["nl/v1/smith/ed9e00000001/clock/glucose", "98"],
        ["nl/v1/smith/ed9e00000001/clock/night", "{}"]]
SUBS = [["nl/v1/smith/+/clock/+", 0], ["nl/v1/smith/c0ffee000001/+/ack", 1]]


@pytest.fixture(scope="module")
def link():
    out = run_micropython(SCRIPT, libs=BOARD_LIBS, puts=double_puts(), heap=512 * 1024)
    return json.loads(out.strip().splitlines()[-1])


def _backs_off(failed_at, first_delay_ms=1000):
    """Each wait between failed attempts lies between half and all of a delay that doubles
    from first_delay_ms up to two minutes."""
    delay = first_delay_ms
    for a, b in zip(failed_at, failed_at[1:], strict=False):
        if not delay // 2 <= b - a <= delay + 100:  # +100: the test steps every 100 ms
            return False
        delay = min(delay * 2, 120000)
    return True


@pytest.mark.micropython
def test_mqtt_link__handlers_per_filter(link):
    assert link["first"] == [True, 1, SUBS]
    d = link["dispatch"]
    assert d["feed"] == FEED  # the retained reading first, then the night; no other tenant
    assert d["acks"] == ["nl/v1/smith/c0ffee000001/room/ack"]  # not the other clock's
    assert d["received"] == 3
    assert link["published"] is True


@pytest.mark.micropython
def test_mqtt_link__pings_every_half_keepalive(link):
    assert link["pings_in_2_min"] == 4  # keepalive 60 s: a ping every 30 s


@pytest.mark.micropython
def test_mqtt_link__taken_over_comes_back_resubscribed(link):
    t = link["takeover"]
    assert t["failed_at"] == [122100]  # the first step after the other client connected
    assert 122100 + 500 <= t["sessions"][1] <= 122100 + 1000  # after the first back-off
    assert t["up"] and t["connects"] == 2 and t["subs"] == SUBS


@pytest.mark.micropython
def test_mqtt_link__broker_down_never_a_tight_loop(link):
    d = link["down"]
    # Ten minutes of a refusing broker. The waits are jittered between half and all of 1 s,
    # 2 s, ... 120 s, so the count depends on the draws: at most 16 even if every draw is the
    # shortest (0.5 + 1 + ... + 32 s, then 60 s each), hundreds in a tight loop.
    assert d["attempts"] <= 16
    assert _backs_off(d["failed_at"])
    # jittered: without it every wait would be exactly 1 s, 2 s, 4 s ... up to 2 minutes
    waits = [b - a for a, b in zip(d["failed_at"], d["failed_at"][1:], strict=False)]
    assert waits != [min(1000 * 2**k, 120000) for k in range(len(waits))]
    assert link["back"] == [True, 3, SUBS]


@pytest.mark.micropython
def test_mqtt_link__connack_refusal_backs_off_too(link):
    r = link["refused"]
    assert r["up"] is False and len(r["failed_at"]) <= 8
    assert _backs_off(r["failed_at"])
    # the reason, for the status screen and the log: once per attempt, never a flood
    assert r["error"] == "refused the login (not authorised)"
    assert len(r["log"]) == len(r["failed_at"])
    first, *rest = r["log"]  # the kicked session first, then every refused attempt
    assert re.fullmatch(r"broker edge\.lan:1883 connection lost; next try in \d+\.\d s", first)
    assert rest and all(re.fullmatch(r"broker edge\.lan:1883 refused the login \(not "
                                     r"authorised\); next try in \d+\.\d s", line)
                        for line in rest), r["log"]


@pytest.mark.micropython
def test_mqtt_link__one_attempt_at_a_time_with_a_connack_timeout(link):
    assert link["timeouts"] == [10]  # every attempt bounds its wait for the CONNACK


@pytest.mark.micropython
def test_mqtt_link__closed_or_silent_before_connack_backs_off(link):
    """umqtt.simple fails with IndexError on a socket closed before the CONNACK and with
    a timeout on a silent broker: both are a failed attempt, never a crash or a tight loop."""
    c, s = link["closed"], link["silent"]
    assert c["up"] is False and 3 <= len(c["failed_at"]) <= 8 and _backs_off(c["failed_at"])
    assert c["error"] == "closed the connection before answering"
    assert s["up"] is False and 1 <= len(s["failed_at"]) <= 3
    assert s["error"] == "did not answer in 10 s"
    assert link["recovered"] == [True, None]


@pytest.mark.micropython
def test_mqtt_link__wifi_network_by_network(link):
    w = link["wifi"]
    assert w["ssid"] == "attic" and w["tries"] == 2 and w["active"] is True
    assert 10000 <= w["joined_at"] <= 11000  # home got its 10 s, then the attic joined
