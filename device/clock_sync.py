# Clock side of store-and-forward: the flash outbox drained over MQTT (umqtt.simple's API).
# Records leave the outbox only on the cloud's high-water-mark acks; gaps are sent again.

import json
import random

try:
    from micropython import const
except ImportError:  # CPython (host port, tests)

    def const(x):
        return x


try:
    import features
    import topics
except ImportError:  # CPython: the package layout
    from nightlink.shared import features, topics

_BACKOFF_MIN_MS = const(1000)
_BACKOFF_MAX_MS = const(60000)
_BATCH = const(8)  # records per pass: bounded RAM, live data not held up for long


class ClockSync:
    """Drive with `step(now_ms)` from the main loop; `make_client()` returns a connected-to-be
    umqtt.simple.MQTTClient (on the board) or its host-port shim (tests)."""

    def __init__(self, outbox, make_client, tenant, device, keepalive_s=30):
        self.outbox = outbox
        self.make_client = make_client
        self.tenant = topics.check_name("tenant", tenant)
        self.device = topics.check_name("device", device)
        self.keepalive_ms = keepalive_s * 1000
        self.client = None
        self.sent = {}  # stream id -> highest seq published on this connection
        self.backoff = _BACKOFF_MIN_MS
        self.next_attempt = 0
        self.last_io = 0
        self.connects = 0
        self.published = 0
        self.acks = 0
        self.resends = 0
        self._reported = None
        self._topics = {}
        for s in features.STREAMS:
            self._topics[s[features.S_ID]] = topics.data_topic(tenant, device, s[features.S_NAME])

    # -- connection ---------------------------------------------------------------------

    def _connect(self, now_ms):
        if now_ms < self.next_attempt:
            return
        try:
            c = self.make_client()
            c.set_callback(self._on_message)
            c.connect(False)  # clean_session=False: the broker keeps our acks while away
            c.subscribe("%s/%s/%s/+/%s" % (topics.PREFIX, self.tenant, self.device, topics.ACK),
                        1)
        except OSError:
            self._failed(now_ms)
            return
        self.client = c
        self.sent = {}  # whatever was in flight may be lost: send from the last ack again
        self._reported = None  # tell the cloud about drops on every new connection
        self.backoff = _BACKOFF_MIN_MS
        self.last_io = now_ms
        self.connects += 1

    def _failed(self, now_ms):
        if self.client is not None:
            try:
                self.client.disconnect()
            except OSError:
                pass
        self.client = None
        # Exponential backoff with jitter: between half and all of the current delay.
        half = self.backoff // 2
        self.next_attempt = now_ms + half + random.getrandbits(16) % (half + 1)
        self.backoff = min(self.backoff * 2, _BACKOFF_MAX_MS)

    def _report(self):
        """Publish rows dropped for lack of flash (counts and seq ranges) when they change,
        so the cloud's high-water marks can step over them."""
        state = (len(self.outbox.drops), sum(self.outbox.drops.values()))
        if state == self._reported:
            return
        names = {}
        for s in features.STREAMS:
            names[s[features.S_ID]] = s[features.S_NAME]
        drops = {}
        dropped = {}
        for sid in self.outbox.drops:
            drops[names[sid]] = self.outbox.drops[sid]
            dropped[names[sid]] = self.outbox.dropped.get(sid, [])
        body = json.dumps({"outbox": self.outbox.count, "drops": drops, "dropped": dropped})
        self.client.publish(topics.status_topic(self.tenant, self.device), body, True, 1)
        self._reported = state

    # -- acknowledgements -----------------------------------------------------------------

    def _on_message(self, topic, msg):
        if isinstance(topic, bytes):
            topic = topic.decode()
        try:
            kind, _tenant, device, stream = topics.parse(topic)
            body = json.loads(msg)
            hwm = int(body["hwm"])
        except (ValueError, KeyError, TypeError):
            return  # not ours, or damaged: the next ack will do
        s = features.stream_by_name(stream)
        if kind != "ack" or device != self.device or s is None:
            return
        sid = s[features.S_ID]
        self.acks += 1
        self.outbox.ack(sid, hwm)
        gaps = body.get("gaps") or []
        if gaps:
            first = int(gaps[0][0])
            if self.sent.get(sid, 0) >= first:
                self.sent[sid] = first - 1  # send again from the first gap
                self.resends += 1

    # -- the loop ---------------------------------------------------------------------------

    def step(self, now_ms):
        """One pass: connect if needed, take acks, publish what waits, keep the link alive."""
        if self.client is None:
            self._connect(now_ms)
            if self.client is None:
                return
        try:
            self.client.check_msg()
            self._report()
            for rec in self.outbox.pending(self.sent, _BATCH):
                stream = rec[1]
                self.client.publish(self._topics[stream], rec, False, 1)
                seq = rec[14] | (rec[15] << 8) | (rec[16] << 16) | (rec[17] << 24)
                rows = rec[22] | (rec[23] << 8)
                self.sent[stream] = seq + rows - 1
                self.published += 1
                self.last_io = now_ms
            if now_ms - self.last_io > self.keepalive_ms // 2:
                self.client.ping()
                self.last_io = now_ms
        except OSError:
            self._failed(now_ms)
