"""The edge's client on its LAN broker backs off with jitter when the broker refuses it."""

import random
import time

from nightlink.edge.node.config import ClocksConfig
from nightlink.edge.sync.clock_link import ClockLink, jitter_s
from tests.support.services import Broker


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
