"""Glucose metrics for reports, per the definitions in docs/clinical.md.

Pure functions over readings `(t_ms, mg/dL)`, oldest first; values below 39 are sensor error
codes and never count as glucose. Fusion and the reports build on these.

- Mean, SD (sample), CV = SD/mean; GMI (%) = 3.31 + 0.02392 x mean (Bergenstal 2018).
- Five consensus bands (Battelino et al., Diabetes Care 2019): <54, 54-69, 70-180, 181-250,
  >250 mg/dL, as shares of readings; data sufficiency: 14 days with >= 70 % of readings.
- Hypo-/hyperglycemia episodes (Battelino 2023), computed on a regular grid as iglu's
  episode_calculation does: begin after >= 15 minutes beyond 70/54 (180/250), where a
  duration is readings x sampling interval; end after >= 15 minutes back (a shorter return
  stays inside); never across a gap over 45 minutes; extended hypoglycemia > 120 minutes
  below 70; level 2 is a subset of level 1 (level1_only: never reached level 2).
- GRI = 3.0 VLow + 2.4 Low + 1.6 VHigh + 0.8 High (percent), capped at 100, zones A (0-20)
  to E (over 80) (Klonoff 2022). LBGI/HBGI with f = 1.509 (ln(G)^1.084 - 5.381) (Kovatchev);
  ADRR, J-index, MODD, CONGA, median/IQR, time in tight range 70-140, and MAGE by moving
  averages (Fernandes 2022) as iglu computes them; mage() keeps Service's 1970 algorithm.
- Dawn phenomenon: pre-wake glucose minus the nocturnal nadir, flagged at >= 20 mg/dL, not
  on nights with a preceding hypoglycemia (rebound) (Monnier 2013).
"""

from __future__ import annotations

import math
import statistics
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from datetime import UTC

from nightlink.cloud import zones
from nightlink.shared import units

MINUTE_MS = 60_000
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
    return value, gri_zone(value)


def gri_zone(value: float) -> str:
    """GRI zone: A 0-20, B over 20 to 40, C to 60, D to 80, E over 80 (Klonoff 2022), so a GRI
    of exactly 20 is still zone A."""
    return "ABCDE"[max(0, min(4, math.ceil(value / 20) - 1))]


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


def sufficiency(readings, start_ms: int, end_ms: int, interval_min: float | None = None,
                days: int | None = None) -> dict:
    """Share of the possible readings present, and whether it meets 14 days with >= 70 %.
    Possible readings are counted at the sensor's own interval (by default the readings'
    commonest step: a 15-minute Libre 2 with every reading there is 100 %, not 33 %) over the
    period's real length. `days` is the period's count of local calendar days: 14 of them are
    14 days even when one is 23 hours long (the day clocks go forward); without it, the
    length in 24-hour days."""
    interval_min = interval_min or sensor_interval_min(readings)
    possible = max(1, int((end_ms - start_ms) / (interval_min * MINUTE_MS)))
    n = len(glucose(readings))
    if days is None:
        days = (end_ms - start_ms) / (1440 * MINUTE_MS)
    share = min(1.0, n / possible)
    return {"days": days, "share": share,
            "sufficient": days >= SUFFICIENT_DAYS and share >= SUFFICIENT_SHARE}


# -- the regular grid that episodes, MODD, CONGA and MAGE are computed on ---------------------

INTER_GAP_MIN = 45  # a gap longer than this is not interpolated: it ends a run of readings


@dataclass(frozen=True)
class Grid:
    """Glucose on a regular grid: values[k] is at origin_ms + (k + 1) x dt_min, or None where
    no reading lies within INTER_GAP_MIN either side (iglu's CGMS2DayByDay)."""
    origin_ms: int  # local midnight of the first reading's day
    dt_min: int
    values: list

    def time_ms(self, k: int) -> int:
        return self.origin_ms + (k + 1) * self.dt_min * MINUTE_MS


def _commonest(steps) -> int | None:
    """The most common of `steps` (the shortest among equally common ones); None if none."""
    counts: dict[int, int] = {}
    for step in steps:
        counts[step] = counts.get(step, 0) + 1
    if not counts:
        return None
    top = max(counts.values())
    return min(d for d, c in counts.items() if c == top)


def sampling_min(readings) -> int:
    """The sampling interval in whole minutes: the most common step between readings (the
    shortest among equally common ones), truncated as iglu does; None with under 2 readings."""
    pts = glucose(readings)
    step = _commonest(t1 - t0 for (t0, _), (t1, _) in zip(pts, pts[1:], strict=False))
    return None if step is None else max(1, int(step / MINUTE_MS))


SENSOR_INTERVALS_MIN = (1, 5, 15)  # Libre 3 or a backfilled G7; Dexcom, Guardian; Libre 2


def sensor_interval_min(readings, default: int = 5) -> int:
    """The sensor's interval for counting possible readings: the commonest step between
    readings in whole minutes (rounded: uploads stamp 4:59.7 or 15:00.4 apart), then the
    longest sensor interval not above it (a 5-minute sensor that lost every other reading,
    a 10-minute step, is still a 5-minute sensor at half its readings); `default` with too
    few readings to tell."""
    pts = sorted(glucose(readings))
    minutes = (round((t1 - t0) / MINUTE_MS) for (t0, _), (t1, _) in zip(pts, pts[1:],
                                                                        strict=False))
    step = _commonest(m for m in minutes if m > 0)
    if step is None:
        return default
    return max([m for m in SENSOR_INTERVALS_MIN if m <= step] or [1])


def _local_midnight(t_ms: int, tz, ceil: bool = False) -> int:
    from datetime import datetime, timedelta

    local = datetime.fromtimestamp(t_ms / 1000, tz)
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if ceil and day != local:
        day += timedelta(days=1)
    return int(day.timestamp() * 1000)


def grid(readings, tz=UTC, dt_min: int | None = None, inter_gap_min: int = INTER_GAP_MIN):
    """Readings linearly interpolated onto a grid of dt_min minutes (the sampling interval by
    default) from local midnight of the first day to local midnight after the last, never
    across a gap of more than inter_gap_min minutes. None with under 2 readings."""
    pts = sorted(dict(glucose(readings)).items())
    if len(pts) < 2:
        return None
    dt_min = dt_min or sampling_min(pts)
    step = dt_min * MINUTE_MS
    origin = _local_midnight(pts[0][0], tz)
    end = _local_midnight(pts[-1][0], tz, ceil=True)
    n = (end - origin) // step
    values: list = [None] * n
    i = 0
    for k in range(n):
        t = origin + (k + 1) * step
        if t < pts[0][0] or t > pts[-1][0]:
            continue
        while pts[i + 1][0] < t:
            i += 1
        (t0, g0), (t1, g1) = pts[i], pts[i + 1]
        if t1 - t0 > inter_gap_min * MINUTE_MS and t0 < t < t1 - 999:
            continue
        values[k] = g0 if t == t0 else g0 + (g1 - g0) * (t - t0) / (t1 - t0)
    return Grid(origin, dt_min, values)


def _segments(values: list) -> list[tuple[int, list]]:
    """Runs of consecutive grid values without a gap: (index of the first, values)."""
    out, run, first = [], [], 0
    for k, g in enumerate(values):
        if g is None:
            if run:
                out.append((first, run))
            run = []
        else:
            if not run:
                first = k
            run.append(g)
    if run:
        out.append((first, run))
    return out


# -- hypo- and hyperglycemia episodes (Battelino et al., Lancet Diabetes Endocrinol 2023) -----

EPISODE_MIN = 15  # minutes beyond the threshold to begin an episode, and back to end it
EXTENDED_MIN = 120  # an extended hypoglycemia is more than this many minutes below 70
THRESHOLDS = {("hypo", 1): units.LOW, ("hypo", 2): units.VERY_LOW, ("hyper", 1): 180.0,
              ("hyper", 2): 250.0}


@dataclass(frozen=True)
class Event:
    """One episode on the grid. Its duration is its number of grid readings x dt_min, from
    the first reading beyond the threshold to the last before 15 minutes back (short returns
    inside it included); ongoing when the data (or a gap) ended it instead."""
    level: int  # 1: below 70 (above 180), 2: below 54 (above 250)
    start_ms: int
    end_ms: int  # the last grid reading of the episode
    nadir: float  # the lowest glucose in it (the highest, for hyperglycemia)
    ongoing: bool
    kind: str = "hypo"
    readings: int = 1
    dt_min: int = 5
    mean: float = 0.0
    reached_level2: bool = False  # a level-1 episode in which a level-2 episode lies
    extended: bool = False  # hypoglycemia: holds more than 120 consecutive minutes below 70

    @property
    def minutes(self) -> float:
        return float(self.readings * self.dt_min)


def _beyond(kind: str, threshold: float):
    return (lambda g: g < threshold) if kind == "hypo" else (lambda g: g > threshold)


def _episode_spans(values: list, beyond, start_n: int, end_n: int) -> list[tuple[int, int, bool]]:
    """(first, last, ongoing) index spans of episodes in one run without gaps: an episode
    begins with start_n readings in a row beyond the threshold and ends before the first
    end_n readings in a row back; readings back in between, fewer than end_n, stay inside."""
    runs, k = [], 0  # (first index, length, beyond?)
    while k < len(values):
        j = k
        while j < len(values) and beyond(values[j]) == beyond(values[k]):
            j += 1
        runs.append((k, j - k, beyond(values[k])))
        k = j
    spans, cur = [], None
    for first, length, out in runs:
        if cur is None and out and length >= start_n:
            cur = first
        elif cur is not None and not out and length >= end_n:
            spans.append((cur, first - 1, False))
            cur = None
    if cur is not None:
        spans.append((cur, len(values) - 1, True))
    return spans


def episodes(readings, kind: str = "hypo", tz=UTC) -> dict:
    """Level-1, level-2 and (hypoglycemia) extended episodes of a kind, per Battelino 2023 as
    iglu's episode_calculation computes them: on the grid, start and end after 15 minutes
    (ceil(15 / dt) readings), extended after more than 120 minutes (120 / dt + 1 readings in a
    row below 70). Level 2 is a subset of level 1: "level1_only" are the level-1 episodes that
    never reached level 2. Also the grid's hours of data, for rates per day."""
    g = grid(readings, tz)
    out = {"level1": [], "level2": [], "extended": [], "level1_only": [], "hours": 0.0,
           "dt_min": g.dt_min if g else None}
    if g is None:
        return out
    start_n = end_n = math.ceil(EPISODE_MIN / g.dt_min)
    out["hours"] = sum(1 for v in g.values if v is not None) * g.dt_min / 60
    for first, run in _segments(g.values):
        lv1_at = THRESHOLDS[(kind, 1)]
        spans = {1: _episode_spans(run, _beyond(kind, lv1_at), start_n, end_n),
                 2: _episode_spans(run, _beyond(kind, THRESHOLDS[(kind, 2)]), start_n, end_n)}
        ext_ends = set()
        if kind == "hypo":
            ext = _episode_spans(run, _beyond(kind, lv1_at), int(EXTENDED_MIN / g.dt_min) + 1,
                                 end_n)
            ext_ends = {b for _, b, _ in ext}
            out["extended"] += [_event(g, first, run, a, b, ongoing, kind, 1, extended=True)
                                for a, b, ongoing in ext]
        lv2_points = {k for a, b, _ in spans[2] for k in range(a, b + 1)}
        for a, b, ongoing in spans[1]:
            reached = any(k in lv2_points for k in range(a, b + 1))
            e = _event(g, first, run, a, b, ongoing, kind, 1, reached, b in ext_ends)
            out["level1"].append(e)
            if not reached:
                out["level1_only"].append(e)
        out["level2"] += [_event(g, first, run, a, b, ongoing, kind, 2) for a, b, ongoing in spans[2]]
    return _with_real_extremes(out, readings, kind)


def _with_real_extremes(out: dict, readings, kind: str) -> dict:
    """Each episode's nadir (peak) as the lowest (highest) reading the sensor gave in it, not
    only the grid's: a 15-minute sensor's 59 mg/dL between two grid points of 67 and 68 is
    the event's nadir. Readings count from one grid step before the episode's first point to
    one after its last."""
    from dataclasses import replace

    pts = sorted(glucose(readings))
    times = [t for t, _ in pts]
    lowest = kind == "hypo"
    done: dict[int, Event] = {}
    for key in ("level1", "level2", "extended", "level1_only"):
        fixed = []
        for e in out[key]:
            if id(e) not in done:
                pad = e.dt_min * MINUTE_MS
                lo, hi = bisect_right(times, e.start_ms - pad), bisect_left(times, e.end_ms + pad)
                vals = [v for _, v in pts[lo:hi]] + [e.nadir]
                done[id(e)] = replace(e, nadir=min(vals) if lowest else max(vals))
            fixed.append(done[id(e)])
        out[key] = fixed
    return out


def _event(g: Grid, first: int, run: list, a: int, b: int, ongoing: bool, kind: str, level: int,
           reached: bool = False, extended: bool = False) -> Event:
    vals = run[a:b + 1]
    ongoing = ongoing and first + b == len(g.values) - 1 - _trailing_gap(g.values)
    return Event(level=level, start_ms=g.time_ms(first + a), end_ms=g.time_ms(first + b),
                 nadir=min(vals) if kind == "hypo" else max(vals), ongoing=ongoing, kind=kind,
                 readings=len(vals), dt_min=g.dt_min, mean=statistics.fmean(vals),
                 reached_level2=reached or level == 2, extended=extended)


def _trailing_gap(values: list) -> int:
    n = 0
    while n < len(values) and values[-1 - n] is None:
        n += 1
    return n


def episode_summary(events: list[Event], hours: float) -> dict:
    """iglu's summary of a list of episodes: count, per day, mean minutes, mean glucose."""
    if not events:
        return {"total": 0, "per_day": 0.0, "minutes": 0.0, "mean": None}
    return {"total": len(events), "per_day": len(events) / (hours / 24),
            "minutes": statistics.fmean(e.minutes for e in events),
            "mean": statistics.fmean(e.mean for e in events)}


def hypo_events(readings, level: int, tz=UTC) -> list[Event]:
    """Hypoglycemia episodes of a level (1: below 70, 2: below 54); see episodes()."""
    return episodes(readings, "hypo", tz)["level1" if level == 1 else "level2"]


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
    nbins = 1440 // bin_min
    pools: list[list[float]] = [[] for _ in range(nbins)]
    for t, g in glucose(readings):
        local = zones.wall(t / 1000, tz)
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
    days: dict[str, list[tuple[int, float]]] = {}
    for t, g in glucose(readings):
        days.setdefault(zones.wall(t / 1000, tz).strftime("%Y-%m-%d"), []).append(
            (t, g))
    return days


def time_in(readings, lo: float, hi: float) -> float | None:
    """Share of readings (%) with lo <= glucose <= hi (a preset's own range, e.g. pregnancy)."""
    values = [g for _, g in glucose(readings)]
    if not values:
        return None
    return 100.0 * sum(1 for g in values if lo <= g <= hi) / len(values)


# -- more consensus and variability metrics (as iglu computes them) ---------------------------

TIGHT_RANGE = (70.0, 140.0)  # time in tight range, mg/dL, both ends included


def median_iqr(readings) -> tuple[float, float] | None:
    """(median, interquartile range) of the readings, percentiles interpolated linearly."""
    values = sorted(g for _, g in glucose(readings))
    if not values:
        return None
    return percentile(values, 50), percentile(values, 75) - percentile(values, 25)


def j_index(readings) -> float | None:
    """J-index = 0.001 x (mean + SD)^2, mg/dL (Wojcicki 1995)."""
    s = summary(readings)
    return None if s is None else 0.001 * (s["mean"] + s["sd"]) ** 2


def adrr(readings, tz=UTC) -> float | None:
    """Average daily risk range (Kovatchev 2006): per local day, the largest low risk plus the
    largest high risk, 22.77 x f^2 with f = ln(G)^1.084 - 5.381; averaged over days."""
    days = daily(readings, tz)
    if not days:
        return None
    risks = []
    for pts in days.values():
        f = [math.log(g) ** 1.084 - 5.381 for _, g in pts]
        risks.append(22.77 * min(min(f), 0.0) ** 2 + 22.77 * max(max(f), 0.0) ** 2)
    return statistics.fmean(risks)


def modd(readings, tz=UTC, lag_days: int = 1) -> float | None:
    """Mean of daily differences (Molnar 1972): mean |G(t) - G(t - 24 h)| on the grid."""
    g = grid(readings, tz)
    if g is None:
        return None
    shift = int(lag_days * 1440 / g.dt_min)
    diffs = [abs(b - a) for a, b in zip(g.values, g.values[shift:], strict=False)
             if a is not None and b is not None]
    return statistics.fmean(diffs) if diffs else None


def conga(readings, tz=UTC, hours: int = 1) -> float | None:
    """Continuous overall net glycemic action (McDonnell 2005): the SD of G(t) - G(t - n h) on
    the grid (CONGA1 by default)."""
    g = grid(readings, tz)
    if g is None:
        return None
    lag = round(60 / g.dt_min) * hours
    diffs = [b - a for a, b in zip(g.values, g.values[lag:], strict=False)
             if a is not None and b is not None]
    return statistics.stdev(diffs) if len(diffs) >= 2 else None


# MAGE by moving averages (Fernandes et al., J Diabetes Sci Technol 2022), iglu's mage "ma"

MAGE_SHORT_MA = 5
MAGE_LONG_MA = 32
MAGE_MAX_GAP_MIN = 180  # a longer gap splits the data into parts, weighted by their hours


def mage_ma(readings, tz=UTC, short_ma: int = MAGE_SHORT_MA, long_ma: int = MAGE_LONG_MA):
    """MAGE of Fernandes 2022: on a 5-minute grid, the crossings of a short and a long moving
    average bound the peaks and nadirs; excursions larger than one SD are averaged (ups and
    downs each, then both), per part of the data between gaps over 3 hours, weighted by the
    parts' hours. None when no part has an excursion."""
    g = grid(readings, tz, dt_min=5)
    if g is None:
        return None
    short_ma, long_ma = sorted((short_ma, long_ma))
    rows = []  # (hours, MAGE) of each direction of each part
    for times, values in _mage_parts(g):
        hours = (times[-1] - times[0]) / 3_600_000
        for value in _mage_part(values, short_ma, long_ma):
            if value is not None:
                rows.append((hours, value))
    total = sum(h for h, _ in rows)
    if not rows or total == 0:
        return None
    return sum(h * v for h, v in rows) / total


def _mage_parts(g: Grid):
    """(times, values) of the parts of the grid between gaps over MAGE_MAX_GAP_MIN; values
    inside a part may be None (shorter gaps)."""
    idx = [k for k, v in enumerate(g.values) if v is not None]
    if not idx:
        return []
    parts, cur, last = [], [], None
    for k in range(idx[0], idx[-1] + 1):
        v = g.values[k]
        if v is not None and last is not None and (k - last) * 5 > MAGE_MAX_GAP_MIN:
            parts.append(cur)
            cur = []
        cur.append(k)
        if v is not None:
            last = k
    parts.append(cur)
    out = []
    for ks in parts:
        while ks and g.values[ks[-1]] is None:
            ks.pop()
        out.append(([g.time_ms(k) for k in ks], [g.values[k] for k in ks]))
    return out


def _moving_average(values: list, width: int) -> list:
    out = []
    for i in range(len(values)):
        window = [v for v in values[max(0, i - width + 1):i + 1] if v is not None]
        out.append(statistics.fmean(window) if window else None)
    fill = out[width - 1] if width <= len(out) else out[-1]
    return [fill] * min(width, len(out)) + out[width:]


def _mage_part(values: list, short_ma: int, long_ma: int) -> tuple:
    """(MAGE up, MAGE down) of one part; None for a direction without an excursion."""
    present = [v for v in values if v is not None]
    if len(values) < max(7, short_ma) or len(present) < 2 or statistics.stdev(present) < 1:
        return (None, None)
    short, long_ = _moving_average(values, short_ma), _moving_average(values, long_ma)
    delta = [None if a is None or b is None else a - b for a, b in zip(short, long_, strict=True)]
    crosses = _mage_crossings(values, delta)
    minmax, where = [], []
    for i in range(len(crosses) - 1):
        lo = crosses[0][0] if i == 0 else where[-1]
        seg = [(v, k) for k, v in enumerate(values[lo:crosses[i + 1][0] + 1], lo) if v is not None]
        best = min(seg) if crosses[i][1] == "min" else max(seg, key=lambda p: (p[0], -p[1]))
        minmax.append(best[0])
        where.append(best[1])
    sd = statistics.stdev(present)
    ups, up_pairs = _mage_excursions(minmax, sd, 1)
    downs, down_pairs = _mage_excursions(minmax, sd, -1)
    return (statistics.fmean(ups) if ups else None,
            abs(statistics.fmean(downs)) if downs else None)


def _mage_crossings(values: list, delta: list) -> list[tuple[int, str]]:
    """Where the short moving average crosses the long one: (index, "min" or "max" for the
    extreme that follows), the first and last index included."""
    crosses = [(0, "max" if delta[0] is not None and delta[0] > 0 else "min")]
    delta = [None if d == 0 else d for d in delta]
    for i in range(1, len(delta)):
        d, prev = delta[i], delta[i - 1]
        if d is None:
            continue
        if values[i] is None or values[i - 1] is None or prev is None:
            prev = delta[crosses[-1][0]]
            if prev is None:
                continue
        if d * prev < 0:
            crosses.append((i, "min" if d < prev else "max"))
    last = delta[-1]
    crosses.append((len(delta) - 1, "max" if last is not None and last > 0 else "min"))
    return crosses


def _mage_excursions(minmax: list, sd: float, sign: int) -> tuple[list, list]:
    """The rises (sign 1) or falls (sign -1) between the extremes that exceed one SD, each
    ridden to its highest peak (lowest nadir) before a return of more than one SD."""
    n = len(minmax)
    heights, pairs = [], []
    j = prev_j = 0
    while j < n:
        deltas = [sign * (minmax[j] - minmax[i]) for i in range(prev_j, j + 1)]
        if not deltas:
            j += 1
            continue
        best = max(deltas)
        i = prev_j + deltas.index(best)
        if best <= sd:
            j += 1
            continue
        k = j
        while k < n:
            if sign * minmax[k] >= sign * minmax[j]:
                j = k
            if sign * (minmax[k] - minmax[j]) < -sd or k == n - 1:
                heights.append(minmax[j] - minmax[i])
                pairs.append((i, j))
                prev_j = k if sign > 0 else j
                j = k
                break
            k += 1
    return heights, pairs
