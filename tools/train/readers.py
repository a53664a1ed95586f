"""Readers for public datasets, so users with access can retrain on real data.

- Walch et al. 2019, "Sleep stage prediction with raw acceleration and photoplethysmography
  heart rate data derived from a consumer wearable device" (PhysioNet `sleep-accel`):
  `motion/{id}_acceleration.txt` (seconds, x, y, z in g, space-separated),
  `heart_rate/{id}_heartrate.txt` (seconds,bpm), `labels/{id}_labeled_sleep.txt`
  (seconds stage: 0 wake, 1-4 N1-N4, 5 REM, -1 unscored), times relative to the PSG start,
  one label per 30-s epoch. Read leniently for others' recordings in that layout: any of
  space, comma, semicolon or tab between numbers, acceleration in g, m/s², 1/64 g or mg,
  the heart-rate file optional, stages as names, or numbered 0-4 with 4 REM when a night
  has no 5 (said).
- DREAMT (PhysioNet `dreamt`, an Empatica E4 at a sleep clinic's PSG):
  `data_64Hz/<id>_whole_df.csv`, read as it is published (dreamt_night).
- OhioT1DM (Marling & Bunescu 2020) XML: `<patient id=…><glucose_level><event ts="DD-MM-YYYY
  HH:MM:SS" value="mg/dL"/>…`.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from datetime import datetime
from pathlib import Path

import numpy as np

from nightlink.edge.features.reducers import MOVEMENT_COUNTS
from nightlink.errors import NightlinkError
from nightlink.tools.train.glucose_data import CgmSeries
from nightlink.tools.train.nights import Night, input_names

# Walch PSG labels -> Wake/Light/Deep/REM (N3 and the older N4 both deep).
_WALCH_STAGE = {0: 0, 1: 1, 2: 1, 3: 2, 4: 2, 5: 3}


def _table(path: Path, sep: str | None, columns: int) -> np.ndarray:
    """The file's rows of numbers, their first `columns` values, finite ones only; lines that
    are no such row (a header, a line cut short at the end) are passed over."""
    try:
        rows = np.loadtxt(path, delimiter=sep, ndmin=2)
    except OSError as exc:
        raise NightlinkError(f"Cannot read {path}: {exc}.") from None
    except ValueError:  # not all lines are rows of numbers: take those that are
        rows = _numeric_rows(path, sep, columns)
    if rows.size and rows.shape[1] < columns:
        raise NightlinkError(f"Cannot read {path}: {columns} columns are needed, it has "
                             f"{rows.shape[1]}.")
    rows = rows[:, :columns] if rows.size else np.zeros((0, columns))
    return rows[np.isfinite(rows).all(axis=1)]


def _numeric_rows(path: Path, sep: str | None, columns: int) -> np.ndarray:
    out = []
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                cells = line.split(sep)
                if len(cells) < columns:
                    continue
                try:
                    out.append([float(c) for c in cells[:columns]])
                except ValueError:
                    continue
    except OSError as exc:
        raise NightlinkError(f"Cannot read {path}: {exc}.") from None
    return np.array(out, dtype=np.float64).reshape(-1, columns)


_LABELS_SUFFIX = "_labeled_sleep.txt"
# What a still wrist reads as the magnitude of its acceleration, by unit: g (Apple Watch,
# Walch 2019; Axivity), m/s² (phones, Android wear) and mg (ActiGraph raw, some GENEActiv).
_ACCELERATION_UNITS = (("g", 1.0, (0.5, 2.0)), ("m/s²", 1 / 9.80665, (5.0, 20.0)),
                       ("1/64 g (Empatica E4)", 1 / 64, (32.0, 128.0)),
                       ("mg", 1 / 1000, (500.0, 2000.0)))


def walch_subjects(root: Path) -> list[str]:
    """Every subject with a labels file (its id may hold underscores: S_1001)."""
    return sorted(p.name[:-len(_LABELS_SUFFIX)]
                  for p in (Path(root) / "labels").glob(f"*{_LABELS_SUFFIX}"))


SEPARATORS = (None, ",", ";", "\t")  # white space first, as the layout writes
SAMPLE_LINES = 200  # lines looked at to tell the separator


def _any_separator(path: Path, columns: int) -> np.ndarray:
    """A table of numbers separated by white space, commas, semicolons or tabs (as exported):
    the separator that splits the most of the file's first lines into `columns` numbers,
    then the file read once with it."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            sample = [line for _, line in zip(range(SAMPLE_LINES), fh, strict=False)]
    except OSError as exc:
        raise NightlinkError(f"Cannot read {path}: {exc}.") from None

    def rows_split(sep: str | None) -> int:
        return sum(1 for line in sample if len(cells := line.split(sep)) >= columns
                   and _all_numbers(cells[:columns]))

    best = max(SEPARATORS, key=rows_split)  # (the first of equals: white space)
    if not rows_split(best):  # no line has the columns: say how many it has, if numbers
        widths = [len(line.split(sep)) for sep in SEPARATORS for line in sample
                  if _all_numbers(line.split(sep))]
        if widths:
            raise NightlinkError(f"Cannot read {path}: {columns} columns are needed, it has "
                                 f"{max(widths)}.")
    return _table(path, best, columns)


def _all_numbers(cells: list[str]) -> bool:
    try:
        return bool(cells) and all(np.isfinite(float(c)) for c in cells)
    except ValueError:
        return False


# Stages written as text (AASM names, as many scorers export them) -> the layout's numbers.
_STAGE_NAMES = {"w": 0, "wake": 0, "n1": 1, "s1": 1, "n2": 2, "s2": 2, "n3": 3, "s3": 3,
                "n4": 4, "s4": 4, "r": 5, "rem": 5}


def _stage_rows(path: Path) -> tuple[np.ndarray, bool]:
    """((seconds, stage number) rows of a labels file, whether its stages were numbers):
    stages as the layout's numbers or as text (W, N1-N4, R or REM; anything else unscored)."""
    rows = _any_separator(path, 2)
    if rows.size:
        return rows, True
    out = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            cells = line.replace(",", " ").replace(";", " ").split()
            if len(cells) < 2:
                continue
            try:
                t = float(cells[0])
            except ValueError:
                continue  # a header
            out.append((t, _STAGE_NAMES.get(cells[1].strip().lower(), -1)))
    return np.array(out, dtype=np.float64).reshape(-1, 2), False


def acceleration_in_g(acc: np.ndarray, notes: list[str] | None = None) -> np.ndarray:
    """Acceleration rows (t, x, y, z) in time order with x, y, z in g whatever the unit they
    came in: the gravity a wrist's recording holds (the median size of its 30-s mean vectors)
    is 1 g, 9.8 m/s² or 1000 mg. Another size, or none (gravity removed), is refused rather
    than scored as if it were g."""
    if not acc.size:
        return np.zeros((0, 4))
    # Gravity, not the samples: the median size of each 30 s's mean vector (a restless night
    # of gravity-free samples can have a median sample size of 1, its gravity none).
    acc = acc[np.argsort(acc[:, 0], kind="stable")]  # (a new array: the caller's stays)
    epoch = np.floor(acc[:, 0] / 30.0)
    starts = np.flatnonzero(np.r_[True, epoch[1:] != epoch[:-1]])
    means = np.add.reduceat(acc[:, 1:4], starts, axis=0) / np.diff(np.r_[starts, len(acc)])[:, None]
    median = float(np.median(np.sqrt((means ** 2).sum(axis=1))))
    if median < 0.2 * min(lo for _u, _s, (lo, _h) in _ACCELERATION_UNITS):
        raise NightlinkError(f"the acceleration holds no gravity (its 30-s means are "
                             f"{median:.3g} in size): give the raw acceleration, with gravity, "
                             "as the watch recorded it.")
    for unit, scale, (lo, hi) in _ACCELERATION_UNITS:
        if lo <= median <= hi:
            if scale != 1.0:
                acc[:, 1:4] *= scale
                if notes is not None:
                    notes.append(f"acceleration read as {unit} (gravity reads {median:.3g})")
            return acc
    raise NightlinkError(f"the acceleration's gravity reads {median:.3g}: not g, m/s², "
                         "1/64 g or mg (1, 9.8, 64 or 1000); check the file's unit.")


def walch_night(root: Path, subject: str, notes: list[str] | None = None) -> Night:
    """A Walch subject as a training table: scored epochs only, wearable features from the
    watch's heart rate and acceleration (acceleration in g, m/s² or mg; without a heart-rate
    file the heart rate is missing, NaN); audio and room missing (NaN). Files may separate
    their numbers by spaces, commas, semicolons or tabs."""
    root = Path(root)
    labels, numbered = _stage_rows(root / "labels" / f"{subject}{_LABELS_SUFFIX}")
    hr_file = root / "heart_rate" / f"{subject}_heartrate.txt"
    hr = np.zeros((0, 2))
    if not hr_file.exists():
        if notes is not None:
            notes.append(f"no heart_rate/{hr_file.name}")
    else:
        try:
            hr = _any_separator(hr_file, 2)
        except NightlinkError as exc:  # a broken heart-rate file: the motion still counts
            if notes is not None:
                notes.append(f"heart rate not read ({str(exc).rstrip('.')})")
    acc = acceleration_in_g(_any_separator(root / "motion" / f"{subject}_acceleration.txt", 4),
                            notes)
    return wrist_night(f"walch#{subject}", labels, hr, acc, notes,
                       f"labels/{subject}{_LABELS_SUFFIX}", numbered)


LABEL_SPACING_S = (25.0, 35.0)  # one label per 30-s epoch, give or take a clock's drift


def wrist_night(patient: str, labels: np.ndarray, hr: np.ndarray, acc: np.ndarray,
                notes: list[str] | None, where: str, numbered: bool = True) -> Night:
    """A wrist night as a training table from its PSG labels (seconds, stage number as the
    Walch layout numbers them), heart rate (seconds, bpm; may be empty) and acceleration
    (seconds, x, y, z in g). Labels must come one per 30-s epoch (a label per second would
    count each epoch 30 times); a night whose stages are `numbered` with a 4 and no 5
    numbers them 0-4 (W, N1, N2, N3, REM), and its 4 is read as REM, said in `notes` (a
    stage named N4 is N4)."""
    if labels.shape[0] > 1:
        spacing = float(np.median(np.diff(np.sort(labels[:, 0]))))
        if not LABEL_SPACING_S[0] <= spacing <= LABEL_SPACING_S[1]:
            raise NightlinkError(f"{where} has a label every {spacing:g} s; one label per 30-s "
                                 "epoch is read (the time its epoch starts, and its stage).")
    stages = {int(st) for _t, st in labels}
    if numbered and 4 in stages and 5 not in stages:
        labels = labels.copy()
        labels[labels[:, 1] == 4, 1] = 5
        if notes is not None:
            notes.append("stage 4 read as REM: the night has no stage 5, so its stages are "
                         "numbered 0-4 (W, N1, N2, N3, REM)")
    keep = [(t, int(s)) for t, s in labels if int(s) in _WALCH_STAGE and t >= 0]
    if not keep:
        raise NightlinkError(f"{where} holds no scored epoch (stages numbered 0 wake, 1-4, "
                             "5 REM, or named W, N1-N4, R).")
    n = len(keep)
    names = input_names()
    x = np.full((n, len(names)), np.nan, dtype=np.float32)
    col = {name: i for i, name in enumerate(names)}
    hr = hr[np.argsort(hr[:, 0], kind="stable")] if hr.size else np.zeros((0, 2))
    mag = np.sqrt((acc[:, 1:4] ** 2).sum(axis=1))
    starts = np.array([t for t, _s in keep], dtype=np.float64)
    # Each epoch's samples by their sorted times: a night of 50 Hz rows in a second.
    h_lo, h_hi = np.searchsorted(hr[:, 0], starts), np.searchsorted(hr[:, 0], starts + 30)
    a_lo, a_hi = np.searchsorted(acc[:, 0], starts), np.searchsorted(acc[:, 0], starts + 30)
    for k in range(n):
        h = hr[h_lo[k]:h_hi[k], 1]
        if h.size:
            x[k, col["wearable.hr_mean_bpm"]] = h.mean()
            x[k, col["wearable.hr_min_bpm"]] = h.min()
            x[k, col["wearable.hr_max_bpm"]] = h.max()
        m = mag[a_lo[k]:a_hi[k]]
        if m.size:
            # Activity as the summed deviation of the magnitude from its median over the
            # epoch (so a watch whose still reading is 1.02 g counts no motion), in 0.01 g
            # per second of samples: an actigraphy proxy; movement as the edge calls it.
            activity = min(float(np.abs(m - np.median(m)).sum() * 100 / max(m.size / 30, 1)),
                           32000.0)
            x[k, col["wearable.activity_count"]] = activity
            x[k, col["wearable.movement"]] = 1.0 if activity >= MOVEMENT_COUNTS else 0.0
    stage = np.array([_WALCH_STAGE[s] for _t, s in keep], dtype=np.int8)
    z = np.zeros(n, dtype=np.uint8)
    return Night(seed=-1, patient=patient, first_epoch=0, x=x, stage=stage,
                 snore=z, resp=z, desat3=z, desat4=z, events=np.zeros((0, 3)), ahi_truth=0.0)


MIN_COVERAGE = 0.5  # share of a night's scored epochs that must have the signal


def wrist_coverage(night: Night, signal: str = "acceleration") -> str | None:
    """Why a wrist night cannot be scored with this signal ("acceleration" or "heart rate"):
    present in under half of its scored epochs (an empty or cut-short file, or no file);
    None when it can."""
    name = {"acceleration": "wearable.activity_count", "heart rate": "wearable.hr_mean_bpm"}
    column = input_names().index(name[signal])
    share = float(np.isfinite(night.x[:, column]).mean()) if night.x.size else 0.0
    return f"{signal} in {share:.0%} of its scored epochs" if share < MIN_COVERAGE else None


def ohio_patient(path: Path) -> tuple[str, ET.Element]:
    """(patient id, root element) of an OhioT1DM XML file; refused when it is none."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError, LookupError, ValueError) as exc:  # (an unknown encoding)
        raise NightlinkError(f"Cannot read OhioT1DM file {path}: {exc}.") from None
    if root.tag != "patient" or root.find("glucose_level") is None:
        raise NightlinkError(f"{path} is not an OhioT1DM patient file (no <glucose_level>).")
    return root.get("id", "?"), root


def _ohio_events(path: Path, root: ET.Element, kind: str,
                 value: str) -> list[tuple[datetime, float]]:
    """(local clock time, value) of each event under <kind>, in the file's order."""
    node = root.find(kind)
    out = []
    for ev in node.findall("event") if node is not None else []:
        try:
            out.append((datetime.strptime(ev.get("ts", ""), "%d-%m-%Y %H:%M:%S"),
                        float(ev.get(value, ""))))
        except ValueError:
            raise NightlinkError(f"{path}: bad {kind.split('_')[0]} event "
                                 f"{ET.tostring(ev).decode().strip()}") from None
    return out


def ohio_readings(path: Path) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    """(patient id, minutes since 1970 on the local clock, mg/dL, minutes of meals with
    carbs) of an OhioT1DM XML file, in the file's order."""
    pid, root = ohio_patient(path)
    origin = datetime(1970, 1, 1)

    def minutes(events):
        return np.array([int((t - origin).total_seconds() // 60) for t, _v in events],
                        dtype=np.int64)

    glucose = _ohio_events(path, root, "glucose_level", "value")
    meals = [(t, v) for t, v in _ohio_events(path, root, "meal", "carbs") if v > 0]
    return (pid, minutes(glucose), np.array([v for _t, v in glucose], dtype=np.float64),
            minutes(meals))


def ohio_series(path: Path, gap_min: float = 5.0) -> list[CgmSeries]:
    """CGM runs of an OhioT1DM XML file on a 5-minute grid (0 where a reading is missing);
    a run ends at a gap longer than an hour. Reference glucose is the sensor itself here."""
    pid, root = ohio_patient(path)
    pts = sorted((t.timestamp(), v) for t, v in _ohio_events(path, root, "glucose_level", "value"))
    runs, cur = [], []
    for t, v in pts:
        if cur and t - cur[-1][0] > 3600:
            runs.append(cur)
            cur = []
        cur.append((t, v))
    if cur:
        runs.append(cur)
    out = []
    for k, run in enumerate(runs):
        t0 = run[0][0]
        n = int(round((run[-1][0] - t0) / (gap_min * 60))) + 1
        sgv = np.zeros(n, dtype=np.int16)
        for t, v in run:
            sgv[int(round((t - t0) / (gap_min * 60)))] = int(round(min(max(v, 40), 400)))
        out.append(CgmSeries(f"ohio#{pid}", k, sgv, np.where(sgv > 0, sgv, 400).astype(np.float32)))
    return out


# -- DREAMT (Wang et al., PhysioNet `dreamt`): an Empatica E4 on the wrist during a sleep
# clinic's PSG, one file per participant, data_64Hz/<SID>_whole_df.csv with the columns
# TIMESTAMP (s from the E4's start), BVP, ACC_X/Y/Z (1/64 g), TEMP, EDA, HR (bpm, 1 Hz held),
# IBI, Sleep_Stage (P before the PSG, W, N1, N2, N3, R, Missing) and event flags. The PSG's
# 30-s epochs start at its first row that is not P.
DREAMT_SUFFIX = "_whole_df.csv"
_DREAMT_STAGE = {"W": 0, "N1": 1, "N2": 2, "N3": 3, "N4": 4, "R": 5, "REM": 5}
_DREAMT_UNSCORED = ("P", "MISSING", "")  # before the PSG, and epochs it did not score
_DREAMT_COLUMNS = ("timestamp", "acc_x", "acc_y", "acc_z", "hr", "sleep_stage")
MAX_NIGHT_S = 24 * 3600  # scored rows further apart: a wrong time, not a night


def dreamt_files(root: Path) -> list[Path]:
    """The participants' files of a DREAMT folder (or its data_64Hz folder), by name."""
    root = Path(root)
    folder = root / "data_64Hz" if (root / "data_64Hz").is_dir() else root
    return sorted(p for p in folder.glob(f"*{DREAMT_SUFFIX}") if not p.name.startswith("."))


def dreamt_subject(path: Path) -> str:
    return path.name[:-len(DREAMT_SUFFIX)]


def dreamt_night(path: Path, notes: list[str] | None = None) -> Night:
    """A DREAMT participant as a wrist night: acceleration, heart rate where the E4 gave one,
    and the PSG's stages, one per 30-s epoch from its first row that is not P (unscored:
    Missing, and anything else)."""
    import csv
    from array import array

    try:
        with open(path, newline="", encoding="utf-8-sig", errors="replace") as fh:
            rows = csv.reader(fh)
            header = [h.strip().lower() for h in next(rows, [])]
            missing = [c for c in _DREAMT_COLUMNS if c not in header]
            if missing:
                raise NightlinkError(f"{path.name} has no column {', '.join(missing)} (DREAMT's "
                                     "data_64Hz files have TIMESTAMP, ACC_X, ACC_Y, ACC_Z, HR "
                                     "and Sleep_Stage).")
            at = [header.index(c) for c in _DREAMT_COLUMNS]
            acc, hr, stage_t, stages = array("d"), [], [], []  # acc: t, x, y, z flat
            second, last_stage, bad = None, None, 0
            for row in rows:
                try:
                    t, x, y, z = (float(row[i]) for i in at[:4])
                except (ValueError, IndexError):
                    bad += 1
                    continue
                if not math.isfinite(t):
                    bad += 1
                    continue
                acc.extend((t, x, y, z))
                if int(t) != second:  # heart rate once a second (it is held at 1 Hz)
                    second = int(t)
                    try:
                        hr.append((t, float(row[at[4]])))
                    except (ValueError, IndexError):
                        pass
                label = row[at[5]].strip().upper() if len(row) > at[5] else ""
                if label != last_stage:
                    stage_t.append(t)
                    stages.append(label)
                    last_stage = label
    except OSError as exc:
        raise NightlinkError(f"Cannot read {path}: {exc}.") from None
    if bad and notes is not None:
        notes.append(f"{bad} rows of {path.name} without a time and acceleration left out")
    begun = [k for k, s in enumerate(stages) if s != "P"]
    scored = [k for k in begun if stages[k] in _DREAMT_STAGE]
    if not acc or not scored:
        raise NightlinkError(f"{path.name} has no row scored by the PSG (Sleep_Stage W, N1, "
                             "N2, N3 or R).")
    changes = np.array(stage_t)
    acc_rows = np.frombuffer(acc, dtype=np.float64).reshape(-1, 4).copy()
    # from the PSG's start to the end of its last scored stage (a wrong time after it, or
    # Missing rows to the end of the file, do not stretch the night)
    t0 = changes[begun[0]]
    t_end = (changes[scored[-1] + 1] if scored[-1] + 1 < len(changes)
             else float(acc_rows[-1, 0]))  # the file's last row (a wrong time inside: no end)
    if not 0 < t_end - t0 <= MAX_NIGHT_S:
        raise NightlinkError(f"{path.name} has scored rows over {(t_end - t0) / 3600:.0f} hours "
                             f"(TIMESTAMP from {t0:g} to {t_end:g} s): a time that is wrong?")
    other = sorted({s for s in stages if s not in _DREAMT_STAGE
                    and s not in _DREAMT_UNSCORED})
    if other and notes is not None:
        notes.append(f"stages {', '.join(repr(s) for s in other[:3])} read as unscored")
    starts = t0 + 30.0 * np.arange(int((t_end - t0) // 30))
    at_start = np.searchsorted(changes, starts, side="right") - 1
    labels = np.c_[starts, [_DREAMT_STAGE.get(stages[k], -1) for k in at_start]]
    hr_rows = np.array(hr, dtype=np.float64).reshape(-1, 2)
    hr_rows = hr_rows[np.isfinite(hr_rows).all(axis=1) & (hr_rows[:, 1] > 0)]
    acc_g = acceleration_in_g(acc_rows[np.isfinite(acc_rows).all(axis=1)], notes)
    return wrist_night(f"dreamt#{dreamt_subject(path)}", labels, hr_rows, acc_g, notes,
                       path.name, numbered=False)
