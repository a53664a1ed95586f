"""Medtronic CareLink CSV exports: sensor glucose as `Glucose` samples, oldest first.

A CareLink export opens with patient and device lines, then one or more sections (the pump,
a separate sensor or meter), each introduced by a divider line (`-------;MiniMed 780G ...`)
and its own header row starting `Index;Date;Time`. Rows with a value in `Sensor Glucose
(mg/dL)` (or mmol/L) are CGM readings; the rest (boluses, basal, alarms, meter readings)
are passed over. Cells are separated by `;` or `,` and mmol/L values may have a decimal
comma. Date and Time are the device's local time; dates are year/month/day, day/month/year
(also day.month.year) or month/day/year, decided from the whole file and the preamble's
Start and End Date as for LibreView (localtime.py). The same
reading listed in two sections is imported once. Facts and sources: docs/importers.md.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NamedTuple

from nightlink.edge.importers.common import (
    BadRows,
    Candidate,
    ImportedReadings,
    Values,
    cells,
    delimiter_of,
    finish,
    name,
    read_text,
    shifted,
    usual_width,
)
from nightlink.edge.importers.localtime import DMY, MDY
from nightlink.edge.importers.span import SpanKeeper
from nightlink.edge.sources.samples import SourceError

CARELINK_MAX_SGV = 400
PREAMBLE_SEARCH_LINES = 40  # the first section's header row comes within these


class CareLinkColumns(NamedTuple):
    date: int
    time: int
    sensor: int | None  # None: a section without sensor glucose (a meter, the pump's events)
    mmol: bool
    new_time: int | None = None  # "New Device Time": set where the pump's clock was set


def carelink_columns(header: list[str]) -> CareLinkColumns | None:
    """The columns of a CareLink section header (`Index;Date;Time;...`), or None."""
    names = [name(c) for c in header]
    if names[:3] != ["index", "date", "time"]:
        return None
    sensor = next((i for i, n in enumerate(names)
                   if n in ("sensor glucose (mg/dl)", "sensor glucose (mmol/l)")), None)
    new_time = names.index("new device time") if "new device time" in names else None
    return CareLinkColumns(1, 2, sensor, sensor is not None and names[sensor].endswith("(mmol/l)"),
                           new_time)


def is_carelink(lines: list[str]) -> bool:
    """Whether a file's first lines hold a CareLink section header."""
    return any(carelink_columns(cells(line, delimiter_of(line))) is not None
               for line in lines[:PREAMBLE_SEARCH_LINES])


def read_carelink_csv(path: Path | str, tz: str = "UTC", *, date_order: str | None = None,
                      device_clocks: bool = True,
                      window: SpanKeeper | None = None) -> ImportedReadings:
    """Sensor glucose readings of a Medtronic CareLink CSV export, oldest first.

    `date_order` ("dmy"/"mdy") decides a file whose day/month dates fit both orders; without
    it such a file is read day/month if its dates are dotted (01.11.2026) or in mmol/L,
    else month/day, and the user is told. The preamble's Start and End Date count as dates
    of the file.
    """
    path = Path(path)
    lines = read_text(path, "Medtronic CareLink").splitlines()
    if not is_carelink(lines):
        raise SourceError(f"{path} is not a Medtronic CareLink export: none of its first "
                          f"{PREAMBLE_SEARCH_LINES} lines is an 'Index;Date;Time' header row.")
    bad, candidates = BadRows(), []
    header: list[str] = []
    col: CareLinkColumns | None = None
    delimiter = ";"
    mmol = None
    section = usual = 0
    sets: list[tuple[int, str, str]] = []  # (line, time before, time after) of each setting
    for k, line in enumerate(lines):
        if not line.strip():
            continue
        own = delimiter_of(line)
        found = carelink_columns(cells(line, own))
        if found is not None:
            delimiter, header, col, section = own, cells(line, own), found, section + 1
            usual = usual_width(_section_rows(lines, k + 1, delimiter), header)
            if found.sensor is not None:
                if mmol is not None and mmol != found.mmol:
                    raise SourceError(f"{path} has sections in mg/dL and in mmol/L; export "
                                      "it again in one unit.")
                mmol = found.mmol
            continue
        row = cells(line, delimiter)
        if col is not None and col.new_time is not None and len(row) > col.new_time and \
                row[col.new_time].strip() and not row[0].startswith("-"):
            sets.append((k + 1, f"{row[col.date]} {row[col.time]}", row[col.new_time].strip()))
        if col is None or col.sensor is None or not row or row[0].startswith("-"):
            continue  # the preamble, a section without sensor glucose, a divider
        if len(row) <= col.sensor or not row[col.sensor]:
            continue  # a pump or meter event, not a sensor reading
        if why := shifted(row, header, col.sensor, usual):
            bad.add(k + 1, why, split=True)
            continue
        candidates.append(Candidate(k + 1, f"{row[col.date]} {row[col.time]}",
                                    sys.intern(row[col.sensor]),
                                    stream=sys.intern(str(section))))
    if mmol is None:
        raise SourceError(f"{path} is a Medtronic CareLink export without a 'Sensor Glucose' "
                          "column: it holds no CGM readings.")
    order, reason = (DMY, "mmol/L exports come from outside the US") if mmol else \
        (MDY, "mg/dL exports are mostly from the US")
    preamble = _preamble_dates(lines)
    del lines  # the file's text is not needed while the candidates are read
    out = finish(path, "Medtronic CareLink", candidates, Values(mmol, CARELINK_MAX_SGV), tz,
                 source="carelink", bad=bad, date_order=date_order, default_order=order,
                 order_reason=reason, extra_stamps=preamble,
                 clock_sets=tuple(sets), device_clocks=device_clocks, window=window)
    if out.pump_clock:  # a pump keeps its clock through summer time until someone sets it
        _, before, after = sets[0]
        more = f", and {len(sets) - 1} more" if len(sets) > 1 else ""
        out.notes.append(
            f"The pump's clock was set in this file (at {before[:16]} to {after[:16]}{more}). "
            "A pump keeps its clock through a change of summer time until someone sets it, so "
            f"readings are placed by the pump's own clock: as right in {tz} after the latest "
            "setting, and off before each setting by as much as it moved the clock.")
    return out


def _section_rows(lines: list[str], start: int, delimiter: str):
    """The cells of a section's rows, up to the next divider line."""
    for line in lines[start:]:
        row = cells(line, delimiter)
        if row and row[0].startswith("-"):
            return
        yield row


def _preamble_dates(lines: list[str]) -> tuple[tuple[int, str], ...]:
    """(line, date) of the Start Date and End Date under the patient line, if it has them:
    they tell the date order like the readings do."""
    for k, line in enumerate(lines[:PREAMBLE_SEARCH_LINES]):
        delimiter = delimiter_of(line)
        names = [name(c) for c in cells(line, delimiter)]
        if "start date" in names and "end date" in names:
            values = cells(lines[k + 1], delimiter) if k + 1 < len(lines) else []
            return tuple((k + 2, values[i]) for i in (names.index("start date"),
                                                       names.index("end date"))
                         if i < len(values) and values[i])
    return ()
