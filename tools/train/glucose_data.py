"""CGM histories and targets for the glucose-risk model, from UVA/Padova virtual patients.

In-silico: each night is the simulator's evening-and-night scenario (some nights over-bolused,
some under) for one of the 30 virtual patients of simglucose. Training uses the 10 adults,
evaluation the 10 adolescents and 10 children, so the model is tested on patients it never saw.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nightlink.edge.features.glucose_risk import HISTORY, HORIZON, filled_rows, history_rows

_LOGGER = logging.getLogger(__name__)
CACHE_VERSION = 1

LOW_MGDL = 70
ADULTS = tuple(f"adult#{i:03d}" for i in range(1, 11))
YOUTH = tuple(f"{g}#{i:03d}" for g in ("adolescent", "child") for i in range(1, 11))


@dataclass
class CgmSeries:
    patient: str
    seed: int
    sgv: np.ndarray  # int: mg/dL, or 0 where the sensor gave no glucose (error code)
    bg: np.ndarray  # float: reference blood glucose


def load_series(patient: str, seed: int, minutes: int, cache: Path | None) -> CgmSeries:
    from nightlink.tools.sim.glucose import simulate_cgm

    path = None
    if cache is not None:
        path = cache / f"cgm-v{CACHE_VERSION}-{patient.replace('#', '')}-{seed}-{minutes}.npz"
        if path.exists():
            z = np.load(path)
            return CgmSeries(patient, seed, z["sgv"], z["bg"])
    night = simulate_cgm(seed, patient, minutes)
    sgv = np.where(night.valid, night.sgv, 0).astype(np.int16)
    out = CgmSeries(patient, seed, sgv, night.bg_true.astype(np.float32))
    if path is not None:
        cache.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, sgv=out.sgv, bg=out.bg)
    return out


def load_set(patients, seeds, minutes: int, cache: Path | None) -> list[CgmSeries]:
    out = []
    for p in patients:
        for s in seeds:
            out.append(load_series(p, s, minutes, cache))
    return out


@dataclass
class Samples:
    x: np.ndarray  # float32 [n, HISTORY] mg/dL, gaps filled
    low30: np.ndarray  # uint8 [n]: reference glucose < 70 at some point in the next 30 minutes
    future: np.ndarray  # float32 [n]: sensor reading 30 minutes ahead (NaN if missing)
    series: np.ndarray  # int32 [n]: index of the series
    index: np.ndarray  # int32 [n]: reading index within the series


def samples(series: list[CgmSeries]) -> Samples:
    xs, lows, fut, sid, idx = [], [], [], [], []
    for k, s in enumerate(series):
        rows, at = filled_rows(history_rows(s.sgv[:-HORIZON]))
        for h, i in zip(rows, at, strict=True):
            xs.append(h)
            lows.append(1 if s.bg[i + 1:i + 1 + HORIZON].min() < LOW_MGDL else 0)
            f = s.sgv[i + HORIZON]
            fut.append(float(f) if f > 0 else np.nan)
            sid.append(k)
            idx.append(i)
    return Samples(np.array(xs, dtype=np.float32).reshape(-1, HISTORY),
                   np.array(lows, dtype=np.uint8),
                   np.array(fut, dtype=np.float32), np.array(sid, dtype=np.int32),
                   np.array(idx, dtype=np.int32))
