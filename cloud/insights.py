"""Insights across nights, done so a reader can judge them: associations between what happened
in a night or an evening (sleep, breathing, the room, evening carbs, exercise) and glucose that
night, the next day and the next night, each with its effect size, n, 95 % interval and a
Benjamini-Hochberg q-value over every association tested together; glucose patterns that
recur (motifs of the matrix profile) and glucose stretches unlike any other (its discords);
nights unlike the others (modified z-scores); and "not enough nights" below the minimum
instead of a number.

The nights come from the same fused nights as the doctor's report and the morning card
(cloud/reports/summary.py night_row), so all three agree. The matrix profile is computed here
with NumPy (z-normalised Euclidean distance, STOMP's row update, the exclusion zone of m/4
that STUMPY uses); tests compare it with STUMPY itself. Definitions: docs/insights.md.
"""

from __future__ import annotations

import math
import statistics
from datetime import date, datetime, timedelta
from datetime import time as dtime

import numpy as np

from nightlink.cloud import fusion, glycemia
from nightlink.cloud.reports import stats
from nightlink.cloud.reports.settings import PatientSettings, patient_night
from nightlink.cloud.reports.summary import PREDICTORS, newest_time, night_row
from nightlink.cloud.store import TenantStore
from nightlink.nights import boundary_of, sleep_span
from nightlink.nightscout.properties import MAX_CARBS_G  # more in a treatment is no meal
from nightlink.shared import units
from nightlink.shared.epoch import NOON_MIN

MIN_NIGHTS = 10  # associations and unusual nights need at least this many nights with data
FDR_Q = 0.05
GRID_MIN = 5  # the CGM grid of the pattern search
MOTIF_HOURS = 2.0  # the length of a glucose pattern
MAX_GAP_MIN = 15  # gaps up to this long are interpolated; longer ones break a pattern
MOTIFS = 3
MIN_DAYS_PATTERNS = 7
MAX_DAYS_PATTERNS = 30  # the search is quadratic in its length: the last 30 days at most
UNUSUAL_Z = 3.5  # modified z-score above which a figure is unusual (Iglewicz and Hoaglin)
EVENING = (dtime(17, 0), dtime(23, 59, 59))  # evening carbs: from 17:00 to midnight
DAY = (7, 22)  # the next day's glucose: 07:00-22:00 local
# A day sleeper's (nights not noon to noon): the same spans around their own sleep
BEFORE_BED_H = 7  # carbs in the 7 hours before bedtime (17:00-24:00 before a midnight bedtime)
AFTER_WAKE_H = 15  # glucose in the 15 hours after waking (07:00-22:00 after a 07:00 wake)
DAY_SLEEPER_LABELS = {"evening_carbs_g": "Carbs in the 7 h before bed",
                      "next_day_mean": "Mean glucose the 15 h after waking",
                      "next_day_tir": "Time in range the 15 h after waking (%)"}

# (key, label, unit, step the slope is given per): the report's night factors, labelled as
# the report labels them, and what only the insights look at.
FACTORS = PREDICTORS + (
    ("odi3", "ODI 3 %", "events/h", 10),
    ("snore_pct", "Snoring", "%", 10),
    ("noise_max", "Bedroom noise (max)", "dBA", 10),
    ("evening_carbs_g", "Evening carbs (17-24 h)", "g", 10),
    ("exercise_min", "Exercise that day", "min", 30),
)
OUTCOMES = (  # (key, label, what the lag is)
    ("noct_mean", "Mean glucose that night", "same night"),
    ("next_day_mean", "Mean glucose the next day (7-22 h)", "next day"),
    ("next_day_tir", "Time in range the next day (%)", "next day"),
    ("next_night_mean", "Mean glucose the next night", "next night"),
)
UNUSUAL_FIGURES = ("tst_min", "se_pct", "waso_min", "ahi", "odi3", "snore_pct", "noct_mean",
                   "noct_sd", "temp_c", "co2_max", "noise_max")
UNUSUAL_LABELS = {  # figure: (words, unit; "glucose" and "glucose spread" in the reader's unit)
    "tst_min": ("sleep time", "min"), "se_pct": ("sleep efficiency", "%"),
    "waso_min": ("awake after falling asleep", "min"), "ahi": ("AHI", "events/h"),
    "odi3": ("ODI 3 %", "events/h"), "snore_pct": ("snoring", "% of the night"),
    "noct_mean": ("mean glucose asleep", "glucose"),
    "noct_sd": ("glucose spread asleep (SD)", "glucose spread"),
    "temp_c": ("bedroom temperature", "°C"), "co2_max": ("bedroom CO₂ (max)", "ppm"),
    "noise_max": ("bedroom noise (max)", "dBA"),
}


# -- the nights -----------------------------------------------------------------------------


def _local_ms(day: date, at: dtime, ps: PatientSettings) -> int:
    return int(datetime.combine(day, at, ps.tz).timestamp() * 1000)


def night_rows(data: TenantStore, ps: PatientSettings, end_night: str, nights: int) -> list[dict]:
    """night_row() of each calendar night ending with end_night, oldest first (None figures
    where there is no data), with the evening's carbs, the day's exercise and the next day's
    glucose."""
    last = date.fromisoformat(end_night)
    days = [last - timedelta(days=nights - 1 - i) for i in range(nights)]
    lo = _local_ms(days[0], dtime(0), ps)
    hi = _local_ms(last + timedelta(days=3), dtime(0), ps)
    readings = fusion.load_glucose(data, lo, hi)
    treatments = data.treatments(lo, hi)
    rows = []
    for day in days:
        doc = patient_night(data, ps, day.isoformat())
        row = night_row(doc) if doc["has_data"] else {"night": day.isoformat(),
                                                        "has_data": False}
        evening, after = _spans(day, ps)
        row["evening_carbs_g"] = _carbs(treatments, *evening)
        row["exercise_min"] = _exercise(treatments, _local_ms(day, dtime(0), ps),
                                        _local_ms(day + timedelta(days=1), dtime(0), ps))
        span = [(t, g) for t, g in readings if after[0] <= t < after[1]]
        s = glycemia.summary(span)
        row["next_day_mean"] = s["mean"] if s and s["n"] >= 72 else None  # >= 6 h of readings
        row["next_day_tir"] = (glycemia.bands(span)["in_range"]
                               if s and s["n"] >= 72 else None)
        rows.append(row)
    for a, b in zip(rows, rows[1:], strict=False):
        a["next_night_mean"] = b.get("noct_mean")
    if rows:
        rows[-1]["next_night_mean"] = None
    return rows


def _spans(day: date, ps: PatientSettings) -> tuple[tuple[int, int], tuple[int, int]]:
    """[lo, hi) Unix ms of the night's evening (its carbs) and of the day after it (its
    glucose): 17:00-24:00 of its date and 07:00-22:00 of the next; for a day sleeper the 7
    hours before their bedtime and the 15 after their wake time."""
    sleep = ps.sleep_of(day.isoformat())
    if sleep is None or boundary_of(sleep) == NOON_MIN:
        nxt = day + timedelta(days=1)
        return ((_local_ms(day, EVENING[0], ps), _local_ms(day, EVENING[1], ps)),
                (_local_ms(nxt, dtime(DAY[0]), ps), _local_ms(nxt, dtime(DAY[1]), ps)))
    bed_s, wake_s = sleep_span(day.isoformat(), sleep, ps.tz)
    return ((int((bed_s - BEFORE_BED_H * 3600) * 1000), int(bed_s * 1000)),
            (int(wake_s * 1000), int((wake_s + AFTER_WAKE_H * 3600) * 1000)))


def _carbs(treatments: list[dict], lo: int, hi: int) -> float | None:
    """Grams of carbs entered in [lo, hi); None when nothing at all was entered that day (a
    missing log is not a meal-free evening)."""
    if not treatments:
        return None
    return float(sum(_num(t.get("carbs"), MAX_CARBS_G) for t in treatments
                     if lo <= _ms(t) < hi))


def _exercise(treatments: list[dict], lo: int, hi: int) -> float | None:
    if not treatments:
        return None
    return float(sum(_num(t.get("duration"), MAX_EXERCISE_MIN) for t in treatments
                     if lo <= _ms(t) < hi
                     and "exercise" in str(t.get("eventType", "")).lower()))


MAX_EXERCISE_MIN = 1440.0


def _num(v, most: float) -> float:
    """A positive amount up to `most`; 0 for anything else."""
    try:
        x = float(v)
    except (TypeError, ValueError, OverflowError):
        return 0.0
    return x if math.isfinite(x) and 0 < x <= most else 0.0


def _ms(t: dict) -> int:
    return t["mills"]  # the store's own time of the row (TenantStore.treatments)


# -- associations ---------------------------------------------------------------------------


def associations(rows: list[dict], labels: dict[str, str] | None = None) -> dict:
    """Every factor against every outcome, with BH q-values over the estimable rows;
    `labels` names some figures otherwise (a day sleeper's evening and next day)."""
    labels = labels or {}
    have = sum(1 for r in rows if r.get("has_data"))
    out = {"min_nights": MIN_NIGHTS, "nights": have, "fdr_q": FDR_Q, "rows": []}
    if have < MIN_NIGHTS:
        out["status"] = f"not enough nights: {have} with data, {MIN_NIGHTS} needed"
        return out
    for fk, flabel, funit, step in FACTORS:
        for ok, olabel, lag in OUTCOMES:
            res = fusion.pearson([r.get(fk) for r in rows], [r.get(ok) for r in rows])
            row = {"factor": fk, "factor_label": labels.get(fk, flabel), "factor_unit": funit,
                   "step": step, "outcome": ok, "outcome_label": labels.get(ok, olabel),
                   "lag": lag, "n": res["n"],
                   "r": res["r"], "r_ci": res["ci"], "p": None, "q": None,
                   "slope_per_step": None, "slope_ci_per_step": None,
                   "outcome_unit": "%" if ok.endswith("_tir") else units.MGDL}
            if res["r"] is not None and res["n"] >= MIN_NIGHTS:
                row["p"] = stats.pearson_p(res["r"], res["n"])
                row["slope_per_step"] = res["slope"] * step
                row["slope_ci_per_step"] = [v * step for v in stats.slope_ci(
                    res["r"], res["slope"], res["n"])]
            out["rows"].append(row)
    tested = [r for r in out["rows"] if r["p"] is not None]
    for row, q in zip(tested, stats.bh_qvalues([r["p"] for r in tested]), strict=True):
        row["q"] = q
    out["tested"] = len(tested)
    out["status"] = "ok"
    out["rows"].sort(key=lambda r: (r["q"] is None, r["q"] if r["q"] is not None else 1.0))
    return out


# -- unusual nights ---------------------------------------------------------------------------


def unusual_nights(rows: list[dict]) -> dict:
    """Nights with a figure whose modified z-score (0.6745 (x - median) / MAD) is above
    UNUSUAL_Z among the nights that have that figure."""
    have = [r for r in rows if r.get("has_data")]
    out = {"min_nights": MIN_NIGHTS, "threshold": UNUSUAL_Z, "nights": []}
    if len(have) < MIN_NIGHTS:
        out["status"] = f"not enough nights: {len(have)} with data, {MIN_NIGHTS} needed"
        return out
    found: dict[str, list[dict]] = {}
    for key in UNUSUAL_FIGURES:
        values = [(r["night"], r[key]) for r in have if r.get(key) is not None]
        if len(values) < MIN_NIGHTS:
            continue
        xs = [v for _, v in values]
        med = statistics.median(xs)
        mad = statistics.median(abs(x - med) for x in xs)
        if mad == 0:
            continue
        for night, x in values:
            z = 0.6745 * (x - med) / mad
            if abs(z) > UNUSUAL_Z:
                found.setdefault(night, []).append({"figure": key, "value": round(x, 1),
                                                    "median": round(med, 1),
                                                    "z": round(z, 1)})
    out["nights"] = [{"night": n, "figures": f} for n, f in sorted(found.items())]
    out["status"] = "ok"
    return out


# -- glucose patterns: the matrix profile ---------------------------------------------------


def glucose_grid(readings: list[tuple[int, float]], step_min: int = GRID_MIN,
                 max_gap_min: int = MAX_GAP_MIN) -> tuple[int, np.ndarray]:
    """(first time ms, values) on a regular grid, linear between readings no further apart
    than max_gap_min, NaN elsewhere."""
    pts = glycemia.glucose(readings)
    if len(pts) < 2:
        return 0, np.zeros(0)
    t = np.array([p[0] for p in pts], dtype=float)
    g = np.array([p[1] for p in pts], dtype=float)
    step = step_min * 60_000
    grid = np.arange(t[0], t[-1] + 1, step)
    vals = np.interp(grid, t, g)
    k = np.searchsorted(t, grid, side="right")
    gap = np.where((k > 0) & (k < len(t)), t[np.minimum(k, len(t) - 1)] - t[np.maximum(k - 1, 0)],
                   0.0)
    vals[gap > max_gap_min * 60_000] = np.nan
    return int(t[0]), vals


def matrix_profile(x: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Self-join matrix profile of x for subsequences of length m: (distance to the nearest
    non-trivial match, its index); inf and -1 where a subsequence holds NaN or is flat."""
    n = len(x) - m + 1
    if n < 2:
        return np.full(max(n, 0), np.inf), np.full(max(n, 0), -1)
    valid = np.ones(n, dtype=bool)
    nan = np.isnan(x)
    if nan.any():
        c = np.concatenate([[0], np.cumsum(nan)])
        valid &= (c[m:] - c[:-m]) == 0
    t = np.where(nan, 0.0, x)
    csum = np.concatenate([[0.0], np.cumsum(t)])
    csum2 = np.concatenate([[0.0], np.cumsum(t * t)])
    mu = (csum[m:] - csum[:-m]) / m
    sig = np.sqrt(np.maximum((csum2[m:] - csum2[:-m]) / m - mu * mu, 0.0))
    valid &= sig > 1e-8
    excl = int(math.ceil(m / 4))
    profile = np.full(n, np.inf)
    index = np.full(n, -1)
    qt_first = np.array([t[i:i + m] @ t[:m] for i in range(n)])  # row 0 (and column 0)
    qt = qt_first.copy()
    for i in range(n):
        if i > 0:
            qt[1:] = qt[:-1] - t[:n - 1] * t[i - 1] + t[m:m + n - 1] * t[i + m - 1]
            qt[0] = qt_first[i]
        if not valid[i]:
            continue
        with np.errstate(divide="ignore", invalid="ignore"):  # flat ones are masked below
            corr = (qt - m * mu * mu[i]) / (m * sig * sig[i])
        d = np.sqrt(np.maximum(2.0 * m * (1.0 - corr), 0.0))
        d[~valid] = np.inf
        d[max(0, i - excl):min(n, i + excl + 1)] = np.inf
        j = int(np.argmin(d))
        profile[i], index[i] = d[j], (j if np.isfinite(d[j]) else -1)
    return profile, index


def _distance_profile(x: np.ndarray, m: int, i: int) -> np.ndarray:
    n = len(x) - m + 1
    q = x[i:i + m]
    qz = (q - q.mean()) / q.std()
    out = np.full(n, np.inf)
    for j in range(n):
        w = x[j:j + m]
        if np.isnan(w).any() or w.std() < 1e-8:
            continue
        out[j] = np.linalg.norm((w - w.mean()) / w.std() - qz)
    return out


def patterns(readings: list[tuple[int, float]], ps: PatientSettings) -> dict:
    """Recurring glucose shapes (motifs) and the most unlike stretch (discord)."""
    m = int(MOTIF_HOURS * 60 / GRID_MIN)
    t0, x = glucose_grid(readings)
    days = len(x) * GRID_MIN / 1440
    out: dict = {"window_h": MOTIF_HOURS, "grid_min": GRID_MIN, "days": round(days, 1),
                 "min_days": MIN_DAYS_PATTERNS, "motifs": [], "discord": None}
    if days < MIN_DAYS_PATTERNS:
        out["status"] = f"not enough days of CGM: {days:.1f}, {MIN_DAYS_PATTERNS} needed"
        return out
    profile, index = matrix_profile(x, m)
    used = np.zeros(len(profile), dtype=bool)
    finite = np.isfinite(profile)

    def when(i: int) -> str:
        return datetime.fromtimestamp((t0 + i * GRID_MIN * 60_000) / 1000, ps.tz).strftime(
            "%Y-%m-%d %H:%M")

    for _ in range(MOTIFS):
        cand = np.where(finite & ~used, profile, np.inf)
        i = int(np.argmin(cand))
        if not np.isfinite(cand[i]):
            break
        radius = 2.0 * max(profile[i], 0.1 * math.sqrt(m))
        dp = _distance_profile(x, m, i)
        hits = []
        for j in np.argsort(dp):
            if not np.isfinite(dp[j]) or dp[j] > radius:
                break
            if used[j] or any(abs(int(j) - h) < m for h in hits):
                continue
            hits.append(int(j))
        for h in hits:
            used[max(0, h - m):h + m] = True
        shapes = np.array([x[h:h + m] for h in hits])
        mean = shapes.mean(axis=0)
        out["motifs"].append({
            "occurrences": len(hits), "distance": round(float(profile[i]), 3),
            "radius": round(radius, 3), "starts": [when(h) for h in sorted(hits)],
            "hours_of_day": sorted({int(when(h)[11:13]) for h in hits}),
            "start_mgdl": round(float(mean[0])), "low_mgdl": round(float(mean.min())),
            "high_mgdl": round(float(mean.max())), "end_mgdl": round(float(mean[-1])),
            "shape_mgdl": [round(float(v)) for v in mean]})
    if finite.any():
        k = int(np.argmax(np.where(finite, profile, -np.inf)))
        seg = x[k:k + m]
        out["discord"] = {"start": when(k), "distance": round(float(profile[k]), 3),
                          "low_mgdl": round(float(np.nanmin(seg))),
                          "high_mgdl": round(float(np.nanmax(seg))),
                          "shape_mgdl": [round(float(v)) for v in seg]}
    out["status"] = "ok"
    return out


# -- all together ----------------------------------------------------------------------------


def insights(data: TenantStore, ps: PatientSettings, end_night: str | None = None,
             nights: int = 30) -> dict:
    """Associations, unusual nights and glucose patterns over `nights` nights ending with
    end_night (default: last night)."""
    end_night = end_night or fusion.ended_night(newest_time(data), ps.tz, ps.sleep)
    rows = night_rows(data, ps, end_night, nights)
    first = date.fromisoformat(rows[0]["night"])
    at = dtime(ps.boundary // 60, ps.boundary % 60)  # noon, unless a day sleeper's
    hi = _local_ms(date.fromisoformat(end_night) + timedelta(days=1), at, ps)
    lo = max(_local_ms(first, at, ps), hi - MAX_DAYS_PATTERNS * 86_400_000)
    return {"start_night": rows[0]["night"], "end_night": end_night, "tz": ps.tz.key,
            "nights_with_data": sum(1 for r in rows if r.get("has_data")),
            "associations": associations(rows, None if ps.boundary == NOON_MIN
                                         else DAY_SLEEPER_LABELS),
            "unusual_nights": unusual_nights(rows),
            "patterns": patterns(fusion.load_glucose(data, lo, hi), ps)}
