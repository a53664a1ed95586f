"""Readers for public datasets, so users with access can retrain on real data.

- Walch et al. 2019, "Sleep stage prediction with raw acceleration and photoplethysmography
  heart rate data derived from a consumer wearable device" (PhysioNet `sleep-accel`):
  `motion/{id}_acceleration.txt` (seconds, x, y, z in g, space-separated),
  `heart_rate/{id}_heartrate.txt` (seconds,bpm), `labels/{id}_labeled_sleep.txt`
  (seconds stage: 0 wake, 1-4 N1-N4, 5 REM, -1 unscored), times relative to the PSG start.
- OhioT1DM (Marling & Bunescu 2020) XML: `<patient id=…><glucose_level><event ts="DD-MM-YYYY
  HH:MM:SS" value="mg/dL"/>…`.
"""

from __future__ import annotations

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


def walch_subjects(root: Path) -> list[str]:
    return sorted(p.name.split("_")[0] for p in (Path(root) / "labels").glob("*_labeled_sleep.txt"))


def walch_night(root: Path, subject: str) -> Night:
    """A Walch subject as a training table: scored epochs only, wearable features from the
    watch's heart rate and acceleration; audio and room missing (NaN)."""
    root = Path(root)
    labels = _table(root / "labels" / f"{subject}_labeled_sleep.txt", None, 2)
    hr = _table(root / "heart_rate" / f"{subject}_heartrate.txt", ",", 2)
    acc = _table(root / "motion" / f"{subject}_acceleration.txt", None, 4)
    keep = [(t, int(s)) for t, s in labels if int(s) in _WALCH_STAGE and t >= 0]
    if not keep:
        raise NightlinkError(f"Walch subject {subject} has no scored epochs.")
    n = len(keep)
    names = input_names()
    x = np.full((n, len(names)), np.nan, dtype=np.float32)
    col = {name: i for i, name in enumerate(names)}
    hr = hr[np.argsort(hr[:, 0], kind="stable")] if hr.size else np.zeros((0, 2))
    acc = acc[np.argsort(acc[:, 0], kind="stable")] if acc.size else np.zeros((0, 4))
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
    return Night(seed=-1, patient=f"walch#{subject}", first_epoch=0, x=x, stage=stage,
                 snore=z, resp=z, desat3=z, desat4=z, events=np.zeros((0, 3)), ahi_truth=0.0)


MIN_COVERAGE = 0.5  # share of a night's scored epochs that must have the signal


def wrist_coverage(night: Night) -> str | None:
    """Why a wrist night cannot be scored from motion and heart rate: a signal present in
    under half of its scored epochs (an empty or cut-short file); None when it can."""
    names = input_names()
    for label, name in (("acceleration", "wearable.activity_count"),
                        ("heart rate", "wearable.hr_mean_bpm")):
        share = float(np.isfinite(night.x[:, names.index(name)]).mean()) if night.x.size else 0.0
        if share < MIN_COVERAGE:
            return f"{label} in {share:.0%} of its scored epochs"
    return None


def ohio_series(path: Path, gap_min: float = 5.0) -> list[CgmSeries]:
    """CGM runs of an OhioT1DM XML file on a 5-minute grid (0 where a reading is missing);
    a run ends at a gap longer than an hour. Reference glucose is the sensor itself here."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise NightlinkError(f"Cannot read OhioT1DM file {path}: {exc}.") from None
    node = root.find("glucose_level")
    if root.tag != "patient" or node is None:
        raise NightlinkError(f"{path} is not an OhioT1DM patient file (no <glucose_level>).")
    pts = []
    for ev in node.findall("event"):
        try:
            t = datetime.strptime(ev.get("ts", ""), "%d-%m-%Y %H:%M:%S").timestamp()
            pts.append((t, float(ev.get("value", ""))))
        except ValueError:
            raise NightlinkError(f"{path}: bad glucose event {ET.tostring(ev).decode().strip()}") from None
    pts.sort()
    runs, cur = [], []
    for t, v in pts:
        if cur and t - cur[-1][0] > 3600:
            runs.append(cur)
            cur = []
        cur.append((t, v))
    if cur:
        runs.append(cur)
    out = []
    pid = root.get("id", "?")
    for k, run in enumerate(runs):
        t0 = run[0][0]
        n = int(round((run[-1][0] - t0) / (gap_min * 60))) + 1
        sgv = np.zeros(n, dtype=np.int16)
        for t, v in run:
            sgv[int(round((t - t0) / (gap_min * 60)))] = int(round(min(max(v, 40), 400)))
        out.append(CgmSeries(f"ohio#{pid}", k, sgv, np.where(sgv > 0, sgv, 400).astype(np.float32)))
    return out
