"""Glucose metrics for reports, per the definitions in docs/clinical.md.

Pure functions over readings `(t_ms, mg/dL)`, oldest first; values below 39 are sensor error
codes and never count as glucose. Fusion and the reports build on these.

- Mean, SD (sample), CV = SD/mean; GMI (%) = 3.31 + 0.02392 x mean (Bergenstal 2018).
- Five consensus bands (Battelino et al., Diabetes Care 2019): <54, 54-69, 70-180, 181-250,
  >250 mg/dL, as shares of readings; data sufficiency: 14 days with >= 70 % of readings.
- Hypoglycemia events: level 1 < 70, level 2 < 54; an event starts after >= 15 consecutive
  minutes below and ends after >= 15 minutes above; extended when > 120 minutes below 70.
- GRI = 3.0 VLow + 2.4 Low + 1.6 VHigh + 0.8 High (percent), capped at 100, zones A-E by
  20s (Klonoff 2022). LBGI/HBGI with f = 1.509 (ln(G)^1.084 - 5.381) (Kovatchev).
- Dawn phenomenon: pre-wake glucose minus the nocturnal nadir, flagged at >= 20 mg/dL, not
  on nights with a preceding hypoglycemia (rebound) (Monnier 2013).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from nightlink.shared import units

MINUTE_MS = 60_000
EVENT_MIN = 15  # minutes below to start, and above to end, an event
EXTENDED_MIN = 120  # minutes below 70 that make an event extended
DAWN_FLAG_MGDL = 20
SUFFICIENT_DAYS = 14
SUFFICIENT_SHARE = 0.70


def glucose(readings):
    """Readings that are glucose (sensor error codes below 39 left out)."""
    return [(t, g) for t, g in readings if g >= units.SGV_MIN_VALID]


def summary(readings) -> dict | None:
    """Mean, SD, CV (%) and GMI (%) of the readings; None without glucose."""
    values = [g for _, g in glucose(readings)]
    if not values:
        return None
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"n": len(values), "mean": mean, "sd": sd, "cv_pct": 100.0 * sd / mean,
            "gmi_pct": 3.31 + 0.02392 * mean}


def bands(readings) -> dict | None:
    """Shares of readings (%) in the five consensus bands."""
    values = [g for _, g in glucose(readings)]
    if not values:
        return None
    counts = [0] * 5
    for g in values:
        counts[units.band(g)] += 1
    names = ("very_low", "low", "in_range", "high", "very_high")
    return {name: 100.0 * c / len(values) for name, c in zip(names, counts, strict=True)}


def gri(b: dict) -> tuple[float, str]:
    """Glycemia Risk Index from band shares (%), and its zone A (best) to E."""
    value = min(100.0, 3.0 * b["very_low"] + 2.4 * b["low"] + 1.6 * b["very_high"]
                + 0.8 * b["high"])
    return value, "ABCDE"[min(4, int(value // 20))]


def risk_indices(readings) -> tuple[float, float] | None:
    """(LBGI, HBGI) of the readings (Kovatchev's symmetrised risk)."""
    values = [g for _, g in glucose(readings)]
    if not values:
        return None
    low = high = 0.0
    for g in values:
        f = 1.509 * (math.log(g) ** 1.084 - 5.381)
        r = 10.0 * f * f
        if f < 0:
            low += r
        else:
            high += r
    return low / len(values), high / len(values)


def sufficiency(readings, start_ms: int, end_ms: int, interval_min: float = 5.0) -> dict:
    """Share of the possible readings present, and whether it meets 14 days with >= 70 %."""
    possible = max(1, int((end_ms - start_ms) / (interval_min * MINUTE_MS)))
    n = len(glucose(readings))
    days = (end_ms - start_ms) / (1440 * MINUTE_MS)
    share = min(1.0, n / possible)
    return {"days": days, "share": share,
            "sufficient": days >= SUFFICIENT_DAYS and share >= SUFFICIENT_SHARE}


@dataclass(frozen=True)
class Event:
    level: int  # 1: below 70, 2: below 54
    start_ms: int
    end_ms: int  # the last reading below the threshold (or the last reading, if ongoing)
    nadir: float
    ongoing: bool

    @property
    def minutes(self) -> float:
        return (self.end_ms - self.start_ms) / MINUTE_MS

    @property
    def extended(self) -> bool:
        return self.level == 1 and self.minutes > EXTENDED_MIN


def hypo_events(readings, level: int) -> list[Event]:
    """Hypoglycemia events of a level: begin after 15 minutes below, end after 15 above.

    The event's start is its first reading below the threshold; its end is the last reading
    below before the 15 minutes above that ended it.
    """
    threshold = units.LOW if level == 1 else units.VERY_LOW
    pts = glucose(readings)
    events: list[Event] = []
    below_from = None  # first reading of the current run below
    last_below = None
    above_from = None  # first reading of the current run above, inside an event
    nadir = math.inf
    in_event = False
    for t, g in pts:
        if g < threshold:
            if below_from is None:
                below_from = t
            last_below = t
            above_from = None
            nadir = min(nadir, g)
            if not in_event and t - below_from >= EVENT_MIN * MINUTE_MS:
                in_event = True
        else:
            if in_event:
                if above_from is None:
                    above_from = t
                if t - above_from >= EVENT_MIN * MINUTE_MS:
                    events.append(Event(level, below_from, last_below, nadir, False))
                    in_event, below_from, above_from, nadir = False, None, None, math.inf
            else:
                below_from, nadir = None, math.inf
    if in_event:
        events.append(Event(level, below_from, last_below, nadir, True))
    return events


def dawn_phenomenon(night_readings, wake_ms: int, pre_wake_min: int = 30) -> dict | None:
    """Pre-wake glucose minus the night's nadir; flagged at >= 20 mg/dL unless the nadir was a
    hypoglycemia (then a rise is rebound, not dawn phenomenon)."""
    pts = [p for p in glucose(night_readings) if p[0] <= wake_ms]
    if len(pts) < 2:
        return None
    nadir_t, nadir = min(pts, key=lambda p: p[1])
    pre = [g for t, g in pts if wake_ms - pre_wake_min * MINUTE_MS <= t and t > nadir_t]
    if not pre:
        return None
    rise = statistics.fmean(pre) - nadir
    rebound = bool(hypo_events(pts, 1))
    return {"nadir": nadir, "nadir_ms": nadir_t, "pre_wake_mean": statistics.fmean(pre),
            "rise": rise, "rebound": rebound, "flag": rise >= DAWN_FLAG_MGDL and not rebound}


# -- glycemic variability and the ambulatory glucose profile ---------------------------------

MAGE_GAP_MIN = 60  # a gap longer than this ends a run of readings for MAGE's turning points


def _turning_points(values: list[float]) -> list[float]:
    """Local peaks and nadirs of a series (flat stretches collapsed), ends included."""
    pts: list[float] = []
    for g in values:
        if pts and g == pts[-1]:
            continue
        if len(pts) >= 2 and (pts[-1] - pts[-2]) * (g - pts[-1]) > 0:
            pts[-1] = g  # still rising (or falling): the extreme moves on
        else:
            pts.append(g)
    return pts


def mage(readings) -> float | None:
    """Mean amplitude of glycemic excursions (Service 1970): excursions between turning points
    larger than one SD of all readings, averaged in the direction of the first such excursion.

    Turning points are peaks and nadirs; the smallest swing between neighbours is removed
    (both of its points, or the end point) until every swing exceeds one SD. Runs of readings
    are split at gaps over MAGE_GAP_MIN minutes. None without at least two readings.
    """
    pts = glucose(readings)
    if len(pts) < 2:
        return None
    sd = statistics.stdev([g for _, g in pts])
    if sd == 0:
        return 0.0
    runs, run, last_t = [], [], None
    for t, g in pts:
        if last_t is not None and t - last_t > MAGE_GAP_MIN * MINUTE_MS:
            runs.append(run)
            run = []
        run.append(g)
        last_t = t
    runs.append(run)
    ups: list[float] = []
    downs: list[float] = []
    first_dir = 0
    for values in runs:
        tp = _turning_points(values)
        while len(tp) >= 2:
            swings = [abs(tp[i + 1] - tp[i]) for i in range(len(tp) - 1)]
            i = min(range(len(swings)), key=swings.__getitem__)
            if swings[i] > sd:
                break
            if i == 0:
                del tp[0]
            elif i == len(tp) - 2:
                del tp[-1]
            else:
                del tp[i:i + 2]
            tp = _turning_points(tp)
        for a, b in zip(tp, tp[1:], strict=False):
            if abs(b - a) <= sd:
                continue
            if first_dir == 0:
                first_dir = 1 if b > a else -1
            (ups if b > a else downs).append(abs(b - a))
    if first_dir == 0:
        return 0.0
    chosen = ups if first_dir > 0 else downs
    return statistics.fmean(chosen)


def percentile(sorted_values: list[float], p: float) -> float:
    """The p-th percentile (0-100) with linear interpolation between closest ranks (as
    numpy's default), of values sorted ascending."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    k = (len(sorted_values) - 1) * p / 100.0
    lo = int(math.floor(k))
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


AGP_PERCENTILES = (5, 25, 50, 75, 95)


def agp(readings, tz, bin_min: int = 15, smooth: int = 1) -> list[dict]:
    """Ambulatory glucose profile: readings of all days pooled by local time of day (tz, a
    zoneinfo.ZoneInfo) into bins of bin_min minutes, and the 5/25/50/75/95th percentiles of
    each bin. With smooth=k, each bin's percentiles use the readings of the k bins either
    side as well (circularly), as AGP software smooths the modal day. Bins without readings
    come back with n = 0 and None percentiles (never filled in)."""
    from datetime import datetime

    nbins = 1440 // bin_min
    pools: list[list[float]] = [[] for _ in range(nbins)]
    for t, g in glucose(readings):
        local = datetime.fromtimestamp(t / 1000, tz)
        pools[(local.hour * 60 + local.minute) // bin_min].append(g)
    out = []
    for i in range(nbins):
        own = len(pools[i])
        vals = sorted(v for j in range(i - smooth, i + smooth + 1) for v in pools[j % nbins])
        row = {"minute": i * bin_min, "n": own}
        for p in AGP_PERCENTILES:
            row[f"p{p}"] = percentile(vals, p) if own and vals else None
        out.append(row)
    return out


def daily(readings, tz) -> dict[str, list[tuple[int, float]]]:
    """Readings grouped by local calendar day (YYYY-MM-DD in tz), oldest first."""
    from datetime import datetime

    days: dict[str, list[tuple[int, float]]] = {}
    for t, g in glucose(readings):
        days.setdefault(datetime.fromtimestamp(t / 1000, tz).strftime("%Y-%m-%d"), []).append(
            (t, g))
    return days


def time_in(readings, lo: float, hi: float) -> float | None:
    """Share of readings (%) with lo <= glucose <= hi (a preset's own range, e.g. pregnancy)."""
    values = [g for _, g in glucose(readings)]
    if not values:
        return None
    return 100.0 * sum(1 for g in values if lo <= g <= hi) / len(values)
