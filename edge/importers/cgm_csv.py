"""CGM export files: Dexcom Clarity and LibreView CSVs as `Glucose` samples, oldest first.

sgv < 39 becomes an error code, never glucose; corrupt rows are skipped and counted.
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from nightlink.edge.sources.samples import Glucose, Readings, SourceError
from nightlink.shared import units

_LOGGER = logging.getLogger(__name__)

# Clarity writes "Low" below its 40 mg/dL reading range and "High" above 400. Low is stored
# as 39, which Nightscout and its clients show as LOW; High as 401, one above the range,
# which counts in the >250 band and reads as "over 400", never as a measured value.
CLARITY_LOW_SGV = units.SGV_MIN_VALID
CLARITY_HIGH_SGV = 401
_MAX_SKIPPED_LINES = 20


def _zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise SourceError(f"{tz!r} is not a known time zone name.") from exc


def _rows(path: Path, kind: str) -> Iterator[tuple[int, list[str]]]:
    """(1-based line number, cells) of a CSV file, with a comma or semicolon delimiter."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"{path} cannot be read as a {kind} export ({exc}).") from exc
    lines = text.splitlines()
    head = "\n".join(lines[:3])
    delimiter = ";" if head.count(";") > head.count(",") else ","
    reader = csv.reader(lines, delimiter=delimiter)
    for row in reader:
        yield reader.line_num, [c.strip() for c in row]


def _number(text: str) -> float:
    value = float(text.replace(",", "."))
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{text!r} is not a finite number")
    return value


class _Skips:
    def __init__(self, path: Path):
        self.path = path
        self.count = 0
        self.lines: list[int] = []

    def add(self, line: int, why: str) -> None:
        self.count += 1
        if len(self.lines) < _MAX_SKIPPED_LINES:
            self.lines.append(line)
            _LOGGER.warning("%s line %d skipped: %s", self.path, line, why)

    def result(self, readings: list[Glucose]) -> Readings:
        readings.sort(key=lambda g: g.t)
        if self.count:
            _LOGGER.warning("%s: %d corrupt rows skipped", self.path, self.count)
        return Readings(readings, skipped=self.count, skipped_lines=self.lines)


def read_dexcom_clarity_csv(path: Path | str, tz: str = "UTC") -> Readings:
    """EGV readings of a Dexcom Clarity CSV export, oldest first.

    Clarity timestamps are local time without a zone: `tz` names the zone they were taken in.
    "Low" becomes 39 and "High" 401 (see CLARITY_LOW_SGV). mmol/L exports are converted.
    """
    path = Path(path)
    zone = _zone(tz)
    rows = _rows(path, "Dexcom Clarity")
    header = next((cells for _, cells in rows), [])
    col = {name: i for i, name in enumerate(header)}
    ts_col = next((i for n, i in col.items() if n.startswith("Timestamp")), None)
    glucose_col, mmol = col.get("Glucose Value (mg/dL)"), False
    if glucose_col is None and "Glucose Value (mmol/L)" in col:
        glucose_col, mmol = col["Glucose Value (mmol/L)"], True
    missing = [name for name, i in (("Timestamp (YYYY-MM-DDThh:mm:ss)", ts_col),
                                    ("Event Type", col.get("Event Type")),
                                    ("Glucose Value (mg/dL)", glucose_col)) if i is None]
    if missing:
        raise SourceError(f"{path} is not a Dexcom Clarity export: its header row has no "
                          f"{' or '.join(repr(m) for m in missing)} column.")
    type_col = col["Event Type"]
    rate_name = "Glucose Rate of Change (mmol/L/min)" if mmol else \
        "Glucose Rate of Change (mg/dL/min)"
    rate_col = col.get(rate_name)
    skips, out = _Skips(path), []
    for line, cells in rows:
        if len(cells) <= max(type_col, glucose_col, ts_col) or cells[type_col] != "EGV":
            continue  # metadata (patient, device, alerts), calibrations, events
        try:
            t = datetime.fromisoformat(cells[ts_col]).replace(tzinfo=zone).timestamp()
        except ValueError:
            skips.add(line, f"bad timestamp {cells[ts_col]!r}")
            continue
        raw = cells[glucose_col]
        try:
            if raw.lower() == "low":
                sgv = CLARITY_LOW_SGV
            elif raw.lower() == "high":
                sgv = CLARITY_HIGH_SGV
            else:
                value = _number(raw)
                sgv = units.from_mmoll(value) if mmol else round(value)
                if not units.SGV_MIN_VALID <= sgv <= CLARITY_HIGH_SGV:
                    raise ValueError(f"{raw} is outside the sensor's range")
        except ValueError as exc:
            skips.add(line, f"bad glucose value ({exc})")
            continue
        direction = None
        if rate_col is not None and rate_col < len(cells) and cells[rate_col]:
            try:
                rate = _number(cells[rate_col])
                direction = units.direction(rate * units.MGDL_PER_MMOLL if mmol else rate)
            except ValueError:
                pass  # the rate is optional; a bad one leaves the direction unknown
        out.append(Glucose(t=t, sgv=sgv, direction=direction, source="dexcom-clarity"))
    return skips.result(out)


_LIBRE_TIME = re.compile(r"^(\d{1,4})[-/.](\d{1,2})[-/.](\d{1,4})[ T](\d{1,2}):(\d{2})(?::(\d{2}))?$")


def read_libreview_csv(path: Path | str, tz: str = "UTC", *,
                       day_first: bool | None = None) -> Readings:
    """Historic (record type 0) and scan (1) readings of a LibreView CSV export, oldest first.

    `Device Timestamp` is local time in `tz`; US exports write MM-DD-YYYY and others
    DD-MM-YYYY: `day_first=None` decides from the file's unambiguous dates (a part above
    12 is the day), defaulting to the US order.
    """
    path = Path(path)
    zone = _zone(tz)
    rows = list(_rows(path, "LibreView"))
    header_at = next((k for k, (_, cells) in enumerate(rows[:3])
                      if "Device Timestamp" in cells and "Record Type" in cells), None)
    if header_at is None:
        raise SourceError(f"{path} is not a LibreView export: none of its first three lines "
                          "has the 'Device Timestamp' and 'Record Type' columns.")
    header = rows[header_at][1]
    col = {name: i for i, name in enumerate(header)}
    mmol = "Historic Glucose mg/dL" not in col
    unit = "mmol/L" if mmol else "mg/dL"
    value_cols = {0: col.get(f"Historic Glucose {unit}"), 1: col.get(f"Scan Glucose {unit}")}
    if value_cols[0] is None:
        raise SourceError(f"{path} is not a LibreView export: it has no 'Historic Glucose "
                          "mg/dL' or 'Historic Glucose mmol/L' column.")
    ts_col, type_col = col["Device Timestamp"], col["Record Type"]
    data = rows[header_at + 1:]
    if day_first is None:
        day_first = _libre_day_first(cells[ts_col] for _, cells in data if len(cells) > ts_col)
    skips, out = _Skips(path), []
    for line, cells in data:
        if len(cells) <= max(ts_col, type_col) or not any(cells):
            continue
        if cells[type_col] not in ("0", "1"):
            continue  # notes, insulin, food, strips, sensor starts
        vcol = value_cols[int(cells[type_col])]
        if vcol is None:
            continue
        try:
            t = _libre_time(cells[ts_col], day_first, zone)
        except ValueError:
            skips.add(line, f"bad timestamp {cells[ts_col]!r}")
            continue
        raw = cells[vcol] if vcol < len(cells) else ""
        try:
            value = _number(raw)
            sgv = units.from_mmoll(value) if mmol else round(value)
            if not units.SGV_MIN_VALID <= sgv <= 600:
                raise ValueError(f"{raw} is outside the sensor's range")
        except ValueError as exc:
            skips.add(line, f"bad glucose value ({exc})")
            continue
        out.append(Glucose(t=t, sgv=sgv, source="libreview"))
    return skips.result(out)


def _libre_day_first(stamps: Iterator[str]) -> bool:
    """Whether most unambiguous stamps (one part above 12, the other not) put the day first."""
    day_first = month_first = 0
    for text in stamps:
        m = _LIBRE_TIME.match(text)
        if not m or len(m.group(1)) == 4:
            continue
        a, b = int(m.group(1)), int(m.group(2))
        if 12 < a <= 31 and b <= 12:
            day_first += 1
        elif 12 < b <= 31 and a <= 12:
            month_first += 1
    return day_first > month_first


def _libre_time(text: str, day_first: bool, zone: ZoneInfo) -> float:
    m = _LIBRE_TIME.match(text)
    if not m:
        raise ValueError(text)
    a, b, c, hh, mm = (int(x) for x in m.groups()[:5])
    ss = int(m.group(6) or 0)
    if len(m.group(1)) == 4:
        year, month, day = a, b, c
    elif day_first:
        day, month, year = a, b, c
    else:
        month, day, year = a, b, c
    if year < 100:
        year += 2000
    return datetime(year, month, day, hh, mm, ss, tzinfo=zone).timestamp()
