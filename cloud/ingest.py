"""MQTT ingest: decode device messages with the shared codec, store every row once, acknowledge.

One worker subscribes to `nl/v1/+/+/+` (or, to share the load between several workers,
`$share/ingest/nl/v1/+/+/+`). For each message it checks the topic, that the device is
provisioned for that tenant (not revoked, its tenant not deleted), and every byte and field;
stores the rows (upsert on device, stream, boot, seq); and publishes the stream's
high-water mark, with any gaps it sees above it, on `…/{stream}/ack`. An edge node's
treatments arrive as JSON on `…/treatments` (from a device of any other kind they are
refused): each document is checked with the Nightscout core's `normalize`, stored by its
dedupe rules (a re-sent one changes nothing), a deleted one soft-deleted, one older than the
node's change the document already holds ignored, a bad one (anything it raises but a
database error that may pass) dead-lettered on its own; the ack names the sequence numbers
handled.
A `{"since": ms}` there asks for the tenant's treatments changed after that srvModified,
answered on the node's `…/cmd` topic (how carbs entered in the cloud reach the bedside).

Nothing a message holds stops the worker: a message that fails a check, or whose handling
raises anything unexpected, goes to the dead-letter table with the reason, and the worker
goes on. What may pass is waited for instead: a database that refuses writes (disk full,
PostgreSQL away) is tried again with back-off and jitter, the message kept and not
acknowledged to the broker (manual MQTT acks: the PUBACK leaves only once the message is
stored or dead-lettered, so a broker delivers it again after a restart). A device over its
rate limit is slowed down the same way: its messages are held back, unacknowledged, and
handled as its tokens come back; nothing is refused for speed alone.

A supervisor restarts the consumer thread if it dies or makes no progress; `problem()`
says what keeps the worker from being ready (for /readyz). The broker connection is made
one attempt at a time, each waiting for the broker's answer, with back-off and jitter
between attempts; every failure is logged at WARNING with its reason.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import queue
import sqlite3
import threading
import time
import weakref
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt

from nightlink.backoff import Backoff
from nightlink.cloud import metrics
from nightlink.cloud.store import Store
from nightlink.cloud.store import rows as row_codec
from nightlink.nightscout import documents as ns_documents
from nightlink.nightscout import jsonsafe
from nightlink.nightscout.documents import DocumentError
from nightlink.pacing import LogThrottle, TokenBucket
from nightlink.shared import codec, features, topics, units
from nightlink.shared.epoch import epoch_start
from nightlink.sql import DatabaseError, IntegrityError

_LOGGER = logging.getLogger(__name__)
_CGM_NAMES = features.names(features.CGM)
_GLUCOSE = _CGM_NAMES.index("glucose_mgdl")
_AGE = _CGM_NAMES.index("minutes_since")
_TREND = _CGM_NAMES.index("direction")
_STREAM_NAMES = ", ".join(s[features.S_NAME] for s in features.STREAMS)

# What a message may hold. A data message is one record or one batch (the codec's limits);
# a status report is a small JSON object.
MAX_DATA_BYTES = codec.BATCH_HEADER_SIZE + codec.MAX_BATCH_BYTES
MAX_STATUS_BYTES = 65536
ENTRY_AHEAD_MS = 10 * 60_000  # a CGM reading later than this ahead of our clock is not served
MAX_RANGES = 1000  # dropped ranges per stream in one report (devices send their newest 100)
MAX_SEQ = 0xFFFFFFFF  # sequence numbers are u32 on the wire
MAX_DROP_COUNT = 2**53  # a count of dropped rows (a float keeps it exactly)
MAX_DOCS_BYTES = 2 * 1024 * 1024  # a treatments batch (edges cut theirs at 256 KiB)
MAX_DOCS = 500  # documents in one treatments batch
MAX_DOC_SEQ = 2**63 - 1
MAX_PULL_DOCS = 200  # documents in one answer to an edge's pull
MAX_PULL_BYTES = 256 * 1024
OWN_COMMAND = b'{"cmd":'  # how every command the ingest publishes begins (compact JSON)


class Rejected(ValueError):
    """A message that cannot be stored; the message is the dead-letter reason. `outcome`
    holds what was stored before the refusal (the good records of a batch), if anything."""

    def __init__(self, reason: str, outcome: Outcome | None = None):
        super().__init__(reason)
        self.outcome = outcome


@dataclass
class Outcome:
    rows: int = 0  # rows new to the store
    acks: list[tuple[str, dict]] = field(default_factory=list)  # (topic, payload)
    entries: list[dict] = field(default_factory=list)  # Nightscout entries derived from CGM rows
    dead: list[tuple[str, bytes]] = field(default_factory=list)  # (reason, part) refused alone
    retain_acks: bool = True  # a mark is retained; a list of one batch's numbers is not


def glucose_entries(rec: codec.Record, device: str) -> list[dict]:
    """Nightscout sgv entries for the readings a CGM record carries (one per reading).

    A reading's time is the epoch's end minus its age; every epoch that carries the same
    reading gives the same time, so (date, type) de-duplicates them.
    """
    return [entry for _epochs, entry in glucose_readings(rec, device)]


def glucose_readings(rec: codec.Record, device: str) -> list[tuple[list[int], dict]]:
    """glucose_entries, each with the epochs of the record that carry it."""
    out, where = {}, {}
    for i, vals in enumerate(rec.values()):
        g, age, trend = vals[_GLUCOSE], vals[_AGE], vals[_TREND]
        if g is None or age is None:
            continue
        date = row_codec.reading_ms(rec.epoch + i, age)
        where.setdefault(date, []).append(rec.epoch + i)
        out[date] = {
            "type": "sgv",
            "date": date,
            "dateString": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(date / 1000)),
            "sgv": int(g),
            "direction": units.DIRECTIONS[int(trend)] if trend is not None else "NONE",
            "device": f"nightlink-{device}",
        }
    return [(where[date], entry) for date, entry in out.items()]


def _served(entries: list[dict], out: Outcome) -> list[dict]:
    """The readings to serve as Nightscout entries: not those dated before 2000 or more than
    ENTRY_AHEAD_MS ahead of this clock (a device whose clock is wrong). Such a reading would
    be every follower's "current" glucose for hours, hiding the real ones; its epoch rows are
    kept, and one dead letter per message says why its readings are not served."""
    now = time.time() * 1000
    hi = now + ENTRY_AHEAD_MS
    served = [e for e in entries if ns_documents.DATE_MIN_MS <= e["date"] <= hi]
    if len(served) == len(entries):
        return entries
    ahead = [e for e in entries if e["date"] > hi]
    old = [e for e in entries if e["date"] < ns_documents.DATE_MIN_MS]
    said = ([f"{len(ahead)} dated up to {(max(e['date'] for e in ahead) - now) / 3_600_000:.1f}"
             f" h ahead of the cloud's clock (first: {ahead[0]['dateString']})"] if ahead
            else []) + ([f"{len(old)} dated before the year 2000"] if old else [])
    out.dead.append((f"Glucose readings of the message: {'; '.join(said)}. The device's clock "
                     "is wrong; the epoch rows are stored, but these readings are not served "
                     "as Nightscout entries.", _part((ahead or old)[0])))
    return served


def handle(store: Store, topic: str, payload: bytes, *, retained: bool = False) -> Outcome:
    """Check, decode and store one message. Raises Rejected with the dead-letter reason.
    `retained`: a status report's stored copy (IngestWorker.process)."""
    kind, tenant, device, stream = _parse(topic)
    publisher = _check_publisher(store, tenant, device)
    if kind == "status":
        return _status(store, tenant, device, payload, retained=retained,
                       edge=publisher["kind"] == "edge")
    if stream in topics.DOC_STREAMS:
        if publisher["kind"] != "edge":
            # A clock's login may publish on its own topics: without this it could read the
            # tenant's treatments on its cmd topic, or write carbs that silence low alarms.
            raise Rejected(f"The device {device} is a {publisher['kind']}; only an edge node "
                           f"syncs {stream}.")
        return _documents(store, tenant, device, stream, payload)
    return _data(store, tenant, device, stream, payload)


def _parse(topic: str) -> tuple[str, str, str, str | None]:
    try:
        kind, tenant, device, stream = topics.parse(topic)
    except topics.TopicError as exc:
        raise Rejected(str(exc)) from None
    if kind not in ("data", "status"):
        raise Rejected(f"{topic} is not a data or status topic.")
    if kind == "data" and features.stream_by_name(stream) is None \
            and stream not in topics.DOC_STREAMS:
        raise Rejected(f"The stream {stream!r} is not one this cloud knows ({_STREAM_NAMES}).")
    return kind, tenant, device, stream


def _check_publisher(store: Store, tenant: str, device: str) -> dict:
    """The publishing device (its id, tenant and kind); refuse one that is not provisioned
    for the topic's tenant, is revoked, or whose tenant was deleted (its devices are revoked
    with it)."""
    dev = store.publisher(device)
    if dev is None or dev["tenant_id"] != tenant:
        raise Rejected(f"The device {device} is not provisioned for tenant {tenant}.")
    if dev["tenant_deleted_at"] is not None:
        raise Rejected(f"The tenant {tenant} was deleted; messages of its device {device} "
                       "are not stored.")
    if dev["revoked_at"] is not None:
        raise Rejected(f"The device {device} was revoked; its messages are not stored.")
    return dev


# What only a bedside node reports (shared/WIRE.md): the person's zone and sleep schedule, the
# clocks' alarm policy, the nights' apnea screens, the imports it undid. A clock's report
# carrying them moved every night window of the doctor's report and wrote a night's screen.
EDGE_ONLY_STATUS = ("timezone", "night_schedule", "alarm_policy", "alarm_policy_params",
                    "nights", "retracted")


def _not_a_number(name: str):
    raise ValueError(f"{name} is not a number JSON can hold")


def _finite(text: str) -> float:
    """A JSON number as Python reads it, refusing one too large for a float (1e400 reads as
    inf without a word, and was stored as Infinity)."""
    value = float(text)
    if value in (math.inf, -math.inf):
        _not_a_number(text[:20])
    return value


def _status(store: Store, tenant: str, device: str, payload: bytes, *,
            retained: bool = False, edge: bool = True) -> Outcome:
    """A device's health report: kept as it is once every field the cloud reads is valid;
    its dropped ranges let the marks step over rows the device gave up (see advance_hwm).
    A device that is not an edge node (a clock) has its report kept without the fields only
    an edge may report, which are dead-lettered."""
    if len(payload) > MAX_STATUS_BYTES:
        raise Rejected(f"The status report is {len(payload)} bytes; at most "
                       f"{MAX_STATUS_BYTES} are read.")
    try:  # NaN and Infinity are refused: read back, they made the report's JSON invalid
        doc = json.loads(payload, parse_constant=_not_a_number, parse_float=_finite)
    except (ValueError, RecursionError) as exc:
        raise Rejected(f"The status report is not a JSON object ({_short(exc)}).") from None
    if not isinstance(doc, dict):
        raise Rejected("The status report is not a JSON object (it is a JSON "
                       f"{type(doc).__name__}).")
    out = Outcome()
    foreign = [] if edge else [name for name in EDGE_ONLY_STATUS if name in doc]
    if foreign:
        part = json.dumps({name: doc.pop(name) for name in foreign}).encode()[:65536]
        out.dead.append((f"The device {device} is not an edge node; only an edge reports "
                         f"{', '.join(foreign)} (the rest of its status report is kept).",
                         part))
    dropped = _dropped_ranges(doc.get("dropped"))
    drops = _drop_counts(doc.get("drops"))
    screens, refused_nights = _night_screens(doc.pop("nights", None))
    if refused_nights:  # one night the cloud cannot file costs only itself, not the report
        out.dead.append((f"The status report's nights {', '.join(map(_show, refused_nights))} "
                         "are not nights such as 2026-01-15 (1990 to 2099); the rest of the "
                         "report is kept.", json.dumps(refused_nights).encode()[:65536]))
    retracted = _retractions(doc.pop("retracted", None))
    store.put_device_status(device, tenant, doc, heard=not retained)
    data = store.tenant(tenant)
    for boot, nights, epochs in retracted:  # imports the edge undid (edge/store/imports.py)
        gone = data.retract_boot(device, boot, nights, epochs)
        if gone is not None:
            _LOGGER.info("ingest: device %s undid an import (boot %d): %d rows, %d entries and "
                         "%d nights' screens removed", device, boot, gone["rows"],
                         gone["entries"], gone["nights"])
    for night, block in screens.items():  # an edge's apnea screens (edge/sync/cloud_link.py)
        try:
            had = data.night(night)
        except LookupError:
            had = None
        # Each edge's screen is kept (two homes: fusion takes the one of the edge that
        # recorded the person, `night_devices`); `breathing` stays the first edge's, as
        # before. Stored once, not at every report: the fusion cache watches it.
        by_device = dict(had.get("by_device") or {}) if isinstance(had, dict) else {}
        if isinstance(had, dict) and had.get("device") and had.get("device") not in by_device:
            by_device[had["device"]] = had.get("breathing")  # stored before by_device was
        if by_device.get(device) == block and had.get("device") is not None:
            continue
        by_device[device] = block
        first = had if isinstance(had, dict) and had.get("device") not in (device, None) \
            else {"breathing": block, "device": device}
        data.put_night(night, {"breathing": first["breathing"], "device": first["device"],
                               "by_device": by_device})
    for sid, ranges in dropped.items():
        store.add_dropped(device, sid, ranges)
        topic, ack = _ack(store, tenant, device, sid)
        ack["of"] = []  # answers a status report, no rows
        out.acks.append((topic, ack))
    per_label: dict[str, int] = {}
    for name, n in drops.items():
        label = metrics.stream_label(name)
        per_label[label] = per_label.get(label, 0) + n
    for label, n in per_label.items():
        metrics.DEVICE_DROPS.labels(device, label).set(n)
    return out


MAX_STATUS_NIGHTS = 14
MAX_SCREEN_BYTES = 8192
MAX_RETRACTIONS = 64
MAX_RETRACTED_NIGHTS = 400  # the nights one import summarised (an import spans 120 days)


def _retractions(value) -> list[tuple[int, list[str], tuple[int, int] | None]]:
    """A report's `retracted` ([{"boot": n, "nights": ["YYYY-MM-DD", …], "epochs": [first,
    last]}, …], the imports the edge undid; epochs: where their records lay) checked: whole
    boots and epochs, real dates."""
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_RETRACTIONS:
        raise Rejected(f"The status report's retracted is not a list of at most "
                       f"{MAX_RETRACTIONS} {{boot, nights}} objects.")
    out = []
    for item in value:
        boot = item.get("boot") if isinstance(item, dict) else None
        nights = item.get("nights", []) if isinstance(item, dict) else None
        if not _whole(boot) or not 0 <= boot <= MAX_SEQ:
            raise Rejected(f"The status report's retracted holds {_show(item)}, not an object "
                           "with a boot number.")
        if not isinstance(nights, list) or len(nights) > MAX_RETRACTED_NIGHTS \
                or not all(_is_night(n) for n in nights):
            raise Rejected(f"The status report's retracted boot {boot} has nights "
                           f"{_show(nights)}, not a list of at most {MAX_RETRACTED_NIGHTS} "
                           "nights such as 2026-01-15.")
        epochs = item.get("epochs")
        if epochs is not None and not (
                isinstance(epochs, list) and len(epochs) == 2 and all(_whole(x) for x in epochs)
                and 0 <= epochs[0] <= epochs[1] <= MAX_SEQ):
            raise Rejected(f"The status report's retracted boot {boot} has epochs "
                           f"{_show(epochs)}, not a [first, last] pair of epoch numbers.")
        out.append((boot, nights, tuple(epochs) if epochs is not None else None))
    return out


def _is_night(value) -> bool:
    """Whether `value` names a night as the API and the reports do: a real date written
    YYYY-MM-DD, 1990 to 2099 (a night of 9999-12-31 became every list's newest night, which
    no page could then open)."""
    from nightlink.cloud.fusion import check_night_date

    try:
        check_night_date(value)
        return True
    except ValueError:
        return False


def _night_screens(value) -> tuple[dict[str, dict], list[str]]:
    """A report's `nights` ({"YYYY-MM-DD": breathing block}) checked: at most 14 nights,
    each an object of at most 8 KiB; the fields are read with care later. (screens, the
    names that are not nights the cloud files: a real date 1990 to 2099)."""
    if value is None:
        return {}, []
    if not isinstance(value, dict) or len(value) > MAX_STATUS_NIGHTS:
        raise Rejected(f"The status report's nights is not an object of at most "
                       f"{MAX_STATUS_NIGHTS} nights.")
    out, refused = {}, []
    for night, block in value.items():
        if not _is_night(night):
            refused.append(night)
            continue
        size = jsonsafe.finite_size(block) if isinstance(block, dict) else None
        if size is None or size > MAX_SCREEN_BYTES:
            raise Rejected(f"The status report's night {night} is not an object of finite "
                           f"numbers of at most {MAX_SCREEN_BYTES} bytes.")
        out[night] = block
    return out, refused


def _dropped_ranges(value) -> dict[int, list[tuple[int, int]]]:
    """A report's `dropped` ({stream: [[first, last], …]}) checked: whole numbers, first <=
    last, both sequence numbers. Streams this build does not know are skipped."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Rejected("The status report's dropped is not an object of [first, last] "
                       f"seq ranges per stream (it is {_show(value)}).")
    out = {}
    for name, ranges in value.items():
        if not isinstance(ranges, list) or len(ranges) > MAX_RANGES:
            raise Rejected(f"The status report's dropped {_show(name)} is not a list of at "
                           f"most {MAX_RANGES} [first, last] ranges.")
        checked = [_seq_range(name, r) for r in ranges]
        stream = features.stream_by_name(name)
        if stream is not None:
            out[stream[features.S_ID]] = checked
    return out


def _seq_range(name: str, pair) -> tuple[int, int]:
    if not (isinstance(pair, list) and len(pair) == 2 and all(_whole(x) for x in pair)):
        raise Rejected(f"The status report's dropped {_show(name)} holds {_show(pair)}, not "
                       "a [first, last] pair of whole numbers.")
    first, last = pair
    if not (0 <= first <= MAX_SEQ and 0 <= last <= MAX_SEQ):
        raise Rejected(f"The status report's dropped {_show(name)} range {_show(pair)} lies "
                       f"outside the sequence numbers 0..{MAX_SEQ}.")
    if first > last:
        raise Rejected(f"The status report's dropped {_show(name)} range [{first}, {last}] "
                       "is inverted (first after last).")
    return first, last


def _drop_counts(value) -> dict[str, int]:
    """A report's `drops` ({stream: rows dropped}) checked: counts are whole numbers >= 0."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Rejected("The status report's drops is not an object of row counts per stream "
                       f"(it is {_show(value)}).")
    for name, n in value.items():
        if not _whole(n) or not 0 <= n <= MAX_DROP_COUNT:
            raise Rejected(f"The status report's drops {_show(name)} is {_show(n)}, not a "
                           "count of rows.")
    return value


def _data(store: Store, tenant: str, device: str, stream: str, payload: bytes) -> Outcome:
    if len(payload) > MAX_DATA_BYTES:
        raise Rejected(f"The message is {len(payload)} bytes; a batch holds at most "
                       f"{MAX_DATA_BYTES}.")
    try:
        if codec.is_batch(payload):
            records, errors = codec.decode_batch(payload)
        else:
            records, errors = [codec.decode(payload)], []
    except codec.WireError as exc:
        raise Rejected(f"{type(exc).__name__}: {exc}") from None
    if not records:
        i, exc = errors[0]
        raise Rejected(f"record {i + 1} of the batch: {type(exc).__name__}: {exc} "
                       f"(no good records)")
    for rec in records:
        if codec.device_name(rec.device) != device:
            raise Rejected(f"A record of device {codec.device_name(rec.device)} was sent on "
                           f"{device}'s topic.")
        if features.stream(rec.stream)[features.S_NAME] != stream:
            raise Rejected(f"A {features.stream(rec.stream)[features.S_NAME]} record was sent on the "
                           f"{stream} topic.")
    rows = sum(len(rec.rows) for rec in records)
    if rows > codec.MAX_MESSAGE_ROWS:
        raise Rejected(f"The message holds {rows} epoch rows; one message carries at most "
                       f"{codec.MAX_MESSAGE_ROWS} (shared/WIRE.md), so that one device's "
                       "message does not hold up every other one.")
    out = Outcome()
    data = store.tenant(tenant)
    # Rows of an import the edge undid (its status report's `retracted`) arriving late are
    # not stored, nor their readings served (put_rows, add_readings); the ack answers them,
    # the edge having given their seqs up as dropped.
    out.rows = data.put_rows(records)
    # Rows not new: resends, or new rows under seqs the device gave again (its store put
    # back from an older copy), which the ack names so that it numbers them anew.
    reused_seqs = data.reused_seqs(records) if out.rows < rows else []
    reused = _seq_ranges(reused_seqs)
    sid = features.stream_by_name(stream)[features.S_ID]
    if sid == features.CGM:
        # a reading only rows under reused seqs carry was not stored as rows: nor is it served
        unstored = {(rec.boot, rec.epoch + s - rec.seq) for rec in records for s in reused_seqs
                    if rec.seq <= s < rec.seq + len(rec.rows)}
        tagged = [(rec.boot, epochs, e) for rec in records
                  for epochs, e in glucose_readings(rec, device)
                  if not all((rec.boot, ep) in unstored for ep in epochs)]
        served = {id(e) for e in _served([e for *_, e in tagged], out)}
        readings = [t for t in tagged if id(t[2]) in served]
        if readings:
            # The Nightscout core's rules: a reading an app already uploaded (the same value
            # less than a minute away) is not stored again, and an app's document is kept.
            try:
                out.entries, _dupes = data.add_readings(device, readings)
            except DocumentError as exc:
                raise Rejected(f"A glucose reading of the record is not valid: {exc}",
                               _with_ack(out, store, tenant, device, sid)) from None
    topic, ack = _ack(store, tenant, device, sid)
    # The seqs of the message answered: an edge tells an answer to what it sent in this
    # session from a mark queued while it was away (edge/sync/cloud_link.py).
    ack["of"] = [min(rec.seq for rec in records),
                 max(rec.seq + len(rec.rows) - 1 for rec in records)]
    if reused:
        ack["reused"] = reused[:50]
        _LOGGER.warning("ingest: %d %s rows of device %s came under seqs it had used for other "
                        "epochs (its store put back from an older copy?): not stored; the ack "
                        "asks it to number them anew", sum(b - a + 1 for a, b in reused),
                        stream, device)
    out.acks.append((topic, ack))
    for rec in records:
        metrics.DEVICE_LAG.labels(device).set(
            max(0.0, time.time() - epoch_start(rec.epoch + rec.count)))
    metrics.INGEST_ROWS.labels(stream).inc(out.rows)
    if errors:
        i, exc = errors[0]
        raise Rejected(f"record {i + 1} of the batch: {type(exc).__name__}: {exc} "
                       f"({len(records)} good records stored)", out)
    return out


def _documents(store: Store, tenant: str, device: str, coll: str, payload: bytes) -> Outcome:
    """An edge node's batch of Nightscout documents, `{"docs": [{"seq": n, "doc": {…}}, …]}`:
    each checked by the core's normalize and applied by its dedupe rules; a deletion carries
    `isValid: false`. A bad item is dead-lettered alone and the rest are stored; the ack names
    every sequence number handled (stored, already stored, older than the change the
    document holds, or refused for good). The batch is applied in one transaction, or one
    document at a time when the database refuses it."""
    if len(payload) > MAX_DOCS_BYTES:
        raise Rejected(f"The {coll} batch is {len(payload)} bytes; at most {MAX_DOCS_BYTES} "
                       "are read.")
    try:
        body = json.loads(payload)
    except (ValueError, RecursionError) as exc:
        raise Rejected(f"The {coll} batch is not JSON ({_short(exc)}).") from None
    if isinstance(body, dict) and "since" in body and "docs" not in body:
        return _pull(store, tenant, device, coll, body["since"])
    items = body.get("docs") if isinstance(body, dict) else None
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_DOCS:
        raise Rejected(f"The {coll} batch is not an object whose docs is a list of 1 to "
                       f"{MAX_DOCS} {{seq, doc}} items.")
    now = int(time.time() * 1000)
    out, done, refused = Outcome(retain_acks=False), [], []
    changes = []  # (seq, item, document, deleted)
    for i, item in enumerate(items):
        seq = item.get("seq") if isinstance(item, dict) else None
        if not _whole(seq) or not 1 <= seq <= MAX_DOC_SEQ:
            out.dead.append((f"item {i + 1} of the {coll} batch has no sequence number "
                             f"(seq {_show(seq)}).", _part(item)))
            continue
        done.append(seq)
        try:
            changes.append((seq, item, *_change(coll, item.get("doc"), now)))
        except Exception as exc:  # noqa: BLE001 - a transient one is raised by _refuse
            _refuse(out, refused, coll, seq, item, exc)
    data = store.tenant(tenant)
    try:
        out.rows = _apply(data, coll, device, changes)
    except Exception as exc:
        if db_failure(exc) == "transient":
            raise
        # One document the database refuses must not hold back the others (the edge would
        # send the batch forever): apply them one at a time, refusing only the bad one.
        out.rows = 0
        for change in changes:
            try:
                out.rows += _apply(data, coll, device, [change])
            except Exception as exc:  # noqa: BLE001 - a transient one is raised by _refuse
                _refuse(out, refused, coll, change[0], change[1], exc)
    if done:
        out.acks.append((topics.ack_topic(tenant, device, coll),
                         {"stream": coll, "seqs": _seq_ranges(done), "refused": refused}))
    return out


def _apply(data, coll: str, device: str, changes: list) -> int:
    """Apply (seq, item, document, deleted) changes in one transaction; documents changed.
    A change older than the one of the same node a document holds (a resent batch whose
    newer copy another worker stored first) is ignored, and acknowledged like the others."""
    rows, _deleted, stale = data.apply_changes(
        coll, [(seq, n, deleted) for seq, _item, n, deleted in changes], device=device)
    if stale:
        _LOGGER.info("%d %s change(s) from %s ignored: the stored documents hold newer ones",
                     stale, coll, device)
    return rows


def _refuse(out: Outcome, refused: list, coll: str, seq: int, item, exc: Exception) -> None:
    """One document of a batch refused for good: dead-lettered alone, its number acked as
    refused. A database error that may pass is raised instead (the batch is tried again)."""
    failure = db_failure(exc)
    if failure == "transient":
        raise exc
    if isinstance(exc, DocumentError):
        why = str(exc)
    elif failure == "permanent":
        why = f"the database refused it ({_db_reason(exc)})"
    else:
        why = f"{type(exc).__name__}: {_short(exc)}"
    out.dead.append((f"{coll} change {seq}: {why}", _part(item)))
    refused.append([seq, _short(why, 200)])


def _pull(store: Store, tenant: str, device: str, coll: str, since) -> Outcome:
    """The tenant's documents changed after `since` (srvModified, ms), oldest change first,
    for the node to apply: `{"cmd": coll, "since", "until", "more", "docs"}` on its cmd topic.
    Deleted ones carry `isValid: false`; `until` is the srvModified to ask from next."""
    if not _whole(since) or not 0 <= since <= MAX_DOC_SEQ:
        raise Rejected(f"The {coll} pull's since is {_show(since)}, not a srvModified in ms.")
    rows = store.tenant(tenant).docs.history(coll, since, limit=MAX_PULL_DOCS)
    docs, size, until = [], 0, since
    for row in rows:
        doc = row.v1()
        doc.pop("mills", None)
        if row.identifier != row.oid:
            doc.setdefault("identifier", row.identifier)
        if not row.valid:
            doc["isValid"] = False
        size += len(json.dumps(doc, separators=(",", ":"), default=str))
        if docs and size > MAX_PULL_BYTES:
            break
        docs.append(doc)
        until = row.srv_modified
    more = len(docs) < len(rows) or len(rows) == MAX_PULL_DOCS
    body = {"cmd": coll, "since": since, "until": until, "more": more, "docs": docs}
    return Outcome(acks=[(topics.cmd_topic(tenant, device), body)], retain_acks=False)


def _change(coll: str, doc, now: int) -> tuple[ns_documents.Normalized, bool]:
    """A document checked as the Nightscout API checks an upload, and whether it is a
    deletion (Nightscout's marker `isValid: false`)."""
    if not isinstance(doc, dict):
        raise DocumentError(f"A change must carry a document object, not {_show(doc)}.")
    doc = dict(doc)
    deleted = doc.pop("isValid", True) is False
    n = ns_documents.normalize(coll, doc, now)
    if n.oid is None and n.identifier is None and deleted:
        raise DocumentError("A deletion must name the document by _id or identifier.")
    return n, deleted


def _seq_ranges(seqs: list[int]) -> list[list[int]]:
    out: list[list[int]] = []
    for seq in sorted(set(seqs)):
        if out and seq == out[-1][1] + 1:
            out[-1][1] = seq
        else:
            out.append([seq, seq])
    return out


def _part(item) -> bytes:
    """One item of a batch, as the dead letter's payload."""
    try:
        return json.dumps(item, separators=(",", ":")).encode()
    except (TypeError, ValueError):
        return repr(item).encode()


def _ack(store: Store, tenant: str, device: str, sid: int) -> tuple[str, dict]:
    """The acknowledgement of one stream: its high-water mark and the gaps above it."""
    name = features.stream(sid)[features.S_NAME]
    hwm = store.advance_hwm(device, sid)
    gaps = store.missing_seqs(device, sid)
    return (topics.ack_topic(tenant, device, name),
            {"stream": name, "hwm": hwm, "gaps": [list(g) for g in gaps[:50]]})


def _with_ack(out: Outcome, store: Store, tenant: str, device: str, sid: int) -> Outcome:
    out.acks.append(_ack(store, tenant, device, sid))
    return out


def _whole(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _show(value, limit: int = 60) -> str:
    """A value from a message, short enough for a reason."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = type(value).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _short(exc: BaseException, limit: int = 300) -> str:
    text = str(exc)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- database errors -------------------------------------------------------------------------


def db_failure(exc: BaseException) -> str | None:
    """"transient" for a database error that may pass (disk full, locked, I/O error, lost
    connection): keep the message and try again. "permanent" for one this message causes
    (a value the database refuses): dead-letter it. None when exc is no database error.

    nightlink.sql raises DatabaseError `from None`, so the backend's own error is its
    __context__; a failed BEGIN, COMMIT or ROLLBACK arrives as the backend's error itself.
    """
    try:
        import psycopg
    except ImportError:  # a SQLite-only install
        psycopg = None
    for err in (exc, exc.__context__):
        if isinstance(err, sqlite3.OperationalError):
            return "transient"
        if isinstance(err, sqlite3.Error):
            return "permanent"
        if psycopg is not None and isinstance(err, (psycopg.OperationalError,
                                                    psycopg.InterfaceError)):
            return "transient"
        if psycopg is not None and isinstance(err, psycopg.Error):
            return "permanent"
    if isinstance(exc, IntegrityError):
        return "permanent"
    if isinstance(exc, DatabaseError):
        return "transient"
    return None


def _db_reason(exc: BaseException) -> str:
    """The database's own words, not the failed rollback that may have hidden them."""
    while exc.__context__ is not None and db_failure(exc.__context__):
        exc = exc.__context__
    return f"{type(exc).__name__}: {_short(exc)}"


# -- pacing ------------------------------------------------------------------------------------


# -- the worker --------------------------------------------------------------------------------


@dataclass
class Message:
    """One received message, with what is needed to acknowledge it later."""

    topic: str
    payload: bytes
    qos: int = 0
    mid: int = 0
    link: int = 0  # the broker connection it came on: its PUBACK may only go on that one
    key: str = ""  # its sender (tenant/device from the topic), for the rate limit
    retained: bool = False  # a stored copy the broker hands out at each subscription


def is_own_command(topic: str, payload: bytes) -> bool:
    """A command the cloud published to a device (an answer to a node's pull): the ingest's
    filter matches `…/cmd` too, and there is nothing in it to store or to dead-letter."""
    return topic.endswith("/" + topics.CMD) and payload.startswith(OWN_COMMAND)


def topic_of(msg: Message) -> str:
    """A message's topic, short enough for a log line."""
    return msg.topic[:200]


def _sender(topic: str) -> str:
    parts = topic.split("/", 4)
    return "/".join(parts[2:4])[:80] if len(parts) >= 4 else "?"


_RUNNING: weakref.WeakSet = weakref.WeakSet()


def readiness_problems(store: Store) -> list[str]:
    """Why the ingest workers running on this store are not ready (empty when they are, or
    when this process runs none)."""
    return [p for w in list(_RUNNING) if w.store is store and (p := w.problem())]


class IngestWorker:
    """A paho client feeding `handle` from one consumer thread, publishing acks as it goes,
    with a supervisor for the consumer and a link thread that owns the broker connection.

    Settings read beside the MQTT ones (defaults in brackets): ingest_rate_per_s [500] and
    ingest_burst [5000] (per device), ingest_stall_s [60], ingest_max_held [2000] (messages
    held back for rate, over all devices), mqtt_connect_timeout_s [15],
    mqtt_backoff_max_s [30], db_backoff_max_s [30].
    """

    def __init__(self, store: Store, settings, *, client_id: str = ""):
        self.store = store
        self.settings = settings
        self.handled = 0
        self.rejected = 0
        self.held = 0  # messages held back for their device's rate
        self.restarts = 0
        self.db_retries = 0
        self.connected = threading.Event()  # connected and subscribed
        self.rate = float(getattr(settings, "ingest_rate_per_s", 500.0))
        self.burst = float(getattr(settings, "ingest_burst", 5000))
        self.stall_s = float(getattr(settings, "ingest_stall_s", 60.0))
        self.max_held = int(getattr(settings, "ingest_max_held", 2000))
        self.connect_timeout_s = float(getattr(settings, "mqtt_connect_timeout_s", 15.0))
        self.broker_backoff_max_s = float(getattr(settings, "mqtt_backoff_max_s", 30.0))
        self.db_backoff_max_s = float(getattr(settings, "db_backoff_max_s", 30.0))
        self._queue: queue.Queue = queue.Queue(maxsize=10000)
        self._stop = threading.Event()
        self._started = False
        self._lock = threading.Lock()
        # The consumer: its generation (a restart makes a new one), heartbeat, and message.
        self._gen = 0
        self._consumer: threading.Thread | None = None
        self._beat = time.monotonic()
        self._current: Message | None = None
        self._orphan: tuple[Message, str] | None = None  # held by a consumer that died
        self._db_error: str | None = None
        # Messages held back for rate, per sender, in arrival order.
        self._held: dict[str, collections.deque] = {}
        self._held_count = 0
        self._buckets: dict[str, TokenBucket] = {}
        self._log = LogThrottle(10.0)
        # The broker link.
        self._link_gen = 0
        self._answered = threading.Event()  # the broker answered this attempt (or hung up)
        self._lost = threading.Event()
        self._broker_error: str | None = "not connected yet"
        self._threads: list[threading.Thread] = []
        group = settings.mqtt_shared_group
        self.filter = (f"$share/{group}/{topics.INGEST_FILTER}" if group
                       else topics.INGEST_FILTER)
        # A persistent session (fixed client id, clean_session False) keeps QoS 1 messages
        # that arrive while the worker restarts; manual acks keep those not yet stored.
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  clean_session=not client_id, reconnect_on_failure=False)
        self.client.manual_ack_set(True)
        self.client.connect_timeout = self.connect_timeout_s
        if settings.mqtt_username:
            self.client.username_pw_set(settings.mqtt_username, settings.mqtt_password)
        if settings.mqtt_tls:
            self.client.tls_set(ca_certs=getattr(settings, "mqtt_ca_file", "") or None)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    @property
    def where(self) -> str:
        return f"{self.settings.mqtt_host}:{self.settings.mqtt_port}"

    # -- paho callbacks (the network thread) ---------------------------------------------------

    def _on_connect(self, client, _u, _f, reason_code, _p):
        if reason_code.is_failure:
            self._broker_error = f"the broker refused the login ({reason_code})"
            self._answered.set()
            return
        client.subscribe(self.filter, qos=1)

    def _on_subscribe(self, _c, _u, _mid, reason_codes, _p):
        refused = [rc for rc in reason_codes if rc.is_failure]
        if refused:
            self._broker_error = (f"the broker refused the subscription to {self.filter} "
                                  f"({refused[0]})")
        else:
            self._broker_error = None
            self.connected.set()
        self._answered.set()

    def _on_disconnect(self, _c, _u, _f, reason_code, _p):
        self.connected.clear()
        if not self._stop.is_set() and self._broker_error is None:
            self._broker_error = f"the connection to the broker was lost ({reason_code})"
        self._answered.set()
        self._lost.set()

    def _on_message(self, _c, _u, msg):
        # Hand over to the consumer; with manual acks the broker sends at most its in-flight
        # window of unacknowledged QoS 1 messages, so the queue stays short.
        try:
            try:
                topic = msg.topic
            except UnicodeDecodeError:
                topic = bytes(getattr(msg, "_topic", b"")).decode("utf-8", "replace")
            self._queue.put(Message(topic, bytes(msg.payload), msg.qos, msg.mid,
                                    self._link_gen, _sender(topic), bool(msg.retain)))
        except Exception:  # never let a message end the network thread
            _LOGGER.exception("ingest: a received message could not be queued")

    # -- handling one message ----------------------------------------------------------------

    def process(self, topic: str, payload: bytes, retained: bool = False) -> str:
        """Handle one message completely: store it and publish its acks, or dead-letter it
        with the reason; return "stored" or "rejected" ("own" for a command this cloud sent,
        which the ingest's filter hears too; "retained" for a stored copy of a data message,
        handled already when it was sent). Raises only a database error that may pass (see
        db_failure): the caller keeps the message and tries it again.

        A retained copy comes again at every subscription: a device's status report is
        kept without counting as news of the device (its time stays the report's arrival),
        and a data message, which devices never send retained, was handled (or
        dead-lettered) when it came live, so it is not handled again."""
        if is_own_command(topic, payload):
            return "own"
        if retained and not topic.endswith("/" + topics.STATUS):
            return "retained"
        try:
            out, reason = handle(self.store, topic, payload, retained=retained), None
        except Rejected as exc:
            out, reason = exc.outcome, str(exc)
        except Exception as exc:
            failure = db_failure(exc)
            if failure == "transient":
                raise
            out = None
            if failure == "permanent":
                reason = f"The database refused the message: {_db_reason(exc)}"
            else:
                reason = f"{type(exc).__name__}: {_short(exc)}"
                held = self._log.ok(f"error:{type(exc).__name__}")
                if held is not None:
                    _LOGGER.error("ingest: handling a message on %s raised %s (dead-lettered; "
                                  "%d more like it not logged)", topic[:200], reason, held,
                                  exc_info=exc)
        for part_reason, part in (out.dead if out is not None else []):
            self._dead_letter(topic, part_reason, part)
        if out is not None and self.connected.is_set():
            # (Not connected: no ack piles up to go out stale later; the device hears the
            # stream's mark with its next message.)
            for ack_topic, body in out.acks:
                self.client.publish(ack_topic, json.dumps(body, separators=(",", ":")), qos=1,
                                    retain=out.retain_acks)
        if reason is None:
            self.handled += 1
            metrics.INGEST_MESSAGES.labels("stored").inc()
            return "stored"
        self._dead_letter(topic, reason, payload)
        return "rejected"

    def _dead_letter(self, topic: str, reason: str, payload: bytes) -> None:
        parts = topic.split("/", 4)
        tenant, device = (parts[2], parts[3]) if len(parts) >= 4 else (None, None)
        try:
            self.store.dead_letter(topic, reason, payload, tenant_id=tenant, device=device)
        except Exception as exc:
            if db_failure(exc) == "transient":
                raise
            # The table refuses even the dead letter: say so loudly, count it, go on.
            metrics.INGEST_MESSAGES.labels("lost").inc()
            _LOGGER.error("ingest: could not keep the dead letter of %s (%s): %s", topic[:200],
                          reason, _short(exc))
            return
        self.rejected += 1
        metrics.INGEST_MESSAGES.labels("rejected").inc()
        metrics.DEAD_LETTERS.inc()
        held = self._log.ok(f"dead:{_sender(topic)}")
        if held is not None:
            _LOGGER.warning("dead letter %s: %s%s", topic[:200], reason,
                            f" ({held} more from this sender not logged)" if held else "")

    def _deliver(self, msg: Message, gen: int) -> None:
        """Process one message until it is stored or dead-lettered, waiting out database
        errors; then acknowledge it to the broker."""
        backoff = Backoff(0.5, self.db_backoff_max_s)
        while True:
            try:
                self.process(msg.topic, msg.payload, msg.retained)
                break
            except Exception as exc:
                if db_failure(exc) != "transient":
                    raise
                delay = backoff.next()
                self._db_error = _db_reason(exc)
                self.db_retries += 1
                metrics.INGEST_DB_RETRIES.inc()
                _LOGGER.warning("ingest: the database refused a write (%s); %s is kept, not "
                                "acknowledged, and tried again in %.1f s", self._db_error,
                                msg.topic[:200], delay)
                if not self._pause(delay, gen):
                    return  # stopping: unacknowledged, the broker delivers it again
        if self._db_error is not None:
            _LOGGER.warning("ingest: the database takes writes again")
            self._db_error = None
        self._ack(msg)

    def _ack(self, msg: Message) -> None:
        if msg.qos and msg.link == self._link_gen:
            self.client.ack(msg.mid, msg.qos)

    def _pause(self, seconds: float, gen: int) -> bool:
        """Wait, beating the heart; False if the worker stops meanwhile."""
        end = time.monotonic() + seconds
        while not self._stop.is_set():
            self._beat_if(gen)
            left = end - time.monotonic()
            if left <= 0:
                return True
            self._stop.wait(min(left, 1.0))
        return False

    def _beat_if(self, gen: int) -> None:
        if gen == self._gen:
            self._beat = time.monotonic()

    # -- the consumer -----------------------------------------------------------------------

    def _consume(self, gen: int) -> None:
        while not self._stop.is_set() and gen == self._gen:
            self._beat_if(gen)
            orphan, self._orphan = self._orphan, None
            if orphan is not None:
                msg, why = orphan
                self._current = msg
                self._deliver_orphan(msg, why, gen)
                self._current = None
                self._queue.task_done()
                continue
            msg = self._next(gen)
            if msg is None:
                continue
            self._current = msg
            try:
                self._deliver(msg, gen)
            except BaseException as exc:
                # Past every handler: this thread ends. The supervisor starts another,
                # which dead-letters this message rather than die on it again.
                self._orphan = (msg, f"{type(exc).__name__}: {_short(exc)}")
                _LOGGER.error("ingest: the consumer thread ends on %s", topic_of(msg),
                              exc_info=exc)
                return
            if gen == self._gen:
                self._current = None
            self._queue.task_done()

    def _deliver_orphan(self, msg: Message, why: str, gen: int) -> None:
        reason = f"The ingest consumer thread died handling this message ({why})."
        backoff = Backoff(0.5, self.db_backoff_max_s)
        while True:
            try:
                self._dead_letter(msg.topic, reason, msg.payload)
                break
            except Exception as exc:  # noqa: BLE001 - logged by _dead_letter or waited out
                if db_failure(exc) != "transient" or not self._pause(backoff.next(), gen):
                    return
        self._ack(msg)

    def _next(self, gen: int) -> Message | None:
        """The next message to handle: a held one whose device has a token again, else a
        new one from the queue (held back instead, if its device is over its rate)."""
        now = time.monotonic()
        msg = self._release(now)
        if msg is not None:
            return msg
        wait = 0.2
        for key in self._held:
            wait = min(wait, self._bucket(key, now).wait_s(now))
        try:
            msg = self._queue.get(timeout=max(wait, 0.001))
        except queue.Empty:
            return None
        if self._hold(msg, gen):
            return None
        return msg

    def _bucket(self, key: str, now: float) -> TokenBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) > 10000:  # keys come from topics: forget the idle ones
                self._buckets = {k: b for k, b in self._buckets.items()
                                 if k in self._held or not b.full(now)}
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, now)
        return bucket

    def _hold(self, msg: Message, gen: int) -> bool:
        """Hold a message back if its device is over its rate (or has messages held already,
        which go first); True if held. Held messages are not acknowledged, so the broker's
        in-flight window slows the device's stream down: back-pressure, nothing refused."""
        now = time.monotonic()
        if msg.key not in self._held and self._bucket(msg.key, now).take(now):
            return False
        if self._held_count >= self.max_held:
            # Enough held in memory: wait here for the device's next token. Everything
            # behind waits too, in the queue and at the broker.
            self._pause(self._bucket(msg.key, now).wait_s(now), gen)
        self._held.setdefault(msg.key, collections.deque()).append(msg)
        self._held_count += 1
        self.held += 1
        metrics.INGEST_RATE_LIMITED.inc()
        held = self._log.ok(f"rate:{msg.key}")
        if held is not None:
            _LOGGER.warning("ingest: %s is over its rate limit (%g messages/s, burst %d): its "
                            "messages are held back, unacknowledged, until it slows down",
                            msg.key, self.rate, self.burst)
        return True

    def _release(self, now: float) -> Message | None:
        for key, held in self._held.items():
            if self._bucket(key, now).take(now):
                msg = held.popleft()
                if not held:
                    del self._held[key]
                self._held_count -= 1
                return msg
        return None

    # -- the supervisor ---------------------------------------------------------------------

    def _start_consumer(self) -> None:
        with self._lock:
            self._gen += 1
            self._beat = time.monotonic()
            self._current = None
            self._consumer = threading.Thread(target=self._consume, args=(self._gen,),
                                              name=f"ingest-{self._gen}", daemon=True)
            self._consumer.start()

    def consumer_trouble(self) -> str | None:
        """Why the consumer is not doing its work: dead, or no progress with work waiting."""
        consumer = self._consumer
        if consumer is None or not consumer.is_alive():
            return "the ingest consumer thread is not running"
        idle = time.monotonic() - self._beat
        busy = self._current is not None or self._queue.qsize() or self._held_count
        if busy and idle > self.stall_s:
            return f"the ingest consumer has made no progress for {idle:.0f} s"
        return None

    def _supervise(self) -> None:
        while not self._stop.wait(min(1.0, self.stall_s / 4)):
            try:
                trouble = self.consumer_trouble()
                if trouble is None:
                    continue
                self.restarts += 1
                why = "died" if "not running" in trouble else "stalled"
                metrics.INGEST_RESTARTS.labels(why).inc()
                current = self._current
                _LOGGER.error("ingest: %s%s; starting a new one", trouble,
                              f" (on {current.topic[:200]})" if current else "")
                self._start_consumer()
            except Exception:
                _LOGGER.exception("ingest: the supervisor failed a check")

    # -- the broker link ----------------------------------------------------------------------

    def _link(self) -> None:
        backoff = Backoff(0.5, self.broker_backoff_max_s)
        failed = False
        while not self._stop.is_set():
            try:
                if self._connect_once():
                    if failed:
                        _LOGGER.warning("ingest: connected to the broker at %s again", self.where)
                    failed = False
                    backoff.reset()
                    while not self._stop.is_set() and not self._lost.wait(0.5):
                        pass
                    self._close_link()
                    if self._stop.is_set():
                        return
            except Exception as exc:  # noqa: BLE001 - logged below: the link must go on
                self._broker_error = f"{type(exc).__name__}: {_short(exc)}"
                self._close_link()
            failed = True
            delay = backoff.next()
            metrics.INGEST_BROKER_FAILURES.inc()
            _LOGGER.warning("ingest: %s; trying the broker at %s again in %.1f s",
                            self._broker_error, self.where, delay)
            self._stop.wait(delay)

    def _connect_once(self) -> bool:
        """One attempt: open the connection, then wait for the broker's CONNACK and SUBACK
        (up to mqtt_connect_timeout_s; a slow link gets the whole time, no second attempt
        overlaps it). True once subscribed."""
        self._answered.clear()
        self._lost.clear()
        self._broker_error = None
        try:
            self.client.connect(self.settings.mqtt_host, self.settings.mqtt_port, keepalive=30)
        except (OSError, ValueError) as exc:
            self._broker_error = f"cannot reach the broker ({type(exc).__name__}: {_short(exc)})"
            return False
        self._link_gen += 1
        self.client.loop_start()
        self._answered.wait(self.connect_timeout_s)
        if self.connected.is_set():
            return True
        if self._broker_error is None:
            self._broker_error = (f"the broker did not answer within {self.connect_timeout_s:g} s"
                                  " (no CONNACK/SUBACK)")
        self._close_link()
        return False

    def _close_link(self) -> None:
        self.connected.clear()
        try:
            self.client.disconnect()
        except Exception:  # noqa: BLE001 - the connection is already gone
            pass
        self.client.loop_stop()

    # -- life cycle ---------------------------------------------------------------------------

    def problem(self) -> str | None:
        """What keeps this worker from being ready, None when it is (for /readyz)."""
        if not self._started or self._stop.is_set():
            return "the ingest worker is not running"
        trouble = self.consumer_trouble()
        if trouble:
            return trouble
        if self._db_error:
            return f"the ingest cannot write to the database ({self._db_error}); retrying"
        if not self.connected.is_set():
            return (f"the ingest is not connected to the MQTT broker at {self.where} "
                    f"({self._broker_error or 'connecting'})")
        return None

    def start(self) -> None:
        self._started = True
        self._start_consumer()
        for target, name in ((self._supervise, "ingest-supervisor"),
                             (self._link, "ingest-link")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        _RUNNING.add(self)

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until every received message is handled (tests, benchmarks)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._queue.unfinished_tasks == 0:
                return True
            time.sleep(0.01)
        return False

    def stop(self) -> None:
        self._stop.set()
        _RUNNING.discard(self)
        for thread in self._threads:
            thread.join(self.connect_timeout_s + 5)
        self._close_link()
        if self._consumer is not None:
            self._consumer.join(5)
