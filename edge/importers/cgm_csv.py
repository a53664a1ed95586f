"""CGM export files: Dexcom Clarity and LibreView CSVs as `Glucose` samples, oldest first.

Medtronic CareLink is in `carelink.py`, Nightscout JSON in `nightscout_json.py`; what the
readers share (rows, numbers, skipped rows) in `common.py`, local times in `localtime.py`.
The layouts and the column names per language are described, with where each fact was
found, in docs/importers.md. sgv < 39 is never glucose; corrupt rows are skipped and counted.
"""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path
from typing import NamedTuple

from nightlink.edge.importers.common import (
    UNIT,
    BadRows,
    Candidate,
    ImportedReadings,
    Values,
    cells,
    delimiter_of,
    finish,
    name,
    read_text,
    rows_below,
    shifted,
)
from nightlink.edge.importers.localtime import DMY, MDY, split
from nightlink.edge.importers.span import SpanKeeper
from nightlink.edge.sources.samples import SourceError
from nightlink.shared import units

# Clarity writes "Low" below its 40 mg/dL reading range and "High" above 400. Low is stored
# as 39, which Nightscout and its clients show as LOW; High as 401, one above the range,
# which counts in the >250 band and reads as "over 400", never as a measured value.
CLARITY_LOW_SGV = units.SGV_MIN_VALID
CLARITY_HIGH_SGV = 401
LIBRE_MAX_SGV = 600
# LibreView writes "LO" below the Libre's 40 mg/dL range and "HI" above 500: stored like
# Clarity's Low and High, 39 and one above the range.
LIBRE_LOW_SGV = units.SGV_MIN_VALID
LIBRE_HIGH_SGV = 501
HEADER_SEARCH_LINES = 12  # a header row further down than this is not one of these exports


def header_row(lines: list[str], columns, limit: int = HEADER_SEARCH_LINES):
    """(index, delimiter, header cells, columns) of the first of `limit` lines whose cells
    `columns` recognises, or None."""
    for k, line in enumerate(lines[:limit]):
        delimiter = delimiter_of(line)
        header = cells(line, delimiter)
        found = columns(header)
        if found is not None:
            return k, delimiter, header, found
    return None


# -- Dexcom Clarity -------------------------------------------------------------------------------

_CLARITY_STAMP = re.compile(r"\(\w{4}-\w{2}-\w{2}t\w{2}:\w{2}:\w{2}\)$")


class ClarityColumns(NamedTuple):
    timestamp: int
    event_type: int
    glucose: int
    rate: int | None
    device: int | None
    mmol: bool
    transmitter_time: int | None = None  # the transmitter's own seconds, and its id
    transmitter_id: int | None = None


def clarity_columns(header: list[str]) -> ClarityColumns | None:
    """The columns of a Clarity header row, or None if the row is not one. English names
    first; a translated header is read by the positions Clarity writes its columns in."""
    names = [name(c) for c in header]
    ts = next((i for i, n in enumerate(names)
               if _CLARITY_STAMP.search(n) or n.startswith("timestamp")), None)
    if ts is None:
        return None
    glucose = next((i for i, n in enumerate(names)
                    if n in ("glucose value (mg/dl)", "glucose value (mmol/l)")), None)
    if glucose is None and len(names) > 7 and names[7].endswith(("(mg/dl)", "(mmol/l)")):
        glucose = 7
    event = names.index("event type") if "event type" in names else 2 if ts == 1 else None
    if glucose is None or event is None:
        return None
    rate = next((i for i, n in enumerate(names) if n.endswith("/min)")), None)
    device = names.index("source device id") if "source device id" in names else None
    tx_time, tx_id = (names.index(n) if n in names else None
                      for n in ("transmitter time (long integer)", "transmitter id"))
    return ClarityColumns(ts, event, glucose, rate, device, names[glucose].endswith("(mmol/l)"),
                          tx_time, tx_id)


def read_dexcom_clarity_csv(path: Path | str, tz: str = "UTC", *,
                            device_clocks: bool = True,
                            window: SpanKeeper | None = None) -> ImportedReadings:
    """EGV readings of a Dexcom Clarity CSV export, oldest first.

    Clarity timestamps are local time without a zone: `tz` names the zone they were taken in.
    "Low" becomes 39 and "High" 401 (see CLARITY_LOW_SGV). mmol/L exports are converted.
    The patient, device and alert rows before the readings, calibrations and events are not
    readings and are passed over. Readings shown on a moved clock are placed by their
    transmitter's (common.by_sensor_clock) unless `device_clocks` is False. `window`: an
    import's (common.finish).
    """
    path = Path(path)
    lines = read_text(path, "Dexcom Clarity").splitlines()
    found = header_row(lines, clarity_columns)
    if found is None:
        raise SourceError(f"{path} is not a Dexcom Clarity export: no header row has the "
                          "'Timestamp (YYYY-MM-DDThh:mm:ss)', 'Event Type' and 'Glucose Value "
                          "(mg/dL)' columns.")
    at, delimiter, header, col = found
    bad, candidates = BadRows(), []
    usual, rows = rows_below(lines, at, delimiter, header)
    for k, row in rows:
        if len(row) <= max(col.event_type, col.glucose, col.timestamp) or \
                row[col.event_type].upper() != "EGV":
            continue  # metadata (patient, device, alerts), calibrations, events
        if why := shifted(row, header, col.glucose, usual):
            bad.add(k + 1, why, split=True)
            continue
        device = sys.intern(row[col.device]) if col.device is not None and \
            col.device < len(row) else ""  # one string for the file's few devices
        whose, tick = _transmitter_tick(row, col, device)
        # a glucose or rate cell holds one of a few hundred values: one string each
        candidates.append(Candidate(
            k + 1, row[col.timestamp], sys.intern(row[col.glucose]), stream=device,
            rate=sys.intern(row[col.rate]) if col.rate is not None and col.rate < len(row)
            else "", whose=whose, tick=tick))
    del lines, rows  # the file's text is not needed while the candidates are read
    values = Values(col.mmol, CLARITY_HIGH_SGV, {"low": CLARITY_LOW_SGV, "high": CLARITY_HIGH_SGV})
    return finish(path, "Dexcom Clarity", candidates, values, tz, source="dexcom-clarity",
                  bad=bad, device_clocks=device_clocks, window=window)


def _transmitter_tick(row: list[str], col: ClarityColumns,
                      device: str) -> tuple[str, float | None]:
    """(whose, seconds) of a reading on its transmitter's own clock, per transmitter and the
    device that showed it (a phone and a receiver keep their own clocks), or ("", None) where
    the row names no transmitter (a G7's rows) or its seconds do not read."""
    tx_time, tx_id = col.transmitter_time, col.transmitter_id
    if tx_time is None or tx_id is None or len(row) <= max(tx_time, tx_id) or not row[tx_id]:
        return "", None
    try:
        tick = float(row[tx_time])
    except ValueError:
        return "", None
    return (sys.intern(f"{row[tx_id]}|{device}"), tick) if math.isfinite(tick) else ("", None)


# -- LibreView ------------------------------------------------------------------------------------

# Column names of LibreView exports per language, compared without case (docs/importers.md).
LIBRE_TIMESTAMP = {
    "device timestamp": "English",
    "gerätezeitstempel": "German",
    "horodatage de l'appareil": "French",
    "timestamp del dispositivo": "Italian",
    "sello de tiempo del dispositivo": "Spanish",
    "tijdstempel apparaat": "Dutch",
}
LIBRE_RECORD_TYPE = ("record type", "aufzeichnungstyp", "type d'enregistrement",
                     "tipo di registrazione", "tipo de registro", "gegevenstype")
LIBRE_HISTORIC = ("historic glucose", "glukosewert-verlauf", "historique de la glycémie",
                  "storico del glucosio", "historial de glucosa", "historische glucose")
LIBRE_SCAN = ("scan glucose", "glukose-scan", "numérisation de la glycémie",
              "scansione del glucosio", "escaneo de glucosa")
HISTORIC, SCAN = "0", "1"  # LibreView record types: 15-minute history, a scan
_TWELVE_HOUR = re.compile(r"\d\s*[AaPp]\.?\s*[Mm]\.?$")


class LibreColumns(NamedTuple):
    timestamp: int
    record_type: int
    historic: int
    scan: int | None
    serial: int
    mmol: bool
    language: str | None  # None: names in a language not listed here, read by position


def _libre_name(cell: str) -> str:
    return name(cell).replace("’", "'")


def libre_columns(header: list[str]) -> LibreColumns | None:
    """The columns of a LibreView header row, or None if the row is not one.

    Every language's export has the same columns in the same order (Device, Serial Number,
    Device Timestamp, Record Type, Historic Glucose, Scan Glucose, ...): names are looked up
    first, and a header in a language not listed here is read by those positions when its
    fifth and sixth columns are glucose in mg/dL or mmol/L.
    """
    names = [_libre_name(c) for c in header]
    ts = next((i for i, n in enumerate(names) if n in LIBRE_TIMESTAMP), None)
    by_position = len(names) >= 6 and all(
        UNIT.search(names[i]) and not names[i].endswith(")") for i in (4, 5))
    if ts is None and not by_position:
        return None

    def find(prefixes: tuple[str, ...], position: int, glucose: bool) -> int | None:
        for i, n in enumerate(names):
            if n.startswith(prefixes) and (not glucose or UNIT.search(n)):
                return i
        return position if by_position else None

    record_type = find(LIBRE_RECORD_TYPE, 3, False)
    historic = find(LIBRE_HISTORIC, 4, True)
    if record_type is None or historic is None:
        return None
    return LibreColumns(ts if ts is not None else 2, record_type, historic,
                        find(LIBRE_SCAN, 5, True), 1, "mmol" in names[historic],
                        LIBRE_TIMESTAMP.get(names[ts]) if ts is not None else None)


def read_libreview_csv(path: Path | str, tz: str = "UTC", *, day_first: bool | None = None,
                       date_order: str | None = None, scans: bool = True,
                       window: SpanKeeper | None = None) -> ImportedReadings:
    """Historic (record type 0) and scan (1) readings of a LibreView CSV export, oldest first
    (`scans=False`: the 15-minute history only, as a model on a sensor's own cadence wants).

    The file starts with a title line ("Glucose Data,Generated on,...") and then the column
    header. `Device Timestamp` is local time in `tz`, written day-month-year, month-day-year
    (US, often with a 12-hour clock) or year-month-day: the order is read from the whole file
    (see localtime.py); `date_order` ("dmy"/"mdy", or `day_first`) decides a file whose
    dates fit both, otherwise its language does (US order for English). Strip (fingerstick)
    glucose, notes, insulin and food rows are not CGM readings and are passed over. "LO"
    becomes 39 and "HI" 501 (see LIBRE_LOW_SGV).
    """
    path = Path(path)
    if day_first is not None and date_order is None:
        date_order = DMY if day_first else MDY
    lines = read_text(path, "LibreView").splitlines()
    found = header_row(lines, libre_columns)
    if found is None:
        raise SourceError(f"{path} is not a LibreView export: none of its first "
                          f"{HEADER_SEARCH_LINES} lines has the 'Device Timestamp', 'Record "
                          "Type' and 'Historic Glucose' columns.")
    at, delimiter, header, col = found
    bad, candidates = BadRows(), []
    usual, rows = rows_below(lines, at, delimiter, header)
    for k, row in rows:
        if len(row) <= max(col.timestamp, col.record_type):
            continue
        kind = row[col.record_type]
        value_col = col.historic if kind == HISTORIC else col.scan if kind == SCAN and scans else None
        if value_col is None:
            continue  # strips, notes, insulin, food, sensor starts
        if why := shifted(row, header, value_col, usual):
            bad.add(k + 1, why, split=True)
            continue
        candidates.append(Candidate(k + 1, row[col.timestamp],
                                    sys.intern(row[value_col]) if value_col < len(row) else "",
                                    stream=sys.intern(f"{row[col.serial]}/{kind}")))
    title = cells(lines[at - 1], delimiter) if at else []
    generated = tuple((at, c.removesuffix("UTC").strip()) for c in title
                      if split(c.removesuffix("UTC").strip()))
    del lines, rows  # the file's text is not needed while the candidates are read
    order, reason = _libre_default_order(col, candidates)
    values = Values(col.mmol, LIBRE_MAX_SGV, {"lo": LIBRE_LOW_SGV, "hi": LIBRE_HIGH_SGV})
    return finish(path, "LibreView", candidates, values, tz,
                  source="libreview", bad=bad, date_order=date_order, default_order=order,
                  order_reason=reason, extra_stamps=generated, window=window)


def _libre_default_order(col: LibreColumns, rows: list[Candidate]) -> tuple[str, str]:
    """The date order of a file whose dates fit both, from its language and clock."""
    if col.language is None:
        return DMY, "the column names are in a language not known here"
    if col.language != "English":
        return DMY, f"the column names are {col.language}"
    if any(_TWELVE_HOUR.search(c.stamp) for c in rows[:50]):
        return MDY, "English column names with a 12-hour clock, the US style"
    if col.mmol:  # LibreView in the US shows mg/dL: English in mmol/L is the UK, Sweden, ...
        return DMY, "English column names in mmol/L, which the US does not use"
    return MDY, "English column names, the US style"
