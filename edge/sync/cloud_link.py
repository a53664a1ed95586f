"""Store-and-forward from the edge outbox to the cloud over MQTT: nothing lost, nothing doubled.

- Rows leave the outbox only when the cloud's high-water mark for their device and stream
  reaches them (`…/{stream}/ack`, retained, QoS 1); gaps the cloud reports are sent again.
- Live rows (glucose and anything of priority 1 from the last minutes) go first, one small
  message each; backfill is packed into multi-epoch records, compressed, and paced by a
  token bucket so it never starves live data.
- A persistent session (fixed client id, clean_session off), keepalive with dead-link
  detection, reconnect with exponential backoff and jitter; on every reconnect the rows
  still waiting for an ack are sent again (the cloud ignores what it already has).
- The outbox has a quota; over it, the oldest lowest-priority rows are dropped (never
  glucose), counted per stream, and reported on `…/status`.
Everything runs on one thread so the store has one writer.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections import defaultdict
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt

from nightlink.edge.store import EdgeStore, OutboxItem
from nightlink.shared import codec, features, topics
from nightlink.shared.epoch import epoch_index

_LOGGER = logging.getLogger(__name__)
LIVE_PRIORITY = 1  # glucose (and alarms): sent first, one small message at a time
MAX_RECORDS_PER_BATCH = 64


@dataclass
class SyncStats:
    connects: int = 0
    disconnects: int = 0
    messages: int = 0
    rows_sent: int = 0
    bytes_sent: int = 0
    acked_rows: int = 0
    resend_requests: int = 0
    dropped: dict = field(default_factory=dict)


class TokenBucket:
    """At most `rate` tokens a second, bursts up to `burst`."""

    def __init__(self, rate: float, burst: float, now: float):
        self.rate, self.burst, self.tokens, self.t = rate, burst, burst, now

    def take(self, want: int, now: float) -> int:
        self.tokens = min(self.burst, self.tokens + (now - self.t) * self.rate)
        self.t = now
        got = int(min(want, self.tokens))
        self.tokens -= got
        return got


class SyncClient:
    def __init__(self, store: EdgeStore, cfg, tenant: str, *, client_id: str | None = None,
                 rng: random.Random | None = None):
        self.store = store
        self.cfg = cfg
        self.tenant = topics.check_name("tenant", tenant)
        self.device = store.device
        self.rng = rng or random.Random()
        self.stats = SyncStats()
        self.connected = False
        self._acks: list[tuple[str, bytes]] = []
        self._backoff = cfg.reconnect_min_s
        self._next_attempt = 0.0
        self._last_status = 0.0
        self._closing = False
        now = time.monotonic()
        self.bucket = TokenBucket(cfg.backfill_rows_per_s, cfg.backfill_rows_per_s, now)
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=client_id or f"nl-edge-{self.device}",
                                  clean_session=False)
        self.client.max_inflight_messages_set(cfg.max_inflight)
        self.client.max_queued_messages_set(0)
        if cfg.username:
            self.client.username_pw_set(cfg.username, cfg.password)
        if cfg.tls:
            self.client.tls_set()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = lambda _c, _u, m: self._acks.append((m.topic, bytes(m.payload)))

    # -- connection -----------------------------------------------------------------------

    def _on_connect(self, client, _u, _flags, reason_code, _p):
        if reason_code.is_failure:
            _LOGGER.warning("cloud broker refused the edge: %s", reason_code)
            return
        self.connected = True
        self.stats.connects += 1
        self._backoff = self.cfg.reconnect_min_s
        client.subscribe(f"{topics.PREFIX}/{self.tenant}/{self.device}/+/{topics.ACK}", qos=1)
        # Whatever was in flight may be lost: send every unacknowledged row again now.
        self.store.mark_all_unsent()
        _LOGGER.info("connected to %s:%d", self.cfg.host, self.cfg.port)

    def _on_disconnect(self, _c, _u, _flags, reason_code, _p):
        if self.connected and not self._closing:
            self.stats.disconnects += 1
            _LOGGER.warning("cloud broker link lost (%s)", reason_code)
        self.connected = False

    def _connect(self, now: float) -> None:
        if now < self._next_attempt:
            return
        try:
            if self.stats.connects or self.stats.disconnects:
                self.client.reconnect()
            else:
                self.client.connect(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s)
        except (OSError, ValueError) as exc:
            delay = self._backoff * (0.5 + self.rng.random() / 2)  # jitter: half to full
            _LOGGER.info("cannot reach %s:%d (%s); next try in %.1f s", self.cfg.host,
                         self.cfg.port, exc, delay)
            self._next_attempt = now + delay
            self._backoff = min(self._backoff * 2, self.cfg.reconnect_max_s)

    # -- acknowledgements ---------------------------------------------------------------

    def _handle_acks(self) -> None:
        acks, self._acks = self._acks, []
        for topic, payload in acks:
            try:
                kind, _tenant, device, stream = topics.parse(topic)
                body = json.loads(payload)
                hwm = int(body["hwm"])
                gaps = [(int(a), int(b)) for a, b in body.get("gaps", [])]
            except (topics.TopicError, ValueError, KeyError, TypeError) as exc:
                _LOGGER.warning("ignoring a malformed ack on %s: %s", topic, exc)
                continue
            if kind != "ack" or device != self.device or features.stream_by_name(stream) is None:
                continue
            sid = features.stream_by_name(stream)[features.S_ID]
            self.stats.acked_rows += self.store.ack(device, sid, hwm)
            for first, last in gaps:
                self.stats.resend_requests += self.store.resend_range(device, sid, first, last)

    # -- sending --------------------------------------------------------------------------

    def _send(self, items: list[OutboxItem], *, compress: bool) -> int:
        """Publish rows grouped by device and stream; mark them sent. Returns rows sent."""
        groups: dict[tuple[str, int], list[codec.Record]] = defaultdict(list)
        ids: dict[tuple[str, int], list[int]] = defaultdict(list)
        for it in items:
            groups[(it.device, it.stream)].append(codec.decode(it.blob))
            ids[(it.device, it.stream)].append(it.record_id)
        sent = 0
        for (device, stream), recs in groups.items():
            recs.sort(key=lambda r: (r.boot, r.seq))
            packed = codec.pack_runs(recs, self.cfg.rows_per_record)
            topic = topics.data_topic(self.tenant, device, features.stream(stream)[features.S_NAME])
            for i in range(0, len(packed), MAX_RECORDS_PER_BATCH):
                part = packed[i : i + MAX_RECORDS_PER_BATCH]
                payload = (codec.encode_batch(part, compress=compress)
                           if compress or len(part) > 1 else codec.encode(part[0]))
                info = self.client.publish(topic, payload, qos=1)
                if info.rc != mqtt.MQTT_ERR_SUCCESS:
                    return sent  # link gone: the rest stay unsent
                self.stats.messages += 1
                self.stats.bytes_sent += len(payload)
            self.store.mark_sent(ids[(device, stream)], time.time())
            n = sum(r.count for r in packed)
            sent += n
            self.stats.rows_sent += n
        return sent

    def pump(self) -> int:
        """One pass: live rows first, then as much backfill as the bucket allows."""
        now = time.time()
        live_from = epoch_index(now) - self.cfg.live_window_epochs
        due = self.store.due(resend_after_s=self.cfg.resend_after_s, now=now, limit=200,
                             max_priority=LIVE_PRIORITY)
        live = [it for it in due if codec.peek_header(it.blob)[codec.H_EPOCH] >= live_from]
        sent = self._send(live, compress=False) if live else 0
        budget = self.bucket.take(self.cfg.backfill_batch_rows, time.monotonic())
        if budget:
            back = [it for it in self.store.due(resend_after_s=self.cfg.resend_after_s, now=now,
                                                limit=budget + len(live))
                    if it.record_id not in {x.record_id for x in live}][:budget]
            if back:
                sent += self._send(back, compress=True)
            self.bucket.tokens += budget - len(back)  # give back what was not used
        return sent

    def _status(self, now: float) -> None:
        dropped = self.store.enforce_quota(self.cfg.max_outbox_rows)
        for s, n in dropped.items():
            self.stats.dropped[s] = self.stats.dropped.get(s, 0) + n
        if now - self._last_status < self.cfg.status_interval_s and not dropped:
            return
        self._last_status = now
        drops = {features.stream(s)[features.S_NAME]: n for s, n in self.store.drops().items()}
        ranges = {features.stream(s)[features.S_NAME]: r
                  for s, r in self.store.dropped_ranges(self.device).items()}
        body = {"outbox": self.store.outbox_size(), "drops": drops, "dropped": ranges,
                "boot": self.store.boot}
        self.client.publish(topics.status_topic(self.tenant, self.device),
                            json.dumps(body, separators=(",", ":")), qos=1, retain=True)

    # -- the loop -------------------------------------------------------------------------

    def step(self, timeout: float = 0.05) -> None:
        now = time.monotonic()
        if not self.connected:
            self._connect(now)
            if not self.connected and self.client.socket() is None:
                time.sleep(timeout)  # nothing to wait on: do not spin
        rc = self.client.loop(timeout=timeout)
        if rc != mqtt.MQTT_ERR_SUCCESS and self.connected:
            self._on_disconnect(None, None, None, rc, None)
        self._handle_acks()
        if self.connected:
            self._status(now)  # the quota first: what is over it is dropped, not sent
            self.pump()

    def run(self, stop, *, until_empty: bool = False) -> None:
        """Loop until stop is set (a threading.Event), or until the outbox is empty."""
        while not stop.is_set():
            self.step()
            if until_empty and self.connected and self.store.outbox_size() == 0:
                break
        self._closing = True
        try:
            self.client.disconnect()
        except OSError:
            pass
