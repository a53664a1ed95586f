"""Real CGM recordings as the glucose model sees them: one file per person, a CSV
(`timestamp,glucose_value_mg_dl`, or `timestamp,glucose_value_mmol_l`; local clock time, gaps
as missing rows) or a CGM export the edge imports (Dexcom Clarity, LibreView, Medtronic
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

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nightlink.edge.features.glucose_risk import LOW_MGDL, SLOT_MIN, cgm_grid, low_events

__all__ = ["LOW_MGDL", "SLOT_MIN", "Person", "events", "load_folder", "load_person", "read_csv",
           "to_grid"]
from nightlink.errors import NightlinkError
from nightlink.shared.units import MGDL_PER_MMOLL

NIGHT_START_MIN, NIGHT_END_MIN = 22 * 60, 7 * 60
NIGHT_SLOTS = (24 * 60 - NIGHT_START_MIN + NIGHT_END_MIN) // SLOT_MIN
MIN_COVERAGE = 0.7  # a night or day counts when this share of its slots has glucose
DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "cgm-bris-t1d-open"


@dataclass
class Person:
    name: str
    start_min: int  # minutes since 1970 (local clock) of slot 0
    interval_min: int  # the sensor's sampling interval, 1, 5 or 15
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


def _glucose_unit(path: Path) -> float:
    """mg/dL per unit of the second column: 1, or MGDL_PER_MMOLL when its header names mmol/L
    (`glucose_value_mmol_l`, as UK and European exports give it)."""
    header = _header(path)
    return MGDL_PER_MMOLL if len(header) > 1 and "mmol" in header[1] else 1.0


def _header(path: Path) -> list[str]:
    """The CSV's column names, lower case (a UTF-8 file, with or without a byte-order mark)."""
    try:
        with open(path, encoding="utf-8-sig") as fh:
            return [h.strip().lower() for h in fh.readline().split(",")]
    except (OSError, UnicodeDecodeError) as exc:
        raise NightlinkError(f"Cannot read {path}: {exc}.") from None


def read_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(minutes since 1970, mg/dL) sorted, one reading per minute, unusable rows dropped. The
    second column is mg/dL, or mmol/L when its header says so."""
    factor = _glucose_unit(path)
    try:
        raw = np.loadtxt(path, delimiter=",", skiprows=1, dtype=str, ndmin=2, usecols=(0, 1))
    except (OSError, ValueError) as exc:
        raise NightlinkError(f"Cannot read {path}: {exc}.") from None
    if raw.shape[0] == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    try:
        t = np.char.strip(raw[:, 0]).astype("datetime64[m]").astype(np.int64)
        g = np.array([float(v) if v.strip() else np.nan for v in raw[:, 1]], dtype=np.float64)
    except ValueError as exc:
        raise NightlinkError(f"{path.name} needs columns timestamp,glucose_value_mg_dl "
                             f"(or glucose_value_mmol_l): {exc}.") from None
    valid = np.isfinite(g) & (g > 0)
    median = float(np.median(g[valid])) if valid.any() else None
    if factor == 1.0 and median is not None and median < MMOLL_LOOKALIKE_MEDIAN:
        raise NightlinkError(f"{path.name} has glucose values that look like mmol/L (median "
                             f"{median:.1f}); name the column glucose_value_mmol_l or give mg/dL.")
    if factor != 1.0 and median is not None and median >= MMOLL_LOOKALIKE_MEDIAN:
        raise NightlinkError(f"{path.name} has glucose values that look like mg/dL (median "
                             f"{median:.0f}) under a mmol/L header; name the column "
                             "glucose_value_mg_dl or give mmol/L.")
    keep = np.isfinite(g) & (g > 0)
    return _by_minute(t[keep], g[keep] * factor)


def _by_minute(t: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Readings (minutes, mg/dL, in the order written) sorted by minute, one per minute (a
    repeated minute keeps its last reading), clipped to the CGM's 39-400 mg/dL."""
    order = np.argsort(t, kind="stable")
    t, g = t[order], np.clip(g[order], 39, 400)
    last = np.r_[t[1:] != t[:-1], True] if t.size else np.zeros(0, dtype=bool)
    return t[last], g[last].astype(np.float32)


def read_carbs(path: Path) -> np.ndarray:
    """Minutes since 1970 of the rows whose carbs column (a header starting with "carb", e.g.
    `carbs_g`) is > 0; empty when the CSV has no such column (BrisT1D-Open has none)."""
    header = _header(path)
    col = next((i for i, h in enumerate(header) if h.startswith("carb")), None)
    if col is None:
        return np.zeros(0, dtype=np.int64)
    raw = np.loadtxt(path, delimiter=",", skiprows=1, dtype=str, ndmin=2, usecols=(0, col))
    if raw.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    amount = np.array([float(v) if v.strip() else 0.0 for v in raw[:, 1]])
    t = np.char.strip(raw[amount > 0, 0]).astype("datetime64[m]").astype(np.int64)
    return np.sort(t)


def to_grid(name: str, t: np.ndarray, g: np.ndarray,
            carbs_min: np.ndarray | None = None) -> Person | None:
    """Put readings (and carb times, minutes) on the 5-minute grid (the edge's own rule,
    cgm_grid); None without any reading."""
    if t.size == 0:
        return None
    interval, x, observed, held = cgm_grid(t, g)
    carbs = np.zeros(0, dtype=np.int64)
    if carbs_min is not None and len(carbs_min):
        carbs = np.rint((np.asarray(carbs_min) - int(t[0])) / SLOT_MIN).astype(np.int64)
    return Person(name, int(t[0]), interval, x, observed, held, carbs)


def load_person(path: Path, tz: str = "UTC", date_order: str | None = None) -> Person | None:
    """One person's file: the plain layout (timestamp,glucose_value_mg_dl) or a CGM export the
    edge imports (Dexcom Clarity, LibreView, Medtronic CareLink, Nightscout JSON)."""
    if _is_plain(path):
        t, g = read_csv(path)
        return to_grid(path.stem, t, g, read_carbs(path))
    notes: list[str] = []
    t, g = read_export(path, tz, date_order, notes)
    person = to_grid(path.stem, t, g)
    if person is not None:
        person.notes = notes
    return person


def _is_plain(path: Path) -> bool:
    try:
        header = _header(path)
    except NightlinkError:  # not UTF-8: perhaps a UTF-16 export
        return False
    return len(header) >= 2 and header[0] == "timestamp" and header[1].startswith("glucose_value")


CGM_EXPORTS = ("clarity", "libreview", "carelink", "nightscout")


def read_export(path: Path, tz: str = "UTC", date_order: str | None = None,
                notes: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(minutes since 1970 on the local clock, mg/dL) of a CGM export, read by the edge's own
    importers. Exports that write local clock times (Clarity, LibreView, CareLink) are read as
    written; Nightscout JSON carries UTC, and `tz` says whose clock its nights are on. Of a
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
        raise NightlinkError(f"{path.name} is neither a timestamp,glucose_value_mg_dl CSV (UTF-8) "
                             "nor a CGM export Nightlink reads (Dexcom Clarity, LibreView, Medtronic "
                             "CareLink, Nightscout JSON).")
    zone_name = tz if fmt == "nightscout" else "UTC"  # UTC: a local clock read as written
    try:
        if fmt == "libreview":
            samples = read_libreview_csv(path, zone_name, date_order=date_order, scans=False)
        else:
            _, samples = read_samples(path, fmt, zone_name, date_order)
    except SourceError as exc:
        raise NightlinkError(str(exc)) from None
    if notes is not None:
        notes.extend(samples.notes)  # its --date-order is ours too
        if samples.skipped:
            first = f" (first: {samples.first_bad})" if samples.first_bad else ""
            notes.append(f"{path.name}: {samples.skipped} rows skipped{first}.")
    zone, origin = ZoneInfo(zone_name), datetime(1970, 1, 1)
    readings = [s for s in samples if isinstance(s, Glucose) and s.sgv is not None]  # oldest first
    t = np.array([int((datetime.fromtimestamp(s.t, zone).replace(tzinfo=None) - origin)
                      .total_seconds() // 60) for s in readings], dtype=np.int64)
    return _by_minute(t, np.array([float(s.sgv) for s in readings]))


def _export_format(path: Path) -> str | None:
    from nightlink.edge.importers import sniff
    from nightlink.edge.sources.samples import SourceError

    try:
        return sniff.sniff(path)
    except SourceError:
        return None


DATA_SUFFIXES = (".csv", ".txt", ".json")


def _is_csv_export(path: Path) -> bool:
    """A .txt file that is a CSV export (Clarity, LibreView, CareLink); any other text file in
    the folder is a note and is left out."""
    return _export_format(path) in ("clarity", "libreview", "carelink")


def load_folder(root: Path, names: list[str] | None = None, tz: str = "UTC",
                date_order: str | None = None) -> list[Person]:
    """Every person's file in root (or root/csv), in name order: one file per person, in the
    plain layout or as a CGM export (load_person)."""
    root = Path(root)
    folder = root / "csv" if (root / "csv").is_dir() else root
    paths = sorted(p for p in folder.iterdir()
                   if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in DATA_SUFFIXES)
    paths = [p for p in paths if p.suffix.lower() != ".txt" or _is_csv_export(p)]  # notes stay out
    if names is not None:
        paths = [p for p in paths if p.stem in names]
    stems: dict[str, Path] = {}
    for p in paths:
        other = stems.setdefault(p.stem.lower(), p)
        if other is not p:
            raise NightlinkError(f"{other.name} and {p.name} would be the same person; keep one "
                                 f"file per person in {folder}.")
    if not paths:
        raise NightlinkError(f"No CGM files (timestamp,glucose_value_mg_dl CSVs or CGM exports) "
                             f"in {folder}.")
    people = [load_person(p, tz, date_order) for p in paths]
    return [p for p in people if p is not None]


events = low_events
