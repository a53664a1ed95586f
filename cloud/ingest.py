"""MQTT ingest: decode device messages with the shared codec, store every row once, acknowledge.

One worker subscribes to `nl/v1/+/+/+` (or, to share the load between several workers,
`$share/ingest/nl/v1/+/+/+`). For each message it checks the topic, that the device is
provisioned for that tenant, and the bytes; stores the rows (upsert on device, stream,
boot, seq); and publishes the stream's high-water mark, with any gaps it sees above it, on
`…/{stream}/ack`. A message that fails any check goes to the dead-letter table with the
reason; it never stops the worker or holds up the messages behind it.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt

from nightlink.cloud import metrics
from nightlink.cloud.store import Store
from nightlink.nightscout.documents import DocumentError
from nightlink.shared import codec, features, topics, units
from nightlink.shared.epoch import EPOCH_S, epoch_start
from nightlink.sql import DatabaseError

_LOGGER = logging.getLogger(__name__)
_CGM_NAMES = features.names(features.CGM)
_GLUCOSE = _CGM_NAMES.index("glucose_mgdl")
_AGE = _CGM_NAMES.index("minutes_since")
_TREND = _CGM_NAMES.index("direction")


class Rejected(ValueError):
    """A message that cannot be stored; the message is the dead-letter reason."""


@dataclass
class Outcome:
    rows: int = 0  # rows new to the store
    acks: list[tuple[str, dict]] = field(default_factory=list)  # (topic, payload)
    entries: list[dict] = field(default_factory=list)  # Nightscout entries derived from CGM rows


def glucose_entries(rec: codec.Record, device: str) -> list[dict]:
    """Nightscout sgv entries for the readings a CGM record carries (one per reading).

    A reading's time is the epoch's end minus its age; every epoch that carries the same
    reading gives the same time, so (date, type) de-duplicates them.
    """
    out = {}
    for i, vals in enumerate(rec.values()):
        g, age, trend = vals[_GLUCOSE], vals[_AGE], vals[_TREND]
        if g is None or age is None:
            continue
        t = epoch_start(rec.epoch + i) + EPOCH_S - age * 60.0
        date = int(round(t)) * 1000
        out[date] = {
            "type": "sgv",
            "date": date,
            "dateString": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(date / 1000)),
            "sgv": int(g),
            "direction": units.DIRECTIONS[int(trend)] if trend is not None else "NONE",
            "device": f"nightlink-{device}",
        }
    return list(out.values())


def handle(store: Store, topic: str, payload: bytes) -> Outcome:
    """Check, decode and store one message. Raises Rejected with the dead-letter reason."""
    try:
        kind, tenant, device, stream = topics.parse(topic)
    except topics.TopicError as exc:
        raise Rejected(str(exc)) from None
    if kind not in ("data", "status"):
        raise Rejected(f"{topic} is not a data or status topic.")
    dev = store.device(device)
    if dev is None or dev["tenant_id"] != tenant:
        raise Rejected(f"The device {device} is not provisioned for tenant {tenant}.")
    if kind == "status":
        try:
            doc = json.loads(payload)
            if not isinstance(doc, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            raise Rejected(f"The status report is not a JSON object ({exc}).") from None
        store.put_device_status(device, tenant, doc)
        out = Outcome()
        for name, ranges in (doc.get("dropped") or {}).items():
            s = features.stream_by_name(name)
            if s is None or not isinstance(ranges, list):
                continue
            try:
                store.add_dropped(device, s[features.S_ID], [(int(a), int(b)) for a, b in ranges])
            except (TypeError, ValueError):
                raise Rejected("The status report's dropped ranges are not [first, last] "
                               "pairs.") from None
            hwm = store.advance_hwm(device, s[features.S_ID])
            gaps = store.missing_seqs(device, s[features.S_ID])
            out.acks.append((topics.ack_topic(tenant, device, name),
                             {"stream": name, "hwm": hwm, "gaps": [list(g) for g in gaps[:50]]}))
        for name, n in (doc.get("drops") or {}).items():
            if isinstance(n, int):
                metrics.DEVICE_DROPS.labels(device, str(name)[:32]).set(n)
        return out
    try:
        if codec.is_batch(payload):
            records, errors = codec.decode_batch(payload)
        else:
            records, errors = [codec.decode(payload)], []
    except codec.WireError as exc:
        raise Rejected(f"{type(exc).__name__}: {exc}") from None
    for rec in records:
        if codec.device_name(rec.device) != device:
            raise Rejected(f"A record of device {codec.device_name(rec.device)} was sent on "
                           f"{device}'s topic.")
        if features.stream(rec.stream)[features.S_NAME] != stream:
            raise Rejected(f"A {features.stream(rec.stream)[features.S_NAME]} record was sent on the "
                           f"{stream} topic.")
    out = Outcome()
    data = store.tenant(tenant)
    out.rows = data.put_rows(records)
    if features.stream_by_name(stream)[features.S_ID] == features.CGM:
        entries = [e for rec in records for e in glucose_entries(rec, device)]
        if entries:
            # The Nightscout core's rules: a reading an app already uploaded (the same value
            # less than a minute away) is not stored again, and an app's document is kept.
            try:
                out.entries, _dupes = data.add_entries(entries)
            except DocumentError as exc:
                raise Rejected(f"A glucose reading of the record is not valid: {exc}") from None
    sid = features.stream_by_name(stream)[features.S_ID]
    hwm = store.advance_hwm(device, sid)
    gaps = store.missing_seqs(device, sid)
    out.acks.append((topics.ack_topic(tenant, device, stream),
                     {"stream": stream, "hwm": hwm, "gaps": [list(g) for g in gaps[:50]]}))
    for rec in records:
        metrics.DEVICE_LAG.labels(device).set(
            max(0.0, time.time() - epoch_start(rec.epoch + rec.count)))
    metrics.INGEST_ROWS.labels(stream).inc(out.rows)
    if errors:
        i, exc = errors[0]
        raise Rejected(f"record {i + 1} of the batch: {type(exc).__name__}: {exc} "
                       f"({len(records)} good records stored)") from None
    return out


class IngestWorker:
    """A paho client feeding `handle` from one thread, publishing acks as it goes."""

    def __init__(self, store: Store, settings, *, client_id: str = ""):
        self.store = store
        self.settings = settings
        self.handled = 0
        self.rejected = 0
        self.connected = threading.Event()
        self._queue: queue.Queue = queue.Queue(maxsize=10000)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name="ingest", daemon=True)
        group = settings.mqtt_shared_group
        self.filter = (f"$share/{group}/{topics.INGEST_FILTER}" if group
                       else topics.INGEST_FILTER)
        # A persistent session (fixed client id, clean_session False) keeps QoS 1 messages
        # that arrive while the worker restarts.
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  clean_session=not client_id)
        if settings.mqtt_username:
            self.client.username_pw_set(settings.mqtt_username, settings.mqtt_password)
        if settings.mqtt_tls:
            self.client.tls_set()
        self.client.reconnect_delay_set(1, 30)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *a: self.connected.clear()
        self.client.on_message = self._on_message

    def _on_connect(self, client, _u, _f, reason_code, _p):
        if reason_code.is_failure:
            _LOGGER.error("the broker refused the ingest worker: %s", reason_code)
            return
        client.subscribe(self.filter, qos=1)
        self.connected.set()

    def _on_message(self, _c, _u, msg):
        # Hand over to the worker thread; the broker holds the rest while the queue is full.
        self._queue.put((msg.topic, bytes(msg.payload)))

    def process(self, topic: str, payload: bytes) -> None:
        """Handle one message completely: store, publish acks, or dead-letter it."""
        tenant = device = None
        try:
            parts = topic.split("/")
            if len(parts) >= 4:
                tenant, device = parts[2], parts[3]
            out = handle(self.store, topic, payload)
        except Rejected as exc:
            self.rejected += 1
            metrics.INGEST_MESSAGES.labels("rejected").inc()
            metrics.DEAD_LETTERS.inc()
            _LOGGER.warning("dead letter %s: %s", topic, exc)
            self.store.dead_letter(topic, str(exc), payload, tenant_id=tenant, device=device)
            return
        self.handled += 1
        metrics.INGEST_MESSAGES.labels("stored").inc()
        for ack_topic, body in out.acks:
            self.client.publish(ack_topic, json.dumps(body, separators=(",", ":")), qos=1,
                                retain=True)

    def _work(self):
        while not self._stop.is_set():
            try:
                topic, payload = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                while not self._stop.is_set():
                    try:
                        self.process(topic, payload)
                        break
                    except DatabaseError as exc:
                        # The database is away: keep this message and retry it, in order.
                        _LOGGER.error("database error while storing %s: %s; retrying", topic,
                                      exc)
                        time.sleep(1.0)
            finally:
                self._queue.task_done()

    def start(self) -> None:
        self._thread.start()
        self.client.connect_async(self.settings.mqtt_host, self.settings.mqtt_port, keepalive=30)
        self.client.loop_start()

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until every received message is handled (tests, benchmarks)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._queue.unfinished_tasks == 0:
                return True
            time.sleep(0.01)
        return False

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self._stop.set()
        self._thread.join(5)
