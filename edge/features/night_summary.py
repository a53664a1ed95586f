"""A night's compact summary from its stored epoch records (kept well under 2 KB as JSON)."""

from __future__ import annotations

import numpy as np

from nightlink.edge.store import EdgeStore
from nightlink.shared import features, units
from nightlink.shared.clinical import APNEA_SILENCE_S, SNORE_RATIO
from nightlink.shared.epoch import EPOCH_S, EPOCHS_PER_HOUR

NIGHT_STREAMS = (features.CGM, features.WEARABLE, features.ROOM, features.AUDIO)


def _column(store: EdgeStore, stream: int, first: int, count: int) -> dict[str, np.ndarray]:
    """Feature name -> float array over the night's epochs, NaN where missing."""
    names = features.names(stream)
    out = np.full((count, len(names)), np.nan)
    for epoch, vals in store.epoch_values(stream, first, first + count).items():
        out[epoch - first] = [np.nan if v is None else v for v in vals]
    return {n: out[:, i] for i, n in enumerate(names)}


def night_columns(store: EdgeStore, first: int, count: int,
                  streams=NIGHT_STREAMS) -> dict[str, dict[str, np.ndarray]]:
    """Stream name -> feature name -> float array over the night's epochs, NaN where missing:
    read once, then shared by the summary and the classifiers."""
    return {features.stream(s)[features.S_NAME]: _column(store, s, first, count) for s in streams}


def _r(x, nd=1):
    x = float(x)
    return None if np.isnan(x) else round(x, nd)


def _stat(a: np.ndarray, fn, nd=1):
    a = a[~np.isnan(a)]
    return _r(fn(a), nd) if a.size else None


def _per_hour(counts: np.ndarray) -> float | None:
    """Events per hour of the epochs that carried the count (oximetry read too sparsely for
    desaturations has none), None when none did."""
    n = int((~np.isnan(counts)).sum())
    if not n:
        return None
    return _r(np.nansum(counts) / (n / EPOCHS_PER_HOUR))


EPOCH_MIN = EPOCH_S / 60


def _minutes(selected: np.ndarray) -> float | None:
    """Minutes of the night's glucose epochs that `selected` marks, None without any."""
    return _r(np.sum(selected) * EPOCH_MIN) if selected.size else None


def summarize_night(store: EdgeStore, first: int, count: int,
                    cols: dict[str, dict[str, np.ndarray]] | None = None) -> dict:
    """The summary; `cols` from night_columns() when the caller has already read the night."""
    hours = count / 120.0
    cov = {}
    cols = cols or night_columns(store, first, count)
    for name, c in cols.items():
        present = np.zeros(count, dtype=bool)
        for a in c.values():
            present |= ~np.isnan(a)
        cov[name] = round(float(present.mean()), 3)

    a, w, g, r = cols["audio"], cols["wearable"], cols["cgm"], cols["room"]
    sil = a["silence_max_s"]
    long_pause = np.nan_to_num(sil) >= APNEA_SILENCE_S
    onsets = int(np.sum(long_pause & ~np.concatenate(([False], long_pause[:-1]))))
    audio_n = int(np.sum(~np.isnan(a["snore_ratio"])))
    glucose = g["glucose_mgdl"]
    valid = ~np.isnan(glucose)
    return {
        "first_epoch": first,
        "epochs": count,
        "coverage": cov,
        "audio": {
            "loud_mean_dbfs": _stat(a["loud_mean_dbfs"], np.median),
            "snore_pct": _r(100.0 * np.sum(np.nan_to_num(a["snore_ratio"]) > SNORE_RATIO)
                            / audio_n) if audio_n else None,
            "apnea_candidates": onsets if audio_n else None,
            "apnea_candidates_per_h": _r(onsets / hours) if audio_n else None,
            "transients": int(np.nansum(a["transient_count"])) if audio_n else None,
        },
        "wearable": {
            "hr_mean": _stat(w["hr_mean_bpm"], np.mean),
            "hr_min": _stat(w["hr_min_bpm"], np.min, 0),
            "rmssd_median": _stat(w["rmssd_ms"], np.median),
            "spo2_mean": _stat(w["spo2_mean_pct"], np.mean),
            "spo2_min": _stat(w["spo2_min_pct"], np.min),
            # None, not 0, without the input (no oximeter, no accelerometer)
            "odi3": _per_hour(w["desat3_count"]),
            "odi4": _per_hour(w["desat4_count"]),
            "movement_epochs": (int(np.nansum(w["movement"]))
                                if (~np.isnan(w["movement"])).any() else None),
        },
        "cgm": {
            "epochs_with_glucose": int(valid.sum()),
            "mean": _stat(glucose, np.mean),
            "min": _stat(glucose, np.min, 0),
            "max": _stat(glucose, np.max, 0),
            # None without glucose: no CGM is no "0 minutes low"
            "below_70_min": _minutes(glucose[valid] < units.LOW),
            "below_54_min": _minutes(glucose[valid] < units.VERY_LOW),
            "above_180_min": _minutes(glucose[valid] > units.HIGH),
            "sensor_error_epochs": int(np.sum(~np.isnan(g["sensor_error"]))),
        },
        "room": {
            "temp_c": [_stat(r["temp_c"], np.min), _stat(r["temp_c"], np.max)],
            "co2_ppm": [_stat(r["co2_ppm"], np.min, 0), _stat(r["co2_ppm"], np.max, 0)],
            "light_lux_max": _stat(r["light_lux"], np.max, 0),
            "noise_dba": [_stat(r["noise_dba"], np.min), _stat(r["noise_dba"], np.max)],
        },
    }
