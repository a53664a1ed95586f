"""Real CGM recordings as the glucose model sees them: one file per person, a CSV
with columns `timestamp` and `glucose_value_mg_dl` (or `glucose_value_mmol_l`, or the names in
TIME_NAMES and GLUCOSE_NAMES, a date and a time of day in two columns), in any order
(local clock time, gaps as missing rows) or a CGM export the edge imports (Dexcom Clarity, LibreView, Medtronic
CareLink, Nightscout JSON), put on the model's 5-minute grid whatever the sensor's cadence.

- 5-minute sensors (Dexcom, Guardian): each reading goes to its nearest slot.
- 15-minute sensors (Libre 2): readings go to their slots; the model's inputs between two
  readings at most 20 minutes apart are interpolated on a straight line, and predictions are
  made only where a reading arrived (so nothing is taken from the future).
- 1-minute sensors: the readings of each 5-minute slot are averaged.

Labels follow the 2023 consensus: a low is an episode < 70 mg/dL lasting >= 15 minutes, its
length being readings x sampling interval; readings are not joined across a gap of more than
20 minutes. On the grid each reading holds until the next one (or for one sampling interval
before a gap), so a single 15-minute reading below 70 is a 15-minute low and a 5-minute one is
not.

The shared BrisT1D-Open folder has this layout (see edge/models/glucose_risk.md for credit).
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nightlink.edge.features.glucose_risk import LOW_MGDL, SLOT_MIN, cgm_grid, low_events

__all__ = ["LOW_MGDL", "SLOT_MIN", "Person", "day_marks", "events", "fingerprint", "load_folder",
           "load_person", "trained_on",
           "read_csv", "to_grid"]
from nightlink.errors import NightlinkError
from nightlink.shared import units
from nightlink.shared.units import MGDL_PER_MMOLL

NIGHT_START_MIN, NIGHT_END_MIN = 22 * 60, 7 * 60
NIGHT_SLOTS = (24 * 60 - NIGHT_START_MIN + NIGHT_END_MIN) // SLOT_MIN
MIN_COVERAGE = 0.7  # a night or day counts when this share of its slots has glucose
DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "cgm-bris-t1d-open"


@dataclass
class Person:
    name: str
    start_min: int  # minutes since 1970 (local clock) of slot 0
    interval_min: int  # the sensor's sampling interval: the median step, whole minutes
    x: np.ndarray  # float32 model input per slot: readings, interpolated over short gaps, 0 else
    observed: np.ndarray  # bool: a reading arrived in this slot (predictions only here)
    held: np.ndarray  # float32 glucose per slot for labels: each reading held, NaN in gaps
    carbs: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    # slots of carb treatments (a `carbs` column > 0), empty when the CSV has none
    notes: list[str] = field(default_factory=list)  # what reading the file assumed or skipped

    @property
    def minute_of_day(self) -> np.ndarray:
        return (self.start_min + SLOT_MIN * np.arange(self.x.size)) % 1440

    def night_id(self) -> np.ndarray:
        """Per slot: the number of the night (22:00-07:00) it lies in, or -1 by day."""
        t = self.start_min + SLOT_MIN * np.arange(self.x.size)
        mod = t % 1440
        inside = (mod >= NIGHT_START_MIN) | (mod < NIGHT_END_MIN)
        nid = (t + (1440 - NIGHT_START_MIN)) // 1440
        return np.where(inside, nid, -1)


# mg/dL values this low are not possible as a day's CGM: the column holds mmol/L (3.9-10 is
# the target range there), so the file is refused rather than read as a month of lows.
MMOLL_LOOKALIKE_MEDIAN = 30.0


def _glucose_unit(header: list[str]) -> float | None:
    """mg/dL per unit of the second column: 1, or MGDL_PER_MMOLL when its header names mmol/L
    (`glucose_value_mmol_l`, as UK and European exports give it); None when its name gives
    no unit (`glucose`, `sgv`): the values tell."""
    name = header[1] if len(header) > 1 else ""
    if "mmol" in name:
        return MGDL_PER_MMOLL
    return 1.0 if "mg" in name else None


def _header(path: Path) -> list[str]:
    """The CSV's column names, lower case, quotes removed (a UTF-8 file, with or without a
    byte-order mark), timestamp and glucose first when the file has them (in any order)."""
    delimiter, order, header = _layout(path)
    return [header[k] for k in order] if order else header


DELIMITERS = (",", ";", "\t")  # a European spreadsheet writes ";" (and decimal commas)
GLUCOSE_COLUMNS = ("glucose_value_mg_dl", "glucose_value_mmol_l")
# Other names data sets give the two columns (HUPA-UCM's `time;glucose`, ...), in the order
# they are preferred; a glucose column whose name gives no unit is told by its values.
TIME_NAMES = ("timestamp", "datetime", "date_time", "date time", "time_stamp", "time", "ts")
GLUCOSE_NAMES = ("glucose_mg_dl", "glucose_mgdl", "glucose (mg/dl)", "glucose_mmol_l",
                 "glucose (mmol/l)", "glucose", "glucose_level", "glucose level", "sgv", "cbg",
                 "cgm_glucose", "sensor_glucose", "sensor glucose", "sensor glucose (mg/dl)",
                 "sensor glucose (mmol/l)", "cgm", "bg")
# A column saying what kind of reading a row is (D1NAMO's `type`: cgm or manual; Nightscout's
# sgv or mbg; Tidepool's cbg or smbg; LibreView's record type 0 or 2). When it names sensor
# readings, only those rows are read: a fingerstick or calibration row beside them is another
# instrument's value, which on the 5-minute grid would replace the sensor's reading.
KIND_NAMES = ("type", "kind", "source", "event type", "event_type", "record type",
              "record_type", "glucose_type", "glucose type", "reading type", "reading_type",
              "measurement type", "measurement_type")
SENSOR_KINDS = ("cgm", "cgms", "sgv", "cbg", "egv", "sensor", "sensor glucose", "continuous",
                "historic", "historic glucose")
RECORD_TYPE_SENSOR = "0"  # LibreView's record type of the sensor's own (historic) readings
RECORD_TYPE_OTHERS = ("2",)  # its strip (fingerstick) glucose
# Not a sensor's reading, whatever else the column holds (`bg` is not among them: xDrip calls
# the sensor's readings BgReadings).
METER_KINDS = ("manual", "mbg", "smbg", "meter", "bg reading", "strip", "strip glucose", "cal",
               "calibration", "fingerstick", "finger stick", "finger-stick", "finger",
               "fingerprick", "finger prick", "capillary")


def _head_lines(path: Path) -> list[bytes]:
    """The lines of the file's first 64 KB as bytes, from the header line on (an Excel `sep=`
    line and a UTF-8 byte-order mark left out). UTF-16 (a byte-order mark, or zero bytes) is
    not read here: a UnicodeError (OSError for an unreadable file)."""
    with open(path, "rb") as fh:
        raw = fh.read(65536)
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" in raw[:512]:
        raise UnicodeError("UTF-16")
    lines = raw.removeprefix(b"\xef\xbb\xbf").split(b"\n")
    if lines and lines[0].strip().lower().startswith(b"sep="):
        lines = lines[1:]
    return lines


def _first_line(path: Path) -> str:
    """The header line (_head_lines) in UTF-8, or in Windows-1252 when the file's first bytes
    are not UTF-8 (a Windows spreadsheet's µ or é)."""
    lines = _head_lines(path)
    head = lines[0] if lines else b""
    try:
        return head.decode("utf-8")
    except UnicodeDecodeError:
        return head.decode("cp1252", errors="replace")


def _layout(path: Path) -> tuple[str, list[int] | None, list[str]]:
    """(delimiter, the columns' order with timestamp and glucose first or None when the file
    names no such columns, the column names) of a CSV; an Excel `sep=` first line is passed
    over."""
    try:
        first = _first_line(path)
    except (OSError, UnicodeError) as exc:
        raise NightlinkError(f"Cannot read {path}: {exc}.") from None
    best = (",", None, [h.strip().lower() for h in next(csv.reader([first]), [])])
    for delimiter in DELIMITERS:
        header = [h.strip().lower() for h in next(csv.reader([first], delimiter=delimiter), [])]
        ts = next(([k for k, h in enumerate(header) if h == name] for name in TIME_NAMES
                   if name in header), [])
        gl = [k for k, h in enumerate(header) if h in GLUCOSE_COLUMNS] or \
            [k for k, h in enumerate(header) if h.startswith("glucose_value")] or \
            next(([header.index(name)] for name in GLUCOSE_NAMES if name in header), [])
        if len(ts) == 1 and gl:  # (of several glucose columns, the first, in mg/dL or mmol/L)
            gl = gl[:1]
            # `cgm` beside `bg`: the sensor's readings beside a meter's (or simglucose's
            # `BG`, the true glucose), unless `cgm` holds no glucose (a flag, a device's name)
            if header[gl[0]] == "cgm" and "bg" in header and not _glucose_like(
                    path, delimiter, gl[0]):
                gl = [header.index("bg")]
            rest = [k for k in range(len(header)) if k not in (ts[0], gl[0])]
            return delimiter, [ts[0], gl[0], *rest], header
    return best


def _glucose_like(path: Path, delimiter: str, col: int, rows: int = 200) -> bool:
    """Whether a column's first cells (up to `rows`) are glucose: numbers, mostly, and not
    only 0 and 1."""
    lines = [line.decode("utf-8", errors="replace").rstrip("\r")
             for line in _head_lines(path)[1:rows + 1]]
    cells = [row[col].strip() for row in csv.reader(lines, delimiter=delimiter)
             if col < len(row) and row[col].strip()]
    numbers = []
    for cell in cells:
        try:
            numbers.append(float(cell.replace(",", ".") if delimiter != "," else cell))
        except ValueError:
            pass
    return len(numbers) * 2 >= max(len(cells), 1) and any(v not in (0.0, 1.0) for v in numbers)


# Cells that stand for a reading outside the sensor's range, as exports write them.
LOW_CELLS = ("low", "lo")  # below the sensor's range: read as 39 mg/dL
HIGH_CELLS = ("high", "hi")  # above it: read as 400 mg/dL
MISSING_CELLS = ("", "na", "n/a", "nan", "null", "none", "-")
SENSOR_MIN_MGDL = float(units.SGV_MIN_VALID)  # under this: a sensor's error code, not glucose
PLAUSIBLE_YEARS = (1990, 2100)  # a row dated outside is a stray, not a reading
_LOW_MARK, _HIGH_MARK = 1e12, 2e12  # a Low or High cell until the file's unit is known


@dataclass
class _Rows:
    """What reading a plain CSV kept and skipped, for the notes."""
    minutes: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    carbs: list[int] = field(default_factory=list)
    skipped: int = 0
    first_bad: str = ""
    low_high: int = 0
    error_codes: int = 0
    offsets: int = 0
    not_sensor: str = ""  # the rows a kind column left out, said in the notes

    def skip(self, row: list[str]) -> None:
        self.skipped += 1
        self.first_bad = self.first_bad or ",".join(row)[:60]


def _iso_time(text: str):
    """The datetime of an ISO timestamp, `Z` read as UTC; ValueError when it is none."""
    from datetime import datetime

    return datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)


def _minute(cell: str, zone, rows: _Rows, order: str | None = None) -> int | None:
    """Minutes since 1970 on the person's clock of an ISO timestamp (`2024-03-01 14:05`,
    `T`, seconds and fractions allowed), or, with `order` ("dmy"/"mdy"), of one a spreadsheet
    wrote (`01/06/2023 00:06`, `6/1/2023 12:06 AM`, `01.06.2023 00:06`); None when the cell is
    no such date. A time with an offset (`Z`, `+01:00`) is put on the clock of `zone` when one
    is given, else read as written."""
    from datetime import datetime

    from nightlink.edge.importers.localtime import DateStyle, split

    text = cell.strip()
    if text.isdecimal():
        raise ValueError("numbers, not dates, in the timestamp column (write dates such as "
                         "2024-03-01 14:05 on the person's clock)")
    try:
        when = _iso_time(text)
    except ValueError:
        stamp = split(text) if order is not None else None
        if stamp is None:
            return None
        try:
            when = DateStyle.naive(stamp, order)
        except ValueError:
            return None
    if when.tzinfo is not None:
        rows.offsets += 1
        when = (when.astimezone(zone) if zone is not None else when).replace(tzinfo=None)
    if not PLAUSIBLE_YEARS[0] <= when.year < PLAUSIBLE_YEARS[1]:
        return None
    return int((when - datetime(1970, 1, 1)).total_seconds() // 60)


def _reading(cell: str, rows: _Rows) -> float | None:
    """A glucose cell in the file's unit; None for an empty or unreadable one."""
    text = cell.strip().lower()
    if text in LOW_CELLS or text in HIGH_CELLS:
        rows.low_high += 1
        return _LOW_MARK if text in LOW_CELLS else _HIGH_MARK  # mg/dL once the unit is known
    if text in MISSING_CELLS:
        return np.nan
    try:
        value = float(text)
    except ValueError:
        return None
    return value if np.isfinite(value) else np.nan


def _spreadsheet_order(path: Path, table: list[list[str]], date_order: str | None,
                       notes: list[str] | None) -> str | None:
    """Whether a CSV's times are day-month or month-day ("dmy"/"mdy") when a spreadsheet wrote
    them so (`01/06/2023 00:06`), decided from the whole file as the edge's importers decide
    (a number above 12 shows which is the day; dotted dates are day-month; `date_order`
    settles a file that fits both, else day-month, said in `notes`); None when its times are
    ISO or no dates at all."""
    from nightlink.edge.importers.localtime import DMY, DateStyle
    from nightlink.edge.sources.samples import SourceError

    first = next((row[0].strip() for row in table if row and row[0].strip()), "")
    try:
        _iso_time(first)
        return None
    except ValueError:
        pass
    style = DateStyle(path)
    for line, row in enumerate(table, start=2):
        if row:
            style.see(row[0], line)
    if not style.two_number_dates:
        return None
    try:
        order, note = style.decide(date_order, DMY, "as most of the world writes them")
    except SourceError as exc:
        raise NightlinkError(str(exc).replace(str(path), path.name)) from None
    if note and notes is not None:
        notes.append(note)
    return order


def _read_rows(path: Path, header: list[str], zone, date_order: str | None = None,
               notes: list[str] | None = None) -> _Rows:
    carb_col = next((i for i, h in enumerate(header) if h.startswith("carb")), None)
    delimiter, order, _names = _layout(path)
    try:
        with open(path, encoding="utf-8-sig", errors="replace", newline="") as fh:
            reader = csv.reader(fh, delimiter=delimiter)
            first = next(reader, None)
            if first and first[0].strip().lower().startswith("sep="):
                next(reader, None)
            table = [row for row in reader if any(c.strip() for c in row)]
    except OSError as exc:
        raise NightlinkError(f"Cannot read {path}: {exc}.") from None
    except csv.Error as exc:  # a quote opened and never closed: the rest of the file in one cell
        raise NightlinkError(f"{path.name} cannot be read as CSV ({exc}; a quote left "
                             "open?).") from None
    if order is not None and order[:2] != [0, 1]:  # timestamp and glucose first
        table = [[row[k] if k < len(row) else "" for k in order] for row in table]
    if header and header[0] == "time" and "date" in header:  # a date and a time of day
        at = header.index("date")
        table = [[f"{row[at].strip()} {row[0].strip()}" if at < len(row) else row[0], *row[1:]]
                 for row in table]
    if delimiter != ",":  # a decimal comma (5,6 mmol/L; 12,5 g) where "," separates nothing
        carb_col = next((i for i, h in enumerate(header) if h.startswith("carb")), None)
        for row in table:
            for k in (1, carb_col):
                if k is not None and len(row) > k:
                    row[k] = row[k].replace(",", ".")
    table, not_sensor = _sensor_rows(path, header, table, carb_col)
    fast = _plain_rows(table, carb_col)
    if fast is not None:
        fast.not_sensor = not_sensor
        return fast
    rows = _Rows(not_sensor=not_sensor)
    order = _spreadsheet_order(path, table, date_order, notes)
    try:
        for row in table:
            t = _minute(row[0], zone, rows, order)
            g = _reading(row[1], rows) if len(row) > 1 and t is not None else None
            if t is None or g is None:
                rows.skip(row)
                continue
            if carb_col is not None and len(row) > carb_col and _grams(row[carb_col]) > 0:
                rows.carbs.append(t)
            if not np.isnan(g):
                rows.minutes.append(t)
                rows.values.append(g)
    except ValueError as exc:
        raise NightlinkError(f"{path.name} has {exc}.") from None
    return rows


def _sensor_rows(path: Path, header: list[str], table: list[list[str]],
                 carb_col: int | None) -> tuple[list[list[str]], str]:
    """The rows that are the sensor's readings, and what was left out (for the notes), by a
    column that says what kind of reading each row is (the first such column whose values
    are kinds known here; a column of other values, a device's name, is none): when it names
    sensor readings, the rows it names otherwise are not read; when it does not, those it
    names as a meter's are not. A left-out row's carbs are kept. A file whose every row is
    a meter's holds no CGM: refused."""
    for col in (k for k, h in enumerate(header) if k > 1 and h in KIND_NAMES):
        record = header[col].startswith("record")
        sensor = SENSOR_KINDS + ((RECORD_TYPE_SENSOR,) if record else ())
        meter = METER_KINDS + (RECORD_TYPE_OTHERS if record else ())
        kinds = [_kind(row[col]) if col < len(row) else "" for row in table]
        found = set(kinds)
        if found & set(sensor + meter):
            break
    else:
        return table, ""
    if found & set(sensor):  # the sensor's rows named: any other named row is not one
        drop = [kind not in sensor and kind != "" for kind in kinds]
    else:
        drop = [kind in meter for kind in kinds]
        if all(drop):
            raise NightlinkError(f"{path.name} holds no CGM readings: its {header[col]} column "
                                 f"says {', '.join(sorted(found))} for every row (a meter's "
                                 "fingersticks, not a sensor's).")
    kept, left = [], {}
    for row, kind, out in zip(table, kinds, drop, strict=True):
        if not out:
            kept.append(row)
            continue
        left[kind] = left.get(kind, 0) + 1
        if carb_col is not None and carb_col < len(row) and _grams(row[carb_col]) > 0:
            kept.append([row[0], "", *row[2:]])  # its carbs, without its glucose
    said = ", ".join(f"{n} {k}" for k, n in sorted(left.items()))
    return kept, (f"{sum(left.values())} rows left out by their {header[col]} ({said}): not "
                  "the sensor's readings." if left else "")


def _kind(cell: str) -> str:
    """A kind cell as compared: lower case, trimmed, a whole number written `0.0` as `0`."""
    kind = cell.strip().lower()
    return kind[:-2] if kind.endswith(".0") and kind[:-2].isdigit() else kind


def _grams(cell: str) -> float:
    """A carbs cell in grams; 0 for an empty cell or one that is not a number."""
    try:
        value = float(cell.strip())
    except ValueError:
        return 0.0
    return value if math.isfinite(value) else 0.0


_OFFSET = re.compile(r"([Zz]|[+-]\d\d(:?\d\d)?)$")  # Z, +01, +0100, +01:00


def _plain_rows(table: list[list[str]], carb_col: int | None) -> _Rows | None:
    """The rows read at once when every one is a plain local time and a number (or empty);
    None when any is not, for the row-by-row reading that says what it skipped."""
    if not table or any(len(row) < 2 for row in table):
        return None
    stamps = [row[0].strip() for row in table]
    if any(s.isdigit() or _OFFSET.search(s[10:]) for s in stamps):  # past the date's dashes
        return None
    try:
        t = np.array(stamps, dtype="datetime64[m]")
        g = _numbers([row[1] for row in table])
        carbs = (_numbers([row[carb_col] if len(row) > carb_col else "" for row in table])
                 if carb_col is not None else np.zeros(len(table)))
    except ValueError:
        return None
    years = t.astype("datetime64[Y]").astype(np.int64) + 1970
    if np.isnat(t).any() or (years < PLAUSIBLE_YEARS[0]).any() or (years >= PLAUSIBLE_YEARS[1]).any():
        return None
    minutes = t.astype(np.int64)
    keep = np.isfinite(g)
    return _Rows(minutes[keep].tolist(), g[keep].tolist(),
                 minutes[np.nan_to_num(carbs) > 0].tolist())


def _numbers(cells: list[str]) -> np.ndarray:
    """Cells as floats, empty ones NaN; ValueError on any other text."""
    text = np.char.strip(np.array(cells, dtype=str))
    text[text == ""] = "nan"
    values = text.astype(np.float64)
    values[~np.isfinite(values)] = np.nan
    return values


def read_csv(path: Path, tz: str | None = None, notes: list[str] | None = None,
             date_order: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(minutes since 1970, mg/dL) sorted, one reading per minute, and the minutes of carb
    treatments (rows whose `carbs...` column is > 0). The glucose column is mg/dL, or mmol/L
    when its header says so. Times are ISO (`2024-03-01 14:05`) or as a spreadsheet saves them
    (`01/03/2024 14:05`, `3/1/2024 2:05 PM`: day-month or month-day decided from the whole file,
    `date_order` for a file that fits both). Rows that are not a reading are skipped and counted in `notes`:
    a missing or unreadable time or value, a date outside 1990-2099, a sensor's error code
    (under 39 mg/dL); `Low` and `High` cells are read as 39 and 400 mg/dL."""
    from zoneinfo import ZoneInfo

    header = _header(path)
    factor = _glucose_unit(header)
    rows = _read_rows(path, header, ZoneInfo(tz) if tz else None, date_order, notes)
    if notes is not None and {"cgm", "bg"} <= set(header):
        notes.append(f"{path.name}: its {header[1]} column read as the glucose, not its "
                     f"{'bg' if header[1] == 'cgm' else 'cgm'} column"
                     f"{'' if header[1] == 'cgm' else ', which holds no glucose'}.")
    if not rows.minutes and rows.skipped:
        raise NightlinkError(f"{path.name} needs columns timestamp,glucose_value_mg_dl (or "
                             f"glucose_value_mmol_l) with dates such as 2024-03-01 14:05; no row "
                             f"could be read (first: {rows.first_bad!r}).")
    t = np.array(rows.minutes, dtype=np.int64)
    g = np.array(rows.values, dtype=np.float64)
    marked = (g == _LOW_MARK) | (g == _HIGH_MARK)
    valid = (g > 0) & ~marked
    median = float(np.median(g[valid])) if valid.any() else None
    if factor is None:  # a column named `glucose` or `sgv`: its values tell the unit
        factor = MGDL_PER_MMOLL if median is not None and median < MMOLL_LOOKALIKE_MEDIAN else 1.0
        if factor != 1.0 and notes is not None:
            notes.append(f"{path.name}: its {header[1]} column read as mmol/L (median "
                         f"{median:.1f}).")
    elif factor == 1.0 and median is not None and median < MMOLL_LOOKALIKE_MEDIAN:
        raise NightlinkError(f"{path.name} has glucose values that look like mmol/L (median "
                             f"{median:.1f}); name the column glucose_value_mmol_l or give mg/dL.")
    elif factor != 1.0 and median is not None and median >= MMOLL_LOOKALIKE_MEDIAN:
        raise NightlinkError(f"{path.name} has glucose values that look like mg/dL (median "
                             f"{median:.0f}) under a mmol/L header; name the column "
                             "glucose_value_mg_dl or give mmol/L.")
    mgdl = np.where(g == _LOW_MARK, SENSOR_MIN_MGDL, np.where(g == _HIGH_MARK, 400.0, g * factor))
    # Error codes are small whole numbers in mg/dL files; in a mmol/L file a value under
    # 2.2 mmol/L is a reading below the range and is kept at 39 mg/dL.
    codes = (mgdl <= 0) | ((mgdl < SENSOR_MIN_MGDL) & (factor == 1.0))
    rows.error_codes = int(codes.sum())
    if notes is not None:
        notes.extend(_csv_notes(path, rows, tz))
    keep = ~codes
    return (*_by_minute(t[keep], mgdl[keep], path.name, notes),
            np.sort(np.array(rows.carbs, dtype=np.int64)))


def _csv_notes(path: Path, rows: _Rows, tz: str | None) -> list[str]:
    out = [f"{path.name}: {rows.not_sensor}"] if rows.not_sensor else []
    if rows.skipped:
        out.append(f"{path.name}: {rows.skipped} rows skipped, not a time and a reading "
                   f"(first: {rows.first_bad!r}).")
    if rows.error_codes:
        out.append(f"{path.name}: {rows.error_codes} values under {SENSOR_MIN_MGDL:.0f} mg/dL "
                   "left out (sensor error codes, or no reading).")
    if rows.low_high:
        out.append(f"{path.name}: {rows.low_high} Low/High cells read as 39/400 mg/dL.")
    if rows.offsets:
        how = f"put on the {tz} clock" if tz else "read on the clock as written (give --tz to " \
                                                  "convert them)"
        out.append(f"{path.name}: {rows.offsets} times carry a UTC offset; {how}.")
    return out


def _by_minute(t: np.ndarray, g: np.ndarray, name: str = "",
               notes: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Readings (minutes, mg/dL, in the order written) sorted by minute, one per minute (a
    repeated minute keeps the mean of its readings, whatever order the file has, said in
    `notes` when the values differ), clipped to the CGM's 39-400 mg/dL."""
    order = np.lexsort((g, t))
    t, g = t[order], np.clip(g[order], 39, 400)
    if not t.size:
        return t, g.astype(np.float32)
    minutes, first, counts = np.unique(t, return_index=True, return_counts=True)
    if notes is not None:
        differ = int(((np.maximum.reduceat(g, first) != np.minimum.reduceat(g, first))).sum())
        if differ:
            notes.append(f"{name}: {differ} minutes hold two different readings (overlapping "
                         "sensors, a clock set back an hour, or seconds apart); their mean "
                         "was kept.")
    return minutes, (np.add.reduceat(g, first) / counts).astype(np.float32)


def _usual_step(t: np.ndarray) -> int:
    """The sensor's interval in minutes: the commonest step between readings, not gaps."""
    steps = np.diff(t).astype(np.int64)
    steps = steps[(steps > 0) & (steps <= 60)]
    return int(np.argmax(np.bincount(steps))) if steps.size else SLOT_MIN


def to_grid(name: str, t: np.ndarray, g: np.ndarray,
            carbs_min: np.ndarray | None = None) -> Person | None:
    """Put readings (and carb times, minutes) on the 5-minute grid (the edge's own rule,
    cgm_grid); None without any reading."""
    if t.size == 0:
        return None
    _interval, x, observed, held = cgm_grid(t, g)
    step = _usual_step(t)
    carbs = np.zeros(0, dtype=np.int64)
    if carbs_min is not None and len(carbs_min):
        carbs = np.rint((np.asarray(carbs_min) - int(t[0])) / SLOT_MIN).astype(np.int64)
    return Person(name, int(t[0]), step, x, observed, held, carbs)


def fingerprint(person: Person) -> str:
    """A short digest of a person's first two weeks of readings: tells whether a model was
    trained on these very readings, whatever the file is called."""
    import hashlib

    held = np.nan_to_num(person.held[:14 * 288], nan=0.0)
    digest = hashlib.sha256(np.int64(person.start_min).tobytes() + np.rint(held).astype(np.int16).tobytes())
    return digest.hexdigest()[:16]


DAY_MARK_EVERY = 2  # a mark for every other calendar day: two weeks of a copy show 7
DAY_MARK_BIN = 8.0  # mg/dL: each quarter day's mean is marked in such a bin, matched in it
# or either side
DAY_MARK_COVER = 0.7  # of a quarter day's 5-minute slots with glucose, for the day's mark
DAY_MARK_MIN = 3  # marked days that must match one trained person, and ...
DAY_MARK_SHARE = 0.3  # ... this share of the person's marked days
DAY_MARK_SHIFTS = (0, -60, 60, -120, 120)  # minutes: a copy put on UTC, or another zone


def _day_quarters(person: Person, shift: int = 0) -> dict[int, tuple[float, ...]]:
    """Mean glucose of each quarter (6 hours) of every DAY_MARK_EVERY-th calendar day (the
    person's clock moved by `shift` minutes; days since 1970) whose quarters all have glucose
    in DAY_MARK_COVER of their slots."""
    t = person.start_min + shift + SLOT_MIN * np.arange(person.held.size)
    day, quarter = t // 1440, (t % 1440) // 360
    have = np.isfinite(person.held)
    out = {}
    for d in np.unique(day[have]):
        if d % DAY_MARK_EVERY:
            continue
        means = []
        for q in range(4):
            inside = (day == d) & (quarter == q)
            if have[inside].sum() < DAY_MARK_COVER * 360 / SLOT_MIN:
                break
            means.append(float(person.held[inside & have].mean()))
        if len(means) == 4:
            out[int(d)] = tuple(means)
    return out


def _day_mark(day: int, steps) -> str:
    import hashlib

    return hashlib.sha256(f"{day}:{','.join(map(str, steps))}".encode()).hexdigest()[:10]


def day_marks(person: Person) -> list[str]:
    """Marks of a person's days (the date and the mean glucose of each quarter of the day in
    8-mg/dL bins, hashed): tell readings a model was trained on when they come back
    reformatted, rounded, trimmed, shifted by minutes or put on UTC, which the exact
    `fingerprint` cannot."""
    return sorted(_day_mark(d, [int(m // DAY_MARK_BIN) for m in q])
                  for d, q in _day_quarters(person).items())


def trained_on(person: Person, marks_by_person: dict[str, list[str]]) -> bool:
    """Whether the person's days match one trained person's marks: DAY_MARK_MIN of them and
    DAY_MARK_SHARE of the person's marked days, each quarter in its bin or either side (a
    mean moved by rounding still matches), on the person's clock or one moved by whole hours
    (a copy put on UTC). One trained person at a time: data sets share dates, and most days'
    means are alike (among the 20 BrisT1D people, another's days match at most 2 of 50)."""
    import itertools

    sets = [set(marks) for marks in marks_by_person.values()]
    for shift in DAY_MARK_SHIFTS:
        days = [{_day_mark(d, [int(m // DAY_MARK_BIN) + k for m, k in zip(q, moved, strict=True)])
                 for moved in itertools.product((-1, 0, 1), repeat=4)}
                for d, q in _day_quarters(person, shift).items()]
        need = max(DAY_MARK_MIN, DAY_MARK_SHARE * len(days))
        if any(sum(1 for day in days if day & marks) >= need for marks in sets):
            return True
    return False


def load_person(path: Path, tz: str | None = None, date_order: str | None = None,
                files: list[Path] | None = None,
                skipped: list[str] | None = None) -> Person | None:
    """One person's file: the plain layout (timestamp,glucose_value_mg_dl) or a CGM export the
    edge imports (Dexcom Clarity, LibreView, Medtronic CareLink, Nightscout JSON). `tz` is the
    person's clock for times given in UTC (Nightscout JSON; CSV times with an offset): None
    reads Nightscout's as UTC and CSV times as written. With `files`, `path` is the person's
    folder and each of the files one part of their record (monthly exports, one sensor after
    another, overlaps allowed): their readings are put together, one per minute, and a part
    that is not CGM is left out, said in `skipped` (else in the person's notes); the person is
    refused when no part is CGM."""
    notes: list[str] = []
    read, parts, refused = [], [], []  # the files read and their readings; those refused
    for part in files if files is not None else [path]:
        try:
            parts.append(_read_part(part, tz, date_order, notes))
            read.append(part)
        except NightlinkError as exc:
            if files is None:
                raise
            refused.append((part, exc))
    if refused and not parts:  # the reason of a part that looked like CGM, if one did
        raise next((exc for part, exc in refused if _is_plain(part)),
                   next((exc for part, exc in refused if _CGM_NAME.search(part.name)),
                        refused[0][1]))
    (notes if skipped is None else skipped).extend(
        f"{path.name}/{part.relative_to(path) if part.is_relative_to(path) else part.name} left "
        f"out: {exc}" for part, exc in refused)
    if not parts:
        return None
    t, g, carbs = parts[0]
    if len(parts) > 1:
        _one_record(path, read, parts)
        t, g = _by_minute(np.concatenate([p[0] for p in parts]),
                          np.concatenate([p[1] for p in parts]), path.name, notes)
        carbs = np.unique(np.concatenate([p[2] for p in parts]))
    t, g = _without_strays(path.name, t, g, notes)
    if t.size and t[-1] - t[0] > MAX_SPAN_YEARS * 525_960:
        raise NightlinkError(f"{path.name} holds readings {(t[-1] - t[0]) / 525_960:.0f} years "
                             f"apart (more than {MAX_SPAN_YEARS}): a date that is wrong, or "
                             "several people's files.")
    t, g = _sensor_readings(path.name, t, g, notes)
    person = to_grid(path.stem if files is None else path.name, t, g, carbs)
    if person is not None:
        person.notes = notes
    return person


INTERPOLATED_FROM = (15, 5)  # sensors' intervals that data sets interpolate to every minute
STRAIGHT_SHARE = 0.7  # of a run's minutes on a straight line through their neighbours ...
BEND_PHASE_SHARE = 0.9  # ... and of its bends at one phase of the sensor's interval
BEND_STEPS = 2.5  # a bend: the slope changes by more than this many of the values' last
# digit (0.1 mg/dL rounding moves a straight line's by 0.2 at most)
SESSION_GAP_MIN = 30  # a longer gap may start a sensor whose readings have another phase
MIN_BENDS_SHARE = 0.2  # of the readings the sensor's interval implies, bending there (a
# slope kept from one reading to the next makes none), and at least MIN_BENDS of them
MIN_BENDS = 4


def _sensor_readings(name: str, t: np.ndarray, g: np.ndarray,
                     notes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The sensor's own readings of a file that interpolated them to every minute (CGMacros;
    any resampled data set): each minute between two readings then holds part of the next
    one, up to 14 minutes ahead, so a forecast would see the future, and every minute would
    count as a reading. Told, between gaps of over 30 minutes, by 1-minute readings that lie
    on straight lines (70 % of minutes or more) bending only at one phase of 15 or 5 minutes:
    those keep the minutes of that phase, said. A real 1-minute sensor bends anywhere and is
    kept whole."""
    if t.size < 4 * INTERPOLATED_FROM[0] or np.median(np.diff(t)) != 1:
        return t, g
    keep = np.ones(t.size, dtype=bool)
    steps = set()
    bend_mgdl = BEND_STEPS * _resolution(g)
    for run in np.split(np.arange(t.size), np.flatnonzero(np.diff(t) > SESSION_GAP_MIN) + 1):
        tr, gr = t[run], g[run].astype(np.float64)
        # minutes with a reading the minute before and after: straight, or bent
        mid = np.flatnonzero((tr[1:-1] - tr[:-2] == 1) & (tr[2:] - tr[1:-1] == 1)) + 1
        if mid.size < 4 * INTERPOLATED_FROM[0]:
            continue
        bent = np.abs(gr[mid + 1] - 2 * gr[mid] + gr[mid - 1]) > bend_mgdl
        if not bent.any() or 1 - bent.mean() < STRAIGHT_SHARE:
            continue
        bends = tr[mid[bent]]
        for step in INTERPOLATED_FROM:
            phases = np.bincount(bends % step, minlength=step)
            # a bend at most knots (a real sensor's few bends in a flat night prove nothing)
            if (phases.max() >= BEND_PHASE_SHARE * bends.size
                    and bends.size >= max(MIN_BENDS, MIN_BENDS_SHARE * mid.size / step)):
                keep[run] = t[run] % step == int(np.argmax(phases))
                steps.add(step)
                break
    if steps:
        notes.append(f"{name}: readings every minute on straight lines between readings "
                     f"{' or '.join(map(str, sorted(steps)))} minutes apart (interpolated, each "
                     f"holding part of the next reading): only the {int(keep.sum())} at the "
                     f"sensor's times kept, of {t.size}.")
    return t[keep], g[keep]


class SeveralPeople(NightlinkError):
    """A person's folder whose files cover the same days with other readings."""


# The last digits values are written to, in mg/dL: whole, 0.1, 0.01, 0.001 mg/dL, and mmol/L
# to 1, 2 or 3 decimals by the factors converters use (this project's, 18.0182, 18, 18.01559).
_WRITTEN_STEPS = sorted({round(step * f, 6) for step in (0.1, 0.01, 0.001)
                         for f in (MGDL_PER_MMOLL, 18.0182, 18.0, 18.01559)}
                        | {1.0, 0.1, 0.01, 0.001}, reverse=True)


def _resolution(g: np.ndarray) -> float:
    """The last digit the values were written to, in mg/dL (1 for whole mg/dL, 0.18 for
    mmol/L to two decimals, ...): the largest such step all of them are whole multiples of;
    0.0004 (as fine as float32 holds a glucose value) for values written in full."""
    values = g.astype(np.float64)
    for step in _WRITTEN_STEPS:
        if np.allclose(values / step, np.round(values / step), atol=0.02):
            return step
    return 4e-4


SAME_RECORD_MIN = 1440  # parts of one person's folder may overlap this long ...
SAME_RECORD_SHARE = 0.5  # ... or hold the same readings this often where they overlap


def _one_record(folder: Path, files: list[Path],
                parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
    """Refuse the parts of a person's folder that cover the same days with other readings:
    two people's files (or two sensors worn at once), which put together by minute would be
    scored as one made-up person. Downloads that overlap hold the same readings there (within
    a minute and 3 mg/dL: one exported in mmol/L, one in mg/dL)."""
    for i, (ta, ga, _) in enumerate(parts):
        for j in range(i + 1, len(parts)):
            tb, gb = parts[j][0], parts[j][1]
            if not ta.size or not tb.size:
                continue
            lo, hi = max(ta[0], tb[0]), min(ta[-1], tb[-1])
            if hi - lo <= SAME_RECORD_MIN:
                continue
            # the sparser part's readings found in the denser one (a 15-minute download
            # beside a 1-minute one of the same sensor)
            sparse, dense = ((tb, gb), (ta, ga)) if tb.size <= ta.size else ((ta, ga), (tb, gb))
            if _found_share(sparse, dense, lo, hi) < SAME_RECORD_SHARE:
                shift = _clock_shift(sparse, dense, lo, hi)
                if shift is not None:  # one person's downloads, one on another clock
                    raise NightlinkError(
                        f"{folder.name}: {files[i].name} and {files[j].name} hold the same "
                        f"readings {abs(shift) / 60:g} hours apart: one has its times on another "
                        "clock (UTC?). Give both on the person's clock (--tz puts times written "
                        "with an offset on it), or keep one.")
                raise SeveralPeople(
                    f"{folder.name}: {files[i].name} and {files[j].name} cover the same "
                    f"{(hi - lo) / 1440:.0f} days with other readings: two people's files, or "
                    "two sensors worn at once. A folder is read as one person; give one folder "
                    "per person, or the folder itself as --data to read one person per file.")


def _clock_shift(sparse: tuple[np.ndarray, np.ndarray], dense: tuple[np.ndarray, np.ndarray],
                 lo: int, hi: int) -> int | None:
    """The shift in minutes (a whole or half hour, up to 14 hours) that makes `sparse`'s
    readings `dense`'s, if one does: one download's times on UTC, the other's local."""
    ts, gs = sparse
    for minutes in sorted(range(-14 * 60, 14 * 60 + 1, 30), key=abs):
        if minutes and _found_share((ts + minutes, gs), dense, lo, hi) >= SAME_RECORD_SHARE:
            return minutes
    return None


def _found_share(sparse: tuple[np.ndarray, np.ndarray], dense: tuple[np.ndarray, np.ndarray],
                 lo: int, hi: int) -> float:
    """The share of `sparse`'s readings from minute lo to hi that `dense` holds too, within a
    minute and 3 mg/dL."""
    (ts, gs), (td, gd) = sparse, dense
    inside = (ts >= lo) & (ts <= hi)
    if not inside.any() or td.size < 2:
        return 1.0
    near = np.clip(np.searchsorted(td, ts[inside]), 1, td.size - 1)
    nearest = np.where(np.abs(td[near - 1] - ts[inside]) <= np.abs(td[near] - ts[inside]),
                       near - 1, near)
    return float(((np.abs(td[nearest] - ts[inside]) <= 1)
                  & (np.abs(gd[nearest] - gs[inside]) <= 3)).mean())


_CGM_NAME = re.compile(r"gluc|cgm|sgv|libre|dexcom", re.IGNORECASE)  # a part named as CGM


def _read_part(path: Path, tz: str | None, date_order: str | None,
               notes: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(minutes, mg/dL, carb minutes) of one file, plain layout, OhioT1DM XML or CGM export."""
    if path.suffix.lower() == ".xml":
        from nightlink.tools.train.readers import ohio_readings

        _pid, t, g, meals = ohio_readings(path)
        years = t // (1440 * 365.2425) + 1970
        keep = (np.isfinite(g) & (g >= SENSOR_MIN_MGDL) & (years >= PLAUSIBLE_YEARS[0])
                & (years < PLAUSIBLE_YEARS[1]))
        if not keep.all():
            notes.append(f"{path.name}: {int((~keep).sum())} glucose events left out (a value "
                         f"that is no reading, under {SENSOR_MIN_MGDL:.0f} mg/dL, or a date "
                         f"outside {PLAUSIBLE_YEARS[0]}-{PLAUSIBLE_YEARS[1] - 1}).")
        read = (*_by_minute(t[keep], g[keep], path.name, notes), np.sort(meals))
    elif _is_plain(path):
        read = read_csv(path, tz, notes, date_order)
    else:
        read = (*read_export(path, tz, date_order, notes), np.zeros(0, dtype=np.int64))
    steps = np.diff(read[0])
    if steps.size and np.median(steps) >= METER_STEP_MIN:
        raise NightlinkError(f"{path.name} holds readings a median {np.median(steps) / 60:.1f} "
                             "hours apart: too far apart for a CGM's (a meter's fingersticks?).")
    return read


METER_STEP_MIN = 60  # readings a median this far apart: a meter's, not a sensor's (5-15 min)


MAX_SPAN_YEARS = 20  # a person's readings further apart: a wrong date (the grid would take GBs)
STRAY_GAP_MIN = 30 * 1440  # readings this far from all others ...
STRAY_MAX_DAY = 1.0  # ... and fewer than a day's worth of them: a wrong date, not data


def _without_strays(name: str, t: np.ndarray, g: np.ndarray,
                    notes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The readings without stray ones: a few rows dated a month or more away from all the
    others (a device's clock at 1995 after a reset, a typo's 2099) are left out and said,
    instead of stretching the 5-minute grid over decades (gigabytes for one person) and
    moving its phase. Periods of real wear apart in time, each with a day of readings or
    more, are all kept."""
    if t.size < 2:
        return t, g
    cuts = np.flatnonzero(np.diff(t) > STRAY_GAP_MIN) + 1
    runs = np.split(np.arange(t.size), cuts)
    if len(runs) == 1:
        return t, g
    day = STRAY_MAX_DAY * 1440 / _usual_step(t)  # a day of readings: 96 of a 15-minute sensor
    stray = [run for run in runs if run.size < day]
    if not stray or len(stray) == len(runs):
        return t, g
    drop = np.concatenate(stray)
    keep = np.ones(t.size, dtype=bool)
    keep[drop] = False
    days = sorted({str(np.datetime64(int(m), "m").astype("datetime64[D]")) for m in t[drop]})
    notes.append(f"{name}: {drop.size} readings dated a month or more away from all the others "
                 f"left out ({', '.join(days[:3])}{' …' if len(days) > 3 else ''}).")
    return t[keep], g[keep]


def _is_plain(path: Path) -> bool:
    try:
        return _layout(path)[1] is not None
    except NightlinkError:  # not UTF-8: perhaps a UTF-16 export
        return False


CGM_EXPORTS = ("clarity", "libreview", "carelink", "nightscout")


def read_export(path: Path, tz: str | None = None, date_order: str | None = None,
                notes: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(minutes since 1970 on the local clock, mg/dL) of a CGM export, read by the edge's own
    importers. Exports that write local clock times (Clarity, LibreView, CareLink) are read as
    written, on the clock the device showed (a pump's clock set after a change of summer time,
    or a phone's moved by travel, is not undone as `edge import` does: its zone is not known
    here); Nightscout JSON carries UTC, and `tz` says whose clock its nights are on (without
    it, UTC's: said in `notes`). Of a
    LibreView export only the 15-minute history is read: scans in between would make the
    sensor look like a 5-minute one. `date_order` ("dmy"/"mdy") settles dates that fit both;
    what the importer assumed, and the rows it skipped, are added to `notes`."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from nightlink.edge.importers.cgm_csv import read_libreview_csv
    from nightlink.edge.importers.importer import read_samples
    from nightlink.edge.sources.samples import Glucose, SourceError

    fmt = _export_format(path)
    if fmt not in CGM_EXPORTS:
        try:
            line = _layout(path)[2]
            what = f"its first line is {','.join(line)[:80]!r}" if any(line) else "it is empty"
        except NightlinkError:
            what = "it is not UTF-8 text"
        raise NightlinkError(f"{path.name} is neither a CSV with columns timestamp and "
                             "glucose_value_mg_dl (or glucose_value_mmol_l; UTF-8, comma, "
                             "semicolon or tab separated) nor a CGM export Nightlink reads "
                             "(Dexcom Clarity, LibreView, Medtronic CareLink, Nightscout JSON): "
                             f"{what}.")
    # Local clock times are read as written, on the clock the device showed (UTC stands for
    # it), even where a pump's or a phone's clock was set: whose zone it was is not known.
    as_written = fmt != "nightscout"
    zone_name = "UTC" if as_written else tz or "UTC"
    try:
        if fmt == "libreview":
            samples = read_libreview_csv(path, zone_name, date_order=date_order, scans=False)
        else:
            _, samples = read_samples(path, fmt, zone_name, date_order,
                                      device_clocks=not as_written)
    except SourceError as exc:
        raise NightlinkError(str(exc)) from None
    if notes is not None:
        if fmt == "nightscout" and tz is None:
            notes.append(f"{path.name}: Nightscout times are UTC and were read on the UTC "
                         "clock; give --tz to put the nights on the person's clock.")
        notes.extend(samples.notes)  # its --date-order is ours too
        if samples.skipped:
            first = f" (first: {samples.first_bad})" if samples.first_bad else ""
            notes.append(f"{path.name}: {samples.skipped} rows skipped{first}.")
    zone, origin = ZoneInfo(zone_name), datetime(1970, 1, 1)
    readings = [s for s in samples if isinstance(s, Glucose) and s.sgv is not None]  # oldest first
    t = np.array([int((datetime.fromtimestamp(s.t, zone).replace(tzinfo=None) - origin)
                      .total_seconds() // 60) for s in readings], dtype=np.int64)
    return _by_minute(t, np.array([float(s.sgv) for s in readings]), path.name, notes)


def _export_format(path: Path) -> str | None:
    from nightlink.edge.importers import sniff
    from nightlink.edge.sources.samples import SourceError

    try:
        return sniff.sniff(path)
    except SourceError:
        return None


DATA_SUFFIXES = (".csv", ".tsv", ".txt", ".json", ".xml")


def _is_csv_export(path: Path) -> bool:
    """A .txt file that is a CGM export (Clarity, LibreView, CareLink, Nightscout's text
    download); any other text file in the folder is a note and is left out."""
    return _export_format(path) in CGM_EXPORTS


def _not_read(path: Path) -> str:
    """Why a folder entry is not read as a person's CGM, in a few words."""
    if not path.exists():
        return "a broken link (what it points to is not there)."
    if path.suffix.lower() in (".gz", ".zip", ".bz2", ".xz", ".7z"):
        return "compressed; unpack it into the folder."
    return (f"not a .csv, .tsv, .json or OhioT1DM .xml file (a {path.suffix or 'suffix-less'} file "
            "is not read).")


def load_folder(root: Path, names: list[str] | None = None, tz: str | None = None,
                date_order: str | None = None, skipped: list[str] | None = None) -> list[Person]:
    """Every person in root (or root/csv), in name order: a file per person, in the plain
    layout or as a CGM export (load_person), or a folder per person holding any number of
    such files (several exports, one sensor after another), the folder's name being the
    person's. `names` picks people by file stem or folder name (any case); one that is not
    there is refused. A file that cannot be read as CGM (a demographics table, an empty file)
    is left out, and why is added to `skipped`; only when no one can be read is the folder
    refused."""
    import tempfile

    root = Path(root)
    folder = root / "csv" if (root / "csv").is_dir() else root
    inner = _only_folder_holding_cgm(folder)
    with tempfile.TemporaryDirectory(prefix="nightlink-cgm-") as unpacked:
        if inner is None:
            return _load_folder(folder, Path(unpacked), names, tz, date_order, skipped)
        said = f"{inner.name} read as the folder of people, one file per person: "
        if _has_table(folder) or (names and inner.name.lower() not in _wanted(names)):
            if skipped is not None:
                skipped.append(said + f"it is the only folder in {folder.name} holding CGM "
                                      "files, beside a table of the people.")
            return _load_folder(inner, Path(unpacked), names, tz, date_order, skipped)
        tried: list[str] = []  # one person's folder, unless its files are several people's
        try:
            people = _load_folder(folder, Path(unpacked) / "as-one", names, tz, date_order, tried)
        except SeveralPeople:
            if skipped is not None:
                skipped.append(said + "its files cover the same days with other readings.")
            return _load_folder(inner, Path(unpacked), names, tz, date_order, skipped)
        if skipped is not None:
            files = sum(1 for p in _entries(inner) if _looks_like_cgm(p))
            if files > 1:  # (people recorded on other dates would be put together: say so)
                tried.insert(0, f"{inner.name} read as one person from its {files} files (the "
                                f"only folder in {folder.name}); give it as --data to read "
                                "one person per file.")
            skipped.extend(tried)
        return people


NOT_DATA_DIRS = ("__MACOSX",)  # what an archive unpacked on a Mac leaves beside its files


def _entries(folder: Path) -> list[Path]:
    """A folder's entries in name order, without hidden ones and archives' leftovers."""
    return sorted(p for p in folder.iterdir()
                  if not p.name.startswith(".") and p.name not in NOT_DATA_DIRS)


def _looks_like_cgm(path: Path) -> bool:
    """A file that is (or, gzipped, may be) a person's CGM, by its name and first lines."""
    name = path.name.lower()
    if name.endswith(tuple(f"{x}.gz" for x in DATA_SUFFIXES)):
        return True
    if path.suffix.lower() == ".xml":
        return _is_ohio(path)
    return (path.is_file() and path.suffix.lower() in DATA_SUFFIXES
            and (_is_plain(path) or _export_format(path) in CGM_EXPORTS))


def _is_ohio(path: Path) -> bool:
    """An OhioT1DM patient file, by its first bytes."""
    try:
        with open(path, "rb") as fh:
            return b"<patient" in fh.read(512)
    except OSError:
        return False


def _ohio_people(paths: list[Path], folder: Path,
                 unread: list[str]) -> tuple[list[Path], dict[Path, list[Path]]]:
    """OhioT1DM files put together by the patient they name (its training and testing files
    are one person, named by the id): (the other files, {a stand-in path named by the id:
    the patient's files}); a file that is no Ohio patient file goes to `unread`."""
    from nightlink.tools.train.readers import ohio_patient

    others, people = [], {}
    for path in paths:
        if path.suffix.lower() != ".xml":
            others.append(path)
            continue
        try:
            pid = ohio_patient(path)[0]
        except NightlinkError as exc:
            unread.append(f"{path.name}: {str(exc).replace(str(path), 'it')}")
            continue
        people.setdefault(folder / pid, []).append(path)
    return others, people


def _only_folder_holding_cgm(folder: Path) -> Path | None:
    """The one folder in `folder` holding CGM files when `folder` holds none of its own: a
    person's folder, or a folder of people (an archive unpacked as a table of the people beside
    a folder of their files; a folder given one level too high)."""
    entries = _entries(folder)
    if any(_looks_like_cgm(p) for p in entries if not p.is_dir()):
        return None
    holding = [d for d in entries if d.is_dir()
               and any(_looks_like_cgm(p) for p in _entries(d) if not p.is_dir())]
    return holding[0] if len(holding) == 1 else None


def _has_table(folder: Path) -> bool:
    """`folder` holds a data file that is not CGM (a table of the people, as Glucose-ML's
    `<set>-metadata.csv` or DREAMT's participant_info.csv)."""
    return any(p.is_file() and p.suffix.lower() in (".csv", ".json") and not _looks_like_cgm(p)
               for p in _entries(folder))


def _wanted(names: list[str]) -> set[str]:
    """People asked for by name, as they are matched: any case, a data file's suffix left
    off (`P01.csv` is P01; `john.doe` stays john.doe)."""
    out = set()
    for name in names:
        low = name.lower().removesuffix(".gz")
        out.add(low[:-len(Path(low).suffix)] if Path(low).suffix in DATA_SUFFIXES else low)
    return out


def _gunzipped(path: Path, into: Path, unread: list[str]) -> Path | None:
    """A person's `.csv.gz` or `.json.gz` unpacked into `into`; None (why added to `unread`)
    when it is no gzip."""
    import gzip
    import shutil
    import zlib

    into.mkdir(parents=True, exist_ok=True)
    out = into / path.name[:-3]
    try:
        with gzip.open(path, "rb") as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst)
    except (OSError, EOFError, zlib.error) as exc:
        unread.append(f"{path.name}: not a gzip file that can be unpacked ({exc}).")
        return None
    return out


def _data_files(entries: list[Path], unpacked: Path) -> tuple[list[Path], list[str]]:
    """Of a folder's entries (files only), those read as CGM (gzipped ones unpacked into
    `unpacked`), in name order, and why each other one is not, as "name: reason" (notes,
    .md/.txt/.pdf, are left out without a word)."""
    packed = [p for p in entries
              if p.name.lower().endswith(tuple(f"{x}.gz" for x in DATA_SUFFIXES))]
    bad_packs: list[str] = []  # said with the others: as a note only, a folder of them
    entries = sorted([p for p in entries if p not in packed]  # said "no CGM files" and why not
                     + [u for p in packed if (u := _gunzipped(p, unpacked, bad_packs))],
                     key=lambda p: p.name)
    paths = [p for p in entries if p.is_file() and p.suffix.lower() in DATA_SUFFIXES]
    paths = [p for p in paths if p.suffix.lower() != ".txt" or _is_csv_export(p)]  # notes stay out
    unread = bad_packs + [f"{p.name}: {_not_read(p)}" for p in entries
                          if p not in paths and p.suffix.lower() not in (".md", ".txt", ".pdf")]
    return paths, unread


def _load_folder(folder: Path, unpacked: Path, names: list[str] | None, tz: str | None,
                 date_order: str | None, skipped: list[str] | None) -> list[Person]:
    entries = _entries(folder)
    dirs = [p for p in entries if p.is_dir()]
    paths, unread = _data_files([p for p in entries if not p.is_dir()], unpacked / "top")
    # OhioT1DM's patients by id wherever their files are (its train/ and test/ folders)
    ohio = [p for sub in dirs for p in sorted(sub.rglob("*.xml")) if _is_ohio(p)
            and not any(part.startswith(".") or part in NOT_DATA_DIRS
                        for part in p.relative_to(folder).parts)]
    paths, parts = _ohio_people(paths + ohio, folder, unread)
    for i, sub in enumerate(dirs):  # a person's folder: its own files, not its sub-folders
        inside = [p for p in _entries(sub) if p not in ohio]
        if any(sub in p.parents for p in ohio) and not any(p.is_file() for p in inside):
            continue  # a folder of OhioT1DM files (or of folders of them)
        files, why = _data_files([p for p in inside if not p.is_dir()],
                                 unpacked / f"person{i}")
        unread += [f"{sub.name}/{w}" for w in why]
        unread += [f"{sub.name}/{p.name}: a folder inside a person's folder (its files are not "
                   "read; keep a person's files in their folder)." for p in inside if p.is_dir()
                   and not any(p in o.parents for o in ohio)]
        if sub in parts:  # an OhioT1DM patient's id
            raise NightlinkError(f"The folder {sub.name} and the OhioT1DM files of patient "
                                 f"{sub.name} would be the same person; keep one in {folder}.")
        if files:
            parts[sub] = files
        else:
            unread.append(f"{sub.name}: a folder with no CGM file in it (one folder per person "
                          "is read, holding that person's files).")
    if skipped is not None and names is None:  # a person whose file is not read is named
        skipped.extend(f"{u.replace(': ', ' left out: ', 1)}" for u in unread)
    people_at = {p.stem.lower(): p for p in paths}
    for sub in parts:
        other = people_at.setdefault(sub.name.lower(), sub)
        if other is not sub:
            raise NightlinkError(f"{other.name} and the folder {sub.name} would be the same "
                                 f"person; keep one file or one folder per person in {folder}.")
    for p in paths:
        other = people_at[p.stem.lower()]
        if other is not p:
            raise NightlinkError(f"{other.name} and {p.name} would be the same person; keep one "
                                 f"file per person in {folder}.")
    if names is not None:
        wanted = _wanted(names)
        missing = sorted(wanted - set(people_at))
        if missing:
            raise NightlinkError(f"No CGM file for {', '.join(missing)} in {folder}.")
        people_at = {k: v for k, v in people_at.items() if k in wanted}
    if not people_at:
        why = f" ({'; '.join(unread[:3])}{' …' if len(unread) > 3 else ''})" if unread else ""
        raise NightlinkError(f"No CGM files (timestamp,glucose_value_mg_dl CSVs or CGM exports, "
                             f"one per person or a folder per person) in {folder}{why}.")
    people, refused = [], []
    for path in sorted(people_at.values(), key=lambda p: p.name):
        try:
            person = load_person(path, tz, date_order, parts.get(path), skipped)
        except NightlinkError as exc:
            refused.append((path, exc))
            continue
        if person is not None:
            people.append(person)
        else:
            refused.append((path, NightlinkError(f"{path.name} has no glucose reading.")))
    if not people and refused:  # the reason of a file that looked like CGM, if one did
        raise next((exc for path, exc in refused if path.is_file() and _is_plain(path)),
                   refused[0][1])
    if skipped is not None:
        skipped.extend(f"{path.name} left out: {exc}" for path, exc in refused)
    return people


events = low_events
