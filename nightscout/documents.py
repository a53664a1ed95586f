"""What a Nightscout document is in each collection, how it is normalised on write, and how it
is identified for deduplication. One place for the edge endpoint, the cloud API and the MQTT
ingest alike; the store enforces the keys computed here (docs/nightscout.md, "Writes").

Identity, per collection:
- entries: one document per (type, date); an sgv with the value of another less than a
  minute away is a near-duplicate (the same reading re-sent with a shifted time or another
  device string), found by the store;
- treatments: the client's identity when it sends one (`identifier`, `_id`, Loop's
  `syncIdentifier`), otherwise (created_at, eventType[, Trio's id]);
- devicestatus: the client's identity, otherwise (created_at, device) when the client gave
  the time (a status stamped by the server is always new);
- profile, food, activity, settings: the client's identity, otherwise a new document.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from nightlink.nightscout import jsonsafe, times

ENTRIES, TREATMENTS, DEVICESTATUS = "entries", "treatments", "devicestatus"
PROFILE, FOOD, ACTIVITY, SETTINGS = "profile", "food", "activity", "settings"
V1_COLLECTIONS = (ENTRIES, TREATMENTS, DEVICESTATUS, PROFILE, FOOD, ACTIVITY)
V3_COLLECTIONS = (DEVICESTATUS, ENTRIES, FOOD, PROFILE, SETTINGS, TREATMENTS)
COLLECTIONS = (*V1_COLLECTIONS, SETTINGS)

ENTRY_TYPES = ("sgv", "mbg", "cal")
ENTRY_VALUE_MAX = 1000  # mg/dL: nothing a sensor or meter reports is above this
DATE_MIN_MS = 946_684_800_000  # entries before 2000 are a client's clock or unit error
FUTURE_SLACK_MS = 24 * 3600 * 1000  # a reading from tomorrow would be "current" for a day
NEAR_DUPLICATE_MS = 60_000  # strictly less: one-minute sensors keep equal readings a minute apart
MAX_DOC_BYTES = 512 * 1024
PREDICTIONS_MAX = 288  # openaps predBGs arrays are cut to a day of 5-minute values
DELTA_MIN_GAP_MS = 30_000  # a delta is computed from a reading 30 s to 10 min older
DELTA_MAX_GAP_MS = 600_000

_HEX24 = re.compile(r"^[0-9a-fA-F]{24}$")
_V3_NAMESPACE = uuid.UUID(bytes=b"NightscoutRocks!")
# Server-managed fields a client may not set.
_SERVER_FIELDS = ("srvCreated", "srvModified", "subject", "modifiedBy")
# Entry fields that are numbers; clients sometimes send them as text.
_ENTRY_NUMBERS = ("sgv", "mbg", "delta", "filtered", "unfiltered", "rssi", "noise", "trend",
                  "trendRate", "slope", "intercept", "scale", "glucose", "utcOffset")
# Treatment fields Nightscout turns into numbers, and those it drops when zero or not a number.
_TREATMENT_NUMBERS = ("glucose", "targetTop", "targetBottom", "carbs", "insulin", "duration",
                      "percent", "absolute", "relative", "preBolus", "rate", "protein", "fat",
                      "durationInMilliseconds", "amount", "programmed", "absorptionTime",
                      "enteredinsulin", "splitNow", "splitExt")
_DROP_WHEN_FALSY = ("targetTop", "targetBottom", "carbs", "insulin", "percent", "relative",
                    "notes", "preBolus")
_DROP_WHEN_NAN = ("absolute", "duration")
_PROFILE_NUMBERS = ("dia", "carbs_hr", "delay")
# Loop writes two directions in CamelCase; every other client (and Trio's reader) spells them so.
_DIRECTION_SPELLING = {"NotComputable": "NOT COMPUTABLE", "RateOutOfRange": "RATE OUT OF RANGE"}


class DocumentError(ValueError):
    """An uploaded document is not valid; the message is one sentence naming the field."""


@dataclass
class Normalized:
    """A document ready for the store, with the keys the store indexes and deduplicates on."""

    coll: str
    doc: dict
    date_ms: int  # the collection's time: entries date, treatments created_at, ...
    kind: str = ""  # entries type, treatments eventType, devicestatus device
    value: float | None = None  # an entry's sgv or mbg
    oid: str | None = None  # the client's 24-hex `_id`
    identifier: str | None = None  # the client's identity, or the API v3 computed one
    client_identity: bool = False  # identifier came from the client (not computed)
    dedup: str | None = None  # unique within the collection (entries: type|date)
    pair: str | None = None  # fallback key for documents without a client identity
    extra: list[Normalized] = field(default_factory=list)  # a preBolus treatment's carbs


# -- small helpers ----------------------------------------------------------------------------


def shown(items: list[Normalized], outcomes: list, reads: bool) -> list[dict]:
    """What a writer is answered for each document put() stored, in put()'s order (each item,
    then its extras): the stored document when it may read the collection; else what it sent,
    with the _id it is stored under, so a stored document it matched is not shown to it."""
    if reads:
        return [o.row.v1() for o in outcomes]
    sent = [x for n in items for x in (n, *n.extra)]
    return [{**n.doc, "_id": o.row.oid} for n, o in zip(sent, outcomes, strict=True)]


def name_by_app_id(n: Normalized) -> None:
    """A treatment an app wrote through the API with its own 24-hex `_id` (Juggluco, xDrip+):
    that id is its identity, as Nightscout's upsert keys it (identifier, else _id, else
    created_at + eventType). It is kept as the document's `identifier` too, so that every
    tier's sync carries it: a meal's insulin and carbs sent in the same second as two
    treatments stay two everywhere. Its created_at + eventType pair is still stored, so a
    later copy that names nothing merges into it, as Nightscout's upsert would."""
    if n.coll == TREATMENTS and n.oid is not None and not n.client_identity:
        n.identifier = n.doc["identifier"] = n.oid
        n.client_identity = True  # matched by its id only; its pair stays (collections.py)


def _pair_part(text: str) -> str:
    """A client's text as part of an indexed pair key: as it is up to 1,000 characters (Trio's
    ids are UUIDs), longer as its SHA-1 (a 3,000-character `id` overflowed PostgreSQL's
    index entry, and the upload was lost with a 503)."""
    if len(text) <= 1000:
        return text
    return "sha1:" + hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()


def new_oid(now_ms: int | None = None) -> str:
    """A fresh 24-hex id shaped like a MongoDB ObjectId (seconds, then random bits)."""
    seconds = int((now_ms if now_ms is not None else time.time() * 1000) // 1000)
    return f"{seconds & 0xFFFFFFFF:08x}{os.urandom(8).hex()}"


def entry_oid(type_: str, date_ms: int) -> str:
    """The stable `_id` of the entry (type, date): the same on the edge and in the cloud."""
    return hashlib.sha1(f"{type_}:{date_ms}".encode()).hexdigest()[:24]


def v3_identifier(doc: dict, date_ms: int) -> str:
    """API v3's identifier of a document that brings none: UUID v5 of device_date[_eventType]."""
    name = f"{doc.get('device', 'undefined')}_{date_ms}"
    if doc.get("eventType"):
        name += f"_{doc['eventType']}"
    return str(uuid.uuid5(_V3_NAMESPACE, name))


def is_hex_id(value: object) -> bool:
    return isinstance(value, str) and bool(_HEX24.match(value))


def to_number(value: Any) -> Any:
    """A number, or a numeric string as a number; anything else unchanged."""
    if isinstance(value, str):
        text = value.strip()
        try:
            return jsonsafe.number(float(text)) if text else value
        except ValueError:
            return value
    if isinstance(value, float):
        return jsonsafe.number(value)
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _object(item: Any, what: str) -> dict:
    if not isinstance(item, dict):
        raise DocumentError(f"A {what} must be a JSON object, not {type(item).__name__}.")
    _check_values(item, what)
    size = len(jsonsafe.dumps(item))
    if size > MAX_DOC_BYTES:
        raise DocumentError(f"A {what} is at most {MAX_DOC_BYTES} bytes of JSON, not {size}.")
    return {k: v for k, v in item.items() if k not in _SERVER_FIELDS}


def _check_values(item: dict, what: str) -> None:
    """Refuse what a backend cannot keep: a NUL character in any text (PostgreSQL refuses
    it, SQLite would keep it) and a number that is not finite (JSON cannot hold it). Walked
    without recursion, so a deeply nested document cannot exhaust the stack."""
    pending: list = [item]
    while pending:
        value = pending.pop()
        if isinstance(value, dict):
            for key, sub in value.items():
                if isinstance(key, str) and "\x00" in key:
                    raise DocumentError(f"A {what} may not hold a NUL character in a field name.")
                pending.append(sub)
        elif isinstance(value, list | tuple):
            pending.extend(value)
        elif isinstance(value, str) and "\x00" in value:
            raise DocumentError(f"A {what} may not hold a NUL character in its text.")
        elif isinstance(value, float) and not math.isfinite(value):
            raise DocumentError(f"A {what} may not hold a number that is not finite ({value}).")


def _short_text(doc: dict, key: str, limit: int = 200) -> str | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        value = str(value) if _is_number(value) else None
        if value is None:
            raise DocumentError(f"{key} must be text, not {doc[key]!r}.")
    if len(value) > limit:
        raise DocumentError(f"{key} is at most {limit} characters long.")
    return value


def _offset(doc: dict, parsed: int | None) -> None:
    """utcOffset (minutes): the client's when valid, else the offset of its time text, else 0."""
    given = to_number(doc.get("utcOffset"))
    if _is_number(given) and -1440 <= given <= 1440:
        doc["utcOffset"] = int(given)
    else:
        doc["utcOffset"] = parsed if parsed is not None else 0


def _identity(doc: dict, n: Normalized, *, sync_identifier: bool = False) -> None:
    """The client's identity: `identifier`, else `_id` (24 hex is the oid; other text, such as
    Loop's UUIDs, an identifier), else Loop's `syncIdentifier` where it names a record."""
    raw_id = doc.pop("_id", None)
    ident = doc.get("identifier")
    if ident is not None and (not isinstance(ident, str) or not ident.strip()
                              or len(ident) > 200):
        raise DocumentError(f"identifier must be non-empty text, not {ident!r}.")
    if isinstance(raw_id, str) and raw_id.strip() and len(raw_id) <= 200:
        if is_hex_id(raw_id):
            n.oid = raw_id.lower()
        elif ident is None:
            ident = doc["identifier"] = raw_id  # as Nightscout keeps a non-ObjectId _id
    elif raw_id not in (None, ""):
        raise DocumentError(f"_id must be text, not {raw_id!r}.")
    if ident is None and sync_identifier and isinstance(doc.get("syncIdentifier"), str) \
            and doc["syncIdentifier"].strip():
        ident = doc["syncIdentifier"][:200]
    if ident is not None:
        n.identifier = ident
        n.client_identity = True


def _time_of(doc: dict, keys: tuple[str, ...], *, seconds_ok: bool) -> tuple[int, int | None,
                                                                            str | None]:
    """(ms, offset, key) from the first of keys present; DocumentError naming a bad one."""
    for key in keys:
        value = doc.get(key)
        if value is None or value == "":
            continue
        try:
            ms, offset = times.parse(value, seconds_ok=seconds_ok)
        except times.TimeError as exc:
            raise DocumentError(f"{key}: {exc}") from None
        return ms, offset, key
    return -1, None, None


# -- per collection -----------------------------------------------------------------------------


def normalize(coll: str, item: Any, now_ms: int, *, v3: bool = False) -> Normalized:
    """The document to store for one uploaded item; DocumentError with one sentence if invalid.

    v3: API v3 rules (numbers below 2000-01-01 are seconds; an identifier is computed when the
    client sends none, as `identifier` is API v3's key).
    """
    if coll not in COLLECTIONS:
        raise DocumentError(f"There is no collection {coll!r}.")
    doc = _object(item, _WHAT[coll])
    return _NORMALIZERS[coll](doc, now_ms, v3)


def _entry(doc: dict, now_ms: int, v3: bool) -> Normalized:
    for key in _ENTRY_NUMBERS:
        if key in doc:
            doc[key] = to_number(doc[key])
    type_ = doc.get("type")
    if type_ is None or type_ == "":
        type_ = ("sgv" if "sgv" in doc else "mbg" if "mbg" in doc
                 else "cal" if "slope" in doc else None)
        if type_ is None:
            raise DocumentError("type is missing and cannot be told from the fields (sgv, mbg "
                                "or slope).")
    if not isinstance(type_, str) or len(type_) > 32:
        raise DocumentError(f"type must be short text, not {type_!r}.")
    doc["type"] = type_
    date_ms, offset, key = _time_of(doc, ("date", "dateString", "sysTime", "created_at"),
                                    seconds_ok=v3)
    if key is None:
        raise DocumentError("An entry needs its time in date (ms) or dateString.")
    if isinstance(doc.get("dateString"), str):  # its offset is the uploader's time zone
        try:
            offset = times.parse(doc["dateString"])[1]
        except times.TimeError:
            pass
    if date_ms < DATE_MIN_MS:
        hint = " (it looks like seconds, not ms)" if date_ms > DATE_MIN_MS // 1000 else ""
        raise DocumentError(f"date {date_ms} is before the year 2000{hint}.")
    if date_ms > now_ms + FUTURE_SLACK_MS:
        raise DocumentError(f"date {date_ms} is more than a day in the future.")
    doc["date"] = date_ms
    doc["dateString"] = doc["sysTime"] = times.iso(date_ms)
    _offset(doc, offset)
    value = None
    if type_ in ("sgv", "mbg"):
        value = doc.get(type_)
        if value is None:
            raise DocumentError(f"{type_} is required for an {type_} entry.")
        if not _is_number(value):
            raise DocumentError(f"{type_} must be a number, not {value!r}.")
        if not 0 <= value <= ENTRY_VALUE_MAX:
            raise DocumentError(f"{type_} {value} is outside 0..{ENTRY_VALUE_MAX} mg/dL.")
        if type_ == "sgv" and value < 39:
            from nightlink.shared import units

            doc["sensorError"] = units.SENSOR_ERRORS.get(int(value), f"sensor error {value}")
    direction = doc.get("direction")
    if isinstance(direction, str):
        doc["direction"] = _DIRECTION_SPELLING.get(direction, direction)
    n = Normalized(ENTRIES, doc, date_ms, kind=type_, value=value,
                   dedup=f"{type_}|{date_ms}")
    _identity(doc, n)
    if n.identifier is None and v3:
        n.identifier = v3_identifier(doc, date_ms)
    n.oid = n.oid or entry_oid(type_, date_ms)
    return n


def _treatment(doc: dict, now_ms: int, v3: bool) -> Normalized:
    ms, offset, _ = _time_of(doc, ("eventTime", "created_at", "date", "timestamp", "mills"),
                             seconds_ok=v3)
    if ms < 0:
        ms, offset = now_ms, None
    elif ms < DATE_MIN_MS:  # stored, it would sit in 1970: in no date range, app or report
        hint = " (it looks like seconds, not ms)" if ms > DATE_MIN_MS // 1000 else ""
        raise DocumentError(f"The treatment's time {ms} is before the year 2000{hint}.")
    if "created_at" in doc and isinstance(doc["created_at"], str) and "eventTime" in doc:
        try:
            offset = times.parse(doc["created_at"])[1]
        except times.TimeError:
            pass
    doc.pop("eventTime", None)
    doc["created_at"] = times.iso(ms)
    _offset(doc, offset)
    for key in _TREATMENT_NUMBERS:
        if key in doc:
            doc[key] = to_number(doc[key])
            if not _is_number(doc[key]) and doc[key] is not None:
                doc[key] = None  # Nightscout's Number(): not a number
    for key in _DROP_WHEN_FALSY:
        if key in doc and not doc[key]:
            del doc[key]
    for key in _DROP_WHEN_NAN:
        if key in doc and doc[key] is None:
            del doc[key]
    if "glucose" in doc and not doc["glucose"]:
        for key in ("glucose", "glucoseType", "units"):
            doc.pop(key, None)
    event_type = _short_text(doc, "eventType", 100)
    if event_type is not None:
        doc["eventType"] = event_type
    if event_type == "Announcement":
        doc["isAnnouncement"] = True
    n = Normalized(TREATMENTS, doc, ms, kind=event_type or "")
    _identity(doc, n, sync_identifier=True)
    if not n.client_identity:
        trio_id = doc.get("id") if isinstance(doc.get("id"), str) else ""
        n.pair = f"{ms}|{event_type or ''}|{_pair_part(trio_id)}"
        if v3:
            n.identifier = v3_identifier({**doc, "eventType": event_type}, ms)
    pre = doc.get("preBolus")
    if _is_number(pre) and pre and doc.get("carbs"):
        later_ms = ms + pre * 60_000
        if not times.MIN_MS <= later_ms <= times.MAX_MS:
            raise DocumentError(f"preBolus {pre} minutes puts the carbs outside the years "
                                "1970 to 9999.")
        carbs = doc.pop("carbs")
        later = {"created_at": times.iso(int(later_ms)), "eventType": event_type,
                 "carbs": carbs}
        if doc.get("notes"):
            later["notes"] = doc["notes"]
        n.extra.append(_treatment(later, now_ms, v3))
    return n


def _devicestatus(doc: dict, now_ms: int, v3: bool) -> Normalized:
    ms, offset, key = _time_of(doc, ("created_at", "date", "mills"), seconds_ok=v3)
    # Nightscout's API v1 stamps a status without created_at when it arrives and never reads
    # `date`: oref0's pushover snooze sends `date` in seconds, which read as ms is 1970 (its
    # rigs then never see it among the newest statuses). API v3 keys a document on its date,
    # so there one before 2000 is refused, as an entry's or a treatment's is.
    if key is not None and key != "created_at" and 0 <= ms < DATE_MIN_MS:
        if v3:
            raise DocumentError(f"The device status's {key} {ms} is before the year 2000.")
        key = None
    if key is None:
        ms, offset = now_ms, None
    doc["created_at"] = times.iso(ms)
    _offset(doc, offset)
    device = _short_text(doc, "device", 200) or ""
    if "device" in doc:
        doc["device"] = device
    for part in ("suggested", "enacted"):
        preds = (doc.get("openaps") or {}).get(part) if isinstance(doc.get("openaps"), dict) \
            else None
        preds = preds.get("predBGs") if isinstance(preds, dict) else None
        if isinstance(preds, dict):
            for name, values in preds.items():
                if isinstance(values, list) and len(values) > PREDICTIONS_MAX:
                    preds[name] = values[:PREDICTIONS_MAX]
    n = Normalized(DEVICESTATUS, doc, ms, kind=device)
    _identity(doc, n)
    if not n.client_identity and key is not None:
        n.pair = f"{ms}|{device}"
        if v3:
            n.identifier = v3_identifier(doc, ms)
    return n


def _profile(doc: dict, now_ms: int, v3: bool) -> Normalized:
    if "mills" in doc:
        doc["mills"] = to_number(doc["mills"])
    store = doc.get("store")
    if store is not None and not isinstance(store, dict):
        raise DocumentError("store must be an object of named profiles.")
    for profile in (store or {}).values():
        if isinstance(profile, dict):
            for key in _PROFILE_NUMBERS:
                if key in profile:
                    profile[key] = to_number(profile[key])
    created, _, ckey = _time_of(doc, ("created_at",), seconds_ok=False)
    if ckey is None:
        created = now_ms
        doc["created_at"] = times.iso(now_ms)
    elif not isinstance(doc["created_at"], str):
        doc["created_at"] = times.iso(created)  # kept as sent when it is text (AAPS compares it)
    start, _, skey = _time_of(doc, ("startDate", "date", "mills"), seconds_ok=v3)
    if skey is None:
        start = created
    if v3 and "date" not in doc:
        doc["date"] = start
    n = Normalized(PROFILE, doc, start)
    _identity(doc, n)
    if not n.client_identity:
        n.pair = f"{created}"
        if v3:
            n.identifier = v3_identifier(doc, start)
    return n


def _plain(coll: str):
    def normalize_plain(doc: dict, now_ms: int, v3: bool) -> Normalized:
        ms, _, key = _time_of(doc, ("created_at", "date", "timestamp"), seconds_ok=v3)
        if key is None or coll == FOOD and not v3:
            ms = now_ms  # Nightscout stamps food when it is written
        doc["created_at"] = times.iso(ms)
        if v3 and "date" not in doc:
            doc["date"] = ms
        n = Normalized(coll, doc, ms, kind=str(doc.get("type") or "")[:100])
        _identity(doc, n)
        if v3 and n.identifier is None:
            n.identifier = v3_identifier(doc, ms)
        return n

    return normalize_plain


_WHAT = {ENTRIES: "entry", TREATMENTS: "treatment", DEVICESTATUS: "device status",
         PROFILE: "profile", FOOD: "food", ACTIVITY: "activity", SETTINGS: "settings document"}
_NORMALIZERS = {ENTRIES: _entry, TREATMENTS: _treatment, DEVICESTATUS: _devicestatus,
                PROFILE: _profile, FOOD: _plain(FOOD), ACTIVITY: _plain(ACTIVITY),
                SETTINGS: _plain(SETTINGS)}


# -- reading documents back -----------------------------------------------------------------------


def time_field(coll: str) -> str:
    """The field a collection's default time window and sort apply to."""
    return {ENTRIES: "date", PROFILE: "startDate"}.get(coll, "created_at")
