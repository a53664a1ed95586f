"""Nightscout JSON exports: the array of entries `/api/v1/entries.json` returns (or the
`result` array of API v3, or one entry per line as mongoexport writes them, its numbers
as `{"$numberLong": "…"}` too), as `Glucose` samples oldest first. Nightscout's text
download is read too: what `/api/v1/entries` (`.txt`, `.tsv`, `.csv`, or no extension with
no Accept header) answers, a line per entry without a header, `dateString`, `date`, `sgv`,
`direction` and `device` separated by tabs (commas for `.csv`), each cell as JSON (strings
quoted, a missing field empty: a meter's entry has no sgv).

Each sgv entry has `sgv` (mg/dL) and `date` (Unix milliseconds, UTC), usually `dateString`
(ISO 8601 with its offset), `direction` and `device`; mbg and cal entries are not CGM
readings and are passed over. An entry with no `date` is timed by `mills`, else by
`dateString` (read in `tz` only when it has no offset, the hour repeated when clocks go back
placed by the CSV exports' rule, `localtime.py`). sgv < 39 is a sensor error code,
kept as one, never as glucose, the rule of the live follower (sources/cgm.py).

Tidepool's JSON export is read too: its CGM readings are `cbg` data with `value` in the
`units` they name (`mmol/L` as Tidepool stores them, or `mg/dL`; under 39 mg/dL read as
39, below the sensor's range) and `time` in UTC;
fingersticks (`smbg`) and everything else are passed over like mbg entries.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime
from pathlib import Path

from nightlink.edge.importers.common import BadRows, ImportedReadings, read_text, result, zone
from nightlink.edge.importers.localtime import LocalClock
from nightlink.edge.sources.samples import Glucose, SourceError
from nightlink.shared import units

_MS_RANGE = (946_684_800_000, 4_102_444_800_000)  # 2000-01-01 .. 2100-01-01 UTC
MAX_SGV = 1000
_BROKEN = object()  # a line of a one-document-per-line file that is not JSON
_MONGO_NUMBERS = {"$numberLong", "$numberInt", "$numberDouble", "$numberDecimal"}


def read_nightscout_json(path: Path | str, tz: str = "UTC") -> ImportedReadings:
    """The sgv entries of a Nightscout JSON export, oldest first; bad entries counted."""
    path = Path(path)
    local = zone(tz)
    data = _documents(path, read_text(path, "Nightscout JSON"))
    if isinstance(data, dict) and isinstance(data.get("result"), list):
        data = data["result"]
    if not isinstance(data, list):
        raise SourceError(f"{path} is not a Nightscout JSON export: it holds a JSON "
                          f"{type(data).__name__}, not a list of entries.")
    bad, out = BadRows(), {}
    wall: list[tuple[tuple[int, dict], datetime]] = []  # entries timed by local time alone

    def take(i: int, entry: dict, ms: float) -> None:
        try:
            g = _glucose(entry, ms)
        except ValueError as exc:
            bad.add(i, str(exc), "entry")
            return
        out.setdefault((g.t, g.sgv, g.error_code), g)

    for i, entry in enumerate(data, 1):
        if entry is _BROKEN:
            bad.add(i, "broken JSON", "entry")
            continue
        if not isinstance(entry, dict):
            bad.add(i, "not a JSON object", "entry")
            continue
        kind = entry.get("type", "sgv" if "sgv" in entry else None)
        if kind == "cbg":  # Tidepool
            try:
                entry = _tidepool_cbg(entry)
            except ValueError as exc:
                bad.add(i, str(exc), "entry")
                continue
        elif kind != "sgv":
            continue  # mbg, cal and other entries are not CGM readings
        try:
            ms = _time_ms(entry)
        except ValueError as exc:
            bad.add(i, str(exc), "entry")
            continue
        if isinstance(ms, datetime):
            wall.append(((i, entry), ms))
        else:
            take(i, entry, ms)
    # Local times alone are placed in the file's order, so the hour repeated when clocks go
    # back is read as both its passes (the CSV exports' rule, localtime.py).
    for (i, entry), t in LocalClock(local).place(wall):
        take(i, entry, t * 1000)
    return result(path, "Nightscout JSON", list(out.values()), bad, [])


# A line of Nightscout's text download: the dateString quoted (or empty: an uploader that sent
# none), then the date in milliseconds (13 digits to 2286; written as a string by some).
TEXT_LINE = re.compile(r'^(?:"[^"\t]*")?([\t,])"?\d{12,13}(\.\d+)?"?([\t,]|$)')
_TEXT_FIELDS = ("dateString", "date", "sgv", "direction", "device")
_TEXT_SNIFF_LINES = 5


def _text_lines(text: str) -> list[str]:
    """The file's lines with their line ends taken off but not their leading tabs (an empty
    first cell), blank lines and a byte-order mark left out."""
    return [line.rstrip("\r\n") for line in text.removeprefix("\ufeff").splitlines()
            if line.strip()]


def is_text_download(text: str) -> bool:
    """Whether the text is Nightscout's text download of entries (tab- or comma-separated):
    one of its first lines is a dateString (or nothing) and a date in milliseconds."""
    return any(TEXT_LINE.match(line) for line in _text_lines(text[:65536])[:_TEXT_SNIFF_LINES])


def _text_entries(text: str) -> list:
    """The entries of Nightscout's text download, `_BROKEN` for a line that is not one; an
    entry without an sgv (a meter's) is typed mbg, so it is passed over like one. An empty
    cell, or `""` (how Nightscout writes a null), is a missing field."""
    lines = _text_lines(text)
    sep = next(m.group(1) for line in lines[:_TEXT_SNIFF_LINES] if (m := TEXT_LINE.match(line)))
    out = []
    for line in lines:
        try:
            values = _json_cells(line, sep)
        except ValueError:
            out.append(_BROKEN)
            continue
        entry = {k: v for k, v in zip(_TEXT_FIELDS, values, strict=False)
                 if v is not None and v != ""}
        entry["type"] = "sgv" if "sgv" in entry else "mbg"
        out.append(entry)
    return out


_DECODER = json.JSONDecoder()


def _json_cells(line: str, sep: str) -> list:
    """A line's cells, each a JSON value or empty (None), `sep` between them; a separator
    inside a quoted string is part of it. ValueError for a line that is not such cells."""
    cells, at = [], 0
    while True:
        if at == len(line) or line[at] == sep:
            cells.append(None)
        else:
            try:
                value, at = _DECODER.raw_decode(line, at)
            except RecursionError:
                raise ValueError("nested too deeply") from None
            cells.append(value)
        if at == len(line):
            return cells
        if line[at] != sep:
            raise ValueError(f"no {sep!r} after a cell at {at}")
        at += 1


def _documents(path: Path, text: str):
    """The file's JSON; a file of one document per line (NDJSON, mongoexport's default) as
    the list of its documents, `_BROKEN` for a line that is not JSON; Nightscout's text
    download as the list of its entries."""
    if is_text_download(text):
        return _text_entries(text)
    try:
        return json.loads(text)
    except RecursionError:
        raise SourceError(f"{path} is not a Nightscout JSON export: its JSON is nested too "
                          "deeply to be one.") from None
    except json.JSONDecodeError as exc:
        if exc.msg != "Extra data":
            raise SourceError(f"{path} is not a Nightscout JSON export: the JSON is broken at "
                              f"line {exc.lineno} ({exc.msg}).") from None
    except ValueError:  # an integer of more than 4,300 digits
        if len(text.strip().splitlines()) < 2:  # one document per line: that line is bad
            raise SourceError(f"{path} is not a Nightscout JSON export: it holds a number of "
                              "thousands of digits.") from None
    docs = []
    for line in filter(None, map(str.strip, text.splitlines())):
        try:
            docs.append(json.loads(line))
        except (ValueError, RecursionError):  # JSONDecodeError is a ValueError
            docs.append(_BROKEN)
    return docs


def _number(value, what: str) -> float:
    if isinstance(value, dict) and len(value) == 1:  # mongoexport: {"$numberLong": "…"}
        value = next(iter(value.values())) if set(value) <= _MONGO_NUMBERS else value
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"{what} {value[:40]!r} is not a number") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} {str(value)[:40]!r} is not a number")
    try:  # an int beyond a float's range overflows
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise ValueError(f"{what} {str(value)[:40]!r} is not a number")
    return number


def _time_ms(entry: dict) -> float | datetime:
    """The entry's time in Unix ms, or the wall-clock time of a dateString without an offset
    (placed in the file's zone by the caller)."""
    for key in ("date", "mills"):
        if entry.get(key) is not None:
            return _number(entry[key], key)
    text = entry.get("dateString")
    if not isinstance(text, str):
        raise ValueError("no date, mills or dateString")
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"dateString {text[:40]!r} is not an ISO 8601 time") from None
    return when if when.tzinfo is None else when.timestamp() * 1000


def _tidepool_cbg(datum: dict) -> dict:
    """A Tidepool cbg datum as the Nightscout entry it stands for (sgv in mg/dL)."""
    unit = str(datum.get("units", "")).strip().lower()
    factor = {"mmol/l": units.MGDL_PER_MMOLL, "mg/dl": 1.0}.get(unit)
    if factor is None:
        raise ValueError(f"cbg units {unit[:20]!r} are neither mmol/L nor mg/dL")
    if not isinstance(datum.get("time"), str):
        raise ValueError("cbg without a time")
    mgdl = _number(datum.get("value"), "cbg value") * factor
    if mgdl <= 0:
        raise ValueError(f"cbg value {datum.get('value')!r} is not a reading")
    # Tidepool holds no error codes: a value under 39 mg/dL is a reading below the sensor's
    # range (Dexcom's "Low" arrives as 39), kept at the floor rather than taken for a code.
    return {"sgv": max(mgdl, float(units.SGV_MIN_VALID)),
            "dateString": datum["time"].replace("Z", "+00:00"), "device": "tidepool"}


def _glucose(entry: dict, ms: float) -> Glucose:
    if not _MS_RANGE[0] <= ms < _MS_RANGE[1]:
        raise ValueError(f"date {ms:.0f} is not milliseconds since 1970 in this century")
    t = ms / 1000
    if entry.get("sgv") is None:
        raise ValueError("no sgv value")
    value = _number(entry["sgv"], "sgv")
    sgv = round(value)
    if not 0 <= sgv <= MAX_SGV:
        raise ValueError(f"sgv {value:g} is outside any sensor's range")
    direction = entry.get("direction") if isinstance(entry.get("direction"), str) else None
    source = entry.get("device") if isinstance(entry.get("device"), str) else "nightscout"
    if units.is_sensor_error(sgv):
        return Glucose(t=t, sgv=None, error_code=sgv, direction=direction, source=source)
    return Glucose(t=t, sgv=sgv, direction=direction or None, source=source)
