# Clock side of store-and-forward: the flash outbox drained over the clock's MQTT link.
# Records leave the outbox only on the cloud's high-water-mark acks; gaps are sent again.

import json

try:
    from micropython import const
except ImportError:  # CPython (host port, tests)

    def const(x):
        return x


from nightlink.shared import codec, features, topics

_BATCH = const(8)  # records per pass: bounded RAM, live data not held up for long
_SEQ_LIMIT = 2147483648  # 2**31: an ack at or above it is no seq mark (u32 seqs need room)


class ClockSync:
    """Drive with `step(now_ms)` from the main loop, after the link's own step. `link` is the
    clock's MqttLink: it owns the broker session; this class only publishes and takes acks."""

    def __init__(self, outbox, link, tenant, device):
        self.outbox = outbox
        self.link = link
        self.tenant = topics.check_name("tenant", tenant)
        self.device = topics.check_name("device", device)
        self.sent = {}  # stream id -> highest seq published on this session
        self.published = 0
        self.acks = 0
        self.resends = 0
        self.bad_acks = 0  # acks refused: hwm not a number from 0 to 2**31 - 1
        self.catch_ups = 0  # acks of an earlier life: numbering moved past their mark
        self._reported = None
        self._topics = {}
        for s in features.STREAMS:
            self._topics[s[features.S_ID]] = topics.data_topic(tenant, device, s[features.S_NAME])
        link.subscribe("%s/%s/%s/+/%s" % (topics.PREFIX, self.tenant, self.device, topics.ACK),
                       1, self._on_message)
        link.on_connect(self._new_session)

    def _new_session(self, now_ms):
        self.sent = {}  # whatever was in flight may be lost: send from the last ack again
        self._reported = None  # tell the cloud about drops on every new session

    def _report(self):
        """Publish rows dropped for lack of flash (counts and seq ranges) when they change,
        so the cloud's high-water marks can step over them. False if the link failed."""
        state = (len(self.outbox.drops), sum(self.outbox.drops.values()))
        if state == self._reported:
            return True
        names = {}
        for s in features.STREAMS:
            names[s[features.S_ID]] = s[features.S_NAME]
        drops = {}
        dropped = {}
        for sid in self.outbox.drops:
            drops[names[sid]] = self.outbox.drops[sid]
            dropped[names[sid]] = self.outbox.dropped.get(sid, [])
        body = json.dumps({"outbox": self.outbox.count, "drops": drops, "dropped": dropped})
        if not self.link.publish(topics.status_topic(self.tenant, self.device), body, True, 1):
            return False
        self._reported = state
        return True

    # -- acknowledgements -----------------------------------------------------------------

    def _on_message(self, topic, msg):
        """An ack: {"hwm": seq, "gaps": [[first, last], ...]}. A damaged one is ignored
        whole. One above the last seq written is the cloud's mark of an earlier life of the
        clock (reflashed, numbering from 1 again): not taken (it marked every row under it
        as sent, unsent), but the numbering goes on after it, as an edge's does; one at or
        above 2**31 is no mark (hwm 2**32 - 1 wedged the outbox at every start)."""
        try:
            kind, _tenant, device, stream = topics.parse(topic)
            body = json.loads(msg)
            hwm = body["hwm"]
            gaps = body.get("gaps") or []
            first = None
            if gaps:
                first, last = gaps[0]
                if not isinstance(first, int) or not isinstance(last, int) or first < 1:
                    return
        except Exception:  # noqa: BLE001 - not ours, or damaged: the next ack will do
            return
        s = features.stream_by_name(stream)
        if kind != "ack" or device != self.device or s is None:
            return
        sid = s[features.S_ID]
        if not isinstance(hwm, int) or hwm < 0 or hwm >= _SEQ_LIMIT:
            self.bad_acks += 1
            return
        if hwm > self.outbox.last_seq.get(sid, 0):
            self.outbox.catch_up(sid, hwm)
            self.catch_ups += 1
            return
        self.acks += 1
        self.outbox.ack(sid, hwm)
        if first is not None and self.sent.get(sid, 0) >= first:
            self.sent[sid] = first - 1  # send again from the first gap
            self.resends += 1

    # -- the loop ---------------------------------------------------------------------------

    def step(self, now_ms):
        """One pass: report drops, publish what waits (the link takes acks in its step)."""
        if not self.link.up or not self._report():
            return
        for rec in self.outbox.pending(self.sent, _BATCH):
            h = codec.peek_header(rec)
            stream = h[codec.H_STREAM]
            if not self.link.publish(self._topics[stream], rec, False, 1):
                return  # the link backs off; the next session sends from the last ack
            self.sent[stream] = codec.last_seq(h)
            self.published += 1
