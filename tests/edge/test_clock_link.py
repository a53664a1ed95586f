"""The edge's client on its LAN broker backs off with jitter when the broker refuses it, and says
why, naming the broker, since the clocks' feed waits on it."""

import random
import time

import pytest

from nightlink.edge.node.config import ClocksConfig
from nightlink.edge.sync.clock_link import ClockLink, jitter_s
from tests.support.services import Broker
from tests.support.smtp import closed_port
from tests.support.waiting import until


def test_jitter__grows_with_failures_to_its_ceiling_and_varies():
    rng = random.Random(1)
    assert jitter_s(0, rng) == 0.0
    waits = [[jitter_s(n, rng) for _ in range(200)] for n in (1, 3, 10)]
    assert all(0 <= w <= 1 for w in waits[0]) and all(0 <= w <= 4 for w in waits[1])
    assert max(waits[2]) <= 30 and max(waits[2]) > 20  # capped, and reaching near the cap
    assert len({round(w, 3) for w in waits[1]}) > 150  # not in step


def test_refused_login__few_attempts_then_a_prompt_stop(tmp_path):
    (tmp_path / "b").mkdir()
    broker = Broker(tmp_path / "b", extra="connection_messages true\nlog_type all\n",
                    anonymous=False).start()
    cfg = ClocksConfig(enabled=True, host=broker.host, port=broker.port, username="edge",
                       password="wrong", keepalive_s=10)
    link = ClockLink(cfg, "fam-1", lambda *_: None, rng=random.Random(7))
    try:
        link.start()
        time.sleep(6)
        stopping = time.monotonic()
        link.stop()
        stopped_in = time.monotonic() - stopping
    finally:
        broker.stop()
    attempts = broker.log_text().count("New client connected") + \
        broker.log_text().count("not authorised")
    assert not link.connected and link.failures >= 2
    # paho's delay (1, 2, 4 s) plus the jitter: a handful of attempts in 6 s, not a storm.
    assert 2 <= link.failures <= 5, link.failures
    assert attempts <= 2 * link.failures + 2, broker.log_text()[-2000:]
    assert stopped_in < 3, f"stop took {stopped_in:.1f} s"


def _failing(cfg, attempts: int) -> ClockLink:
    """A link run until `attempts` attempts have failed, then stopped."""
    link = ClockLink(cfg, "fam-1", lambda *_: None, rng=random.Random(7))
    try:
        link.start()
        until(lambda: link.failures >= attempts, timeout=15, what=f"{attempts} failed attempts")
    finally:
        link.stop()
    return link


def test_refused_login__said_with_the_broker_and_the_user(tmp_path, caplog):
    (tmp_path / "b").mkdir()
    broker = Broker(tmp_path / "b", anonymous=False).start()
    cfg = ClocksConfig(enabled=True, host=broker.host, port=broker.port, username="edge",
                       password="wrong", keepalive_s=10)
    try:
        link = _failing(cfg, 1)
    finally:
        broker.stop()
    assert "refused the edge's login as 'edge'" in link.last_error
    assert f"the clocks' LAN broker {broker.host}:{broker.port}: refused" in caplog.text


@pytest.mark.parametrize("host, says", [
    ("lan-broker.invalid", "the name 'lan-broker.invalid' is not found"),
    ("127.0.0.1", "connection refused (nothing listens on that port)")])
def test_unreachable_broker__the_reason_is_said(host, says, caplog):
    """paho gives no reason for a connection that fails; the link finds it (DNS, TCP) and
    warns, at most once a minute, that the clocks get no glucose meanwhile."""
    port = closed_port()  # from this worker's own block: no other test takes it
    cfg = ClocksConfig(enabled=True, host=host, port=port, keepalive_s=10)
    link = _failing(cfg, 2)
    assert says in link.last_error
    warned = [r.getMessage() for r in caplog.records if "LAN broker" in r.getMessage()]
    assert len(warned) == 1 and says in warned[0] and "no glucose" in warned[0]


def test_commands_and_health_reports_of_clocks_are_no_dead_letters(tmp_path):
    from nightlink.edge.store import EdgeStore
    from nightlink.edge.sync.clock_link import accept

    store = EdgeStore(tmp_path / "e.db")
    assert accept(store, "nl/v1/fam-1/a4cf12b0c3d4/cmd", b'{"cmd": "x"}') == 0
    assert accept(store, "nl/v1/fam-1/a4cf12b0c3d4/status", b'{"outbox": 3}') == 0
    assert store.db.scalar("SELECT COUNT(*) FROM dead_letters") == 0
    store.close()
