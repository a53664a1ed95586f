"""Nightscout API v1 documents for the cloud: query parsing, upload checks and reply shapes.

Pure helpers over a `TenantStore`; the routes in `routes_nightscout.py` stay thin. Entry
validation, ids and dateString come from the edge's endpoint (`nightlink.edge.nightscout`);
what could not be imported from there is written once here.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from nightlink.edge.nightscout import (  # noqa: F401 - re-exported for the cloud routes
    NEAR_DUPLICATE_WINDOW_MS,
    EntryError,
    QueryError,
    date_string,
    if_modified_since,
    json_bytes,
    parse_find,
    validate_entry,
)
from nightlink.shared import units

_LOGGER = logging.getLogger(__name__)

# The delta is mg/dL per 5 minutes, from the previous valid reading 30 s to 10 min older.
DELTA_MIN_GAP_MS = 30_000
DELTA_MAX_GAP_MS = 600_000
# Treatment fields Nightscout keeps as numbers (uploaders sometimes send them as text).
_TREATMENT_NUMBERS = ("insulin", "carbs", "glucose", "duration", "absolute", "rate", "percent",
                      "protein", "fat")


class DocumentError(ValueError):
    """An uploaded treatment, device status or profile is not valid; one sentence."""


# -- times ----------------------------------------------------------------------------------


def parse_iso_ms(text: str) -> tuple[int, int | None]:
    """(ms since the epoch, UTC offset in minutes or None) of an ISO 8601 time; naive is UTC.

    Raises ValueError when the text is not an ISO 8601 time.
    """
    dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    offset = dt.utcoffset()
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    minutes = None if offset is None else int(offset.total_seconds() // 60)
    return round(dt.timestamp() * 1000), minutes


def last_modified_stamp(changed: float, now: float) -> int:
    """The whole second to announce as Last-Modified for data last changed at `changed`.

    Entries may still arrive within the current second, so that second is held back: the
    client's next If-Modified-Since then cannot hide them. Duplicates the logic inside the
    edge's `entries_response`.
    """
    stamp = int(changed)
    return stamp - 1 if int(now) <= stamp else stamp


def http_date(stamp: int) -> str:
    return format_datetime(datetime.fromtimestamp(stamp, tz=UTC), usegmt=True)


# -- entries queries --------------------------------------------------------------------------


def parse_created_since(params: list[tuple[str, str]]) -> int | None:
    """The lower time bound (ms) of `find[created_at][$gte|$gt]=ISO or ms` on treatments."""
    since = None
    for key, raw in params:
        if not key.startswith("find["):
            continue
        if key not in ("find[created_at][$gte]", "find[created_at][$gt]"):
            raise QueryError(f"The query {key} is not supported on treatments; use "
                             f"find[created_at][$gte] or find[created_at][$gt].")
        try:
            ms = int(raw) if raw.isdigit() else parse_iso_ms(raw)[0]
        except ValueError:
            raise QueryError(f"{key}={raw} is not an ISO 8601 time.") from None
        ms += 1 if key.endswith("[$gt]") else 0
        since = ms if since is None else max(since, ms)
    return since


# -- entries upload ---------------------------------------------------------------------------


@dataclass
class UploadResult:
    stored: list[dict] = field(default_factory=list)
    duplicates: int = 0
    near_duplicates: int = 0
    rejected: list[tuple[str, bytes]] = field(default_factory=list)  # (reason, payload)


def upload_entries(data, items: list[Any], now_ms: int) -> UploadResult:
    """Validate, dedupe and store uploaded entries into a TenantStore, oldest first.

    Invalid items come back in `rejected` for the caller to dead-letter. An entry with the
    (date, type) of a stored one is a duplicate; an sgv entry with the value of a stored sgv
    entry less than a minute away (any device string) is a near-duplicate; neither is stored.
    A missing delta is computed from the previous valid reading. Duplicates the logic of the
    edge's `EntriesService.upload`, `_near_duplicate` and `_fill_delta`, over the cloud store.
    """
    result = UploadResult()
    valid: list[dict] = []
    for index, item in enumerate(items):
        try:
            valid.append(validate_entry(item, now_ms))
        except EntryError as exc:
            result.rejected.append((f"entry {index}: {exc}", json_bytes(item)))
    valid.sort(key=lambda d: d["date"])  # oldest first, so each delta sees its predecessor
    accepted: list[dict] = []
    keys: set[tuple[int, str]] = set()
    with data.db.transaction():  # one writer on SQLite: the checks and the insert together
        for doc in valid:
            key = (doc["date"], doc["type"])
            if key in keys or data.entries(count=1, type_=doc["type"],
                                           where=[("date", "=", doc["date"])]):
                result.duplicates += 1
                continue
            if doc["type"] == "sgv":
                near = _near_duplicate(data, accepted, doc)
                if near is not None:
                    result.near_duplicates += 1
                    _LOGGER.info("near-duplicate sgv %s at %s from %r not stored: the same "
                                 "value is stored at %s", doc["sgv"], doc["dateString"],
                                 doc.get("device"), date_string(near))
                    continue
                _fill_delta(data, accepted, doc)
            keys.add(key)
            accepted.append(doc)
        stored, races = data.add_entries(accepted)
    result.stored = stored
    result.duplicates += races
    return result


def _near_duplicate(data, accepted: list[dict], doc: dict) -> int | None:
    """The date of a stored or accepted sgv entry with this value less than a minute away."""
    lo = doc["date"] - NEAR_DUPLICATE_WINDOW_MS
    hi = doc["date"] + NEAR_DUPLICATE_WINDOW_MS
    for prev in reversed(accepted):  # oldest first: only the tail can be this close
        if prev["date"] <= lo:
            break
        if prev["type"] == "sgv" and prev["sgv"] == doc["sgv"]:
            return prev["date"]
    found = data.entries(count=1, type_="sgv", where=[
        ("sgv", "=", doc["sgv"]), ("date", ">", lo), ("date", "<", hi)])
    return int(found[0]["date"]) if found else None


def _fill_delta(data, accepted: list[dict], doc: dict) -> None:
    if "delta" in doc or units.is_sensor_error(doc["sgv"]):
        return
    lo, hi = doc["date"] - DELTA_MAX_GAP_MS, doc["date"] - DELTA_MIN_GAP_MS
    prev = next((p for p in reversed(accepted) if p["type"] == "sgv" and lo <= p["date"] <= hi
                 and not units.is_sensor_error(p["sgv"])), None)
    found = data.entries(count=1, type_="sgv", where=[
        ("sgv", ">=", units.SGV_MIN_VALID), ("date", ">=", lo), ("date", "<=", hi)])
    if found and (prev is None or int(found[0]["date"]) > prev["date"]):
        prev = found[0]
    if prev is not None:
        gap_min = (doc["date"] - int(prev["date"])) / 60_000
        doc["delta"] = round((doc["sgv"] - prev["sgv"]) * 5 / gap_min, 1)


# -- treatments, device status, profiles -------------------------------------------------------


def _time_of(doc: dict, now_ms: int) -> tuple[int, int | None]:
    """(ms, offset minutes) of a document's created_at (ISO or ms), else `date`/`mills`, else now."""
    value = doc.get("created_at")
    if isinstance(value, str) and value.strip():
        try:
            return parse_iso_ms(value)
        except ValueError:
            raise DocumentError(f"created_at {value!r} is not an ISO 8601 time.") from None
    for key in ("created_at", "date", "mills"):
        value = doc.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return int(value), None
    if doc.get("created_at") not in (None, ""):
        raise DocumentError(f"created_at must be an ISO 8601 time, not {doc['created_at']!r}.")
    return now_ms, None


def _object(item: Any, what: str) -> dict:
    if not isinstance(item, dict):
        raise DocumentError(f"A {what} must be a JSON object, not {type(item).__name__}.")
    return {k: v for k, v in item.items() if k != "_id" or isinstance(v, str)}


def _hex_id(*parts: object) -> str:
    return hashlib.sha1(":".join(str(p) for p in parts).encode()).hexdigest()[:24]


def treatment_identifier(created_at_ms: int, event_type: str) -> str:
    """The identifier of a treatment that brings none: a hash of (created_at, eventType)."""
    return _hex_id("treatment", created_at_ms, event_type)


def validate_treatment(item: Any, now_ms: int) -> dict:
    """The treatment document to store (with identifier and created_at_ms); DocumentError if bad."""
    doc = _object(item, "treatment")
    event_type = doc.get("eventType") or "<none>"
    if not isinstance(event_type, str):
        raise DocumentError(f"eventType must be text, not {event_type!r}.")
    ms, offset = _time_of(doc, now_ms)
    for key in _TREATMENT_NUMBERS:
        value = doc.get(key)
        if isinstance(value, str) and value.strip():
            try:
                doc[key] = float(value) if "." in value else int(value)
            except ValueError:
                raise DocumentError(f"{key} must be a number, not {value!r}.") from None
        elif value is not None and (isinstance(value, bool) or
                                    not isinstance(value, int | float | str)):
            raise DocumentError(f"{key} must be a number, not {value!r}.")
    identifier = doc.get("identifier")
    if identifier is not None and (not isinstance(identifier, str) or not identifier):
        raise DocumentError(f"identifier must be non-empty text, not {identifier!r}.")
    doc["eventType"] = event_type
    doc["created_at"] = date_string(ms)
    if offset is not None:
        doc.setdefault("utcOffset", offset)
    doc["identifier"] = identifier or treatment_identifier(ms, event_type)
    doc.setdefault("_id", _hex_id("treatment-id", doc["identifier"]))
    doc["created_at_ms"] = ms
    return doc


def validate_devicestatus(item: Any, now_ms: int) -> dict:
    """The device status document to store (with created_at_ms); DocumentError if bad."""
    doc = _object(item, "device status")
    ms, offset = _time_of(doc, now_ms)
    device = doc.get("device", "")
    if not isinstance(device, str):
        raise DocumentError(f"device must be text, not {device!r}.")
    doc["created_at"] = date_string(ms)
    if offset is not None:
        doc.setdefault("utcOffset", offset)
    doc.setdefault("_id", _hex_id("devicestatus", ms, device, json_bytes(item)))
    doc["created_at_ms"] = ms
    return doc


def validate_profile(item: Any, now_ms: int) -> tuple[dict, int]:
    """(profile document, start ms): startDate (ISO) or created_at or now starts it."""
    doc = _object(item, "profile")
    if not isinstance(doc.get("store", {}), dict):
        raise DocumentError("store must be an object of named profiles.")
    start = doc.get("startDate")
    if isinstance(start, str) and start:
        try:
            start_ms, _ = parse_iso_ms(start)
        except ValueError:
            raise DocumentError(f"startDate {start!r} is not an ISO 8601 time.") from None
    elif start is not None:
        raise DocumentError(f"startDate must be an ISO 8601 time, not {start!r}.")
    else:
        start_ms, _ = _time_of(doc, now_ms)
        doc["startDate"] = date_string(start_ms)
    doc.setdefault("created_at", date_string(now_ms))
    doc.setdefault("mills", start_ms)
    doc.setdefault("_id", _hex_id("profile", start_ms, json_bytes(item)))
    return doc, start_ms


def public_doc(doc: dict) -> dict:
    """A stored treatment or device status as the API returns it (no internal fields)."""
    return {k: v for k, v in doc.items() if k != "created_at_ms"}


# -- pebble ---------------------------------------------------------------------------------


def trend_number(direction: Any) -> int:
    """Nightscout's trend number of a direction; 8 (NOT COMPUTABLE) when unknown."""
    try:
        return units.DIRECTIONS.index(direction)
    except ValueError:
        return 8


def pebble(sgvs: list[dict], statuses: list[dict], *, count: int, mmol: bool,
           now_ms: int) -> dict:
    """The /pebble reply from sgv entries and device statuses (both newest first).

    bgs: the newest `count` readings, sgv as text (mg/dL, or mmol/L to one decimal); the first
    also carries bgdelta (0 when it cannot be computed) and the uploader battery if known.
    """
    bgs = []
    for doc in sgvs[:count]:
        bg = {"sgv": _pebble_value(doc["sgv"], mmol), "trend": trend_number(doc.get("direction")),
              "datetime": int(doc["date"])}
        if "direction" in doc:
            bg["direction"] = doc["direction"]
        bgs.append(bg)
    if bgs:
        delta = _pebble_delta(sgvs)
        bgs[0]["bgdelta"] = f"{units.to_mmoll(delta):.1f}" if mmol else round(delta)
        battery = next((s["uploader"].get("battery") for s in statuses
                        if isinstance(s.get("uploader"), dict)), None)
        if isinstance(battery, int | float) and not isinstance(battery, bool) and battery >= 0:
            bgs[0]["battery"] = str(battery)
    return {"status": [{"now": now_ms}], "bgs": bgs, "cals": []}


def _pebble_value(sgv: int, mmol: bool) -> str:
    if mmol and not units.is_sensor_error(sgv):
        return f"{units.to_mmoll(sgv):.1f}"
    return str(sgv)


def _pebble_delta(sgvs: list[dict]) -> float:
    """mg/dL per 5 min between the newest reading and the valid one before it (0 if none)."""
    if not sgvs or units.is_sensor_error(sgvs[0]["sgv"]):
        return 0
    first = sgvs[0]
    delta = first.get("delta")
    if isinstance(delta, int | float) and not isinstance(delta, bool):
        return delta
    for prev in sgvs[1:]:
        gap = int(first["date"]) - int(prev["date"])
        if gap > DELTA_MAX_GAP_MS:
            break
        if gap >= DELTA_MIN_GAP_MS and not units.is_sensor_error(prev["sgv"]):
            return (first["sgv"] - prev["sgv"]) * 5 / (gap / 60_000)
    return 0

