"""The morning card: last night at a glance for the patient and the family, and the figures
the nights API returns.

Built on the same fused night the doctor's report uses (cloud/fusion.py through the cache in
cloud/reports/settings.py), so the app, the API and the report cannot disagree. Adds what a
person wants in the morning: a 0-100 sleep score whose formula is part of the answer, the
night against the last 7 and 30 nights, the lows with what was happening around them, and
screening flags. A flag is raised only when the data can carry it (enough nights, the
modality present), names its evidence, and is worded as a suggestion to see a doctor,
never as a diagnosis. Definitions and thresholds: docs/morning-card.md.
"""

from __future__ import annotations

import statistics
from datetime import date, datetime, timedelta

from nightlink.cloud import fusion
from nightlink.cloud.reports.settings import PatientSettings, patient_night
from nightlink.cloud.reports.summary import nest_lows, newest_time, night_row
from nightlink.cloud.store import TenantStore

TREND_WINDOWS = (7, 30)
# Sleep score parts: (name, points, figure, worst, best). A part scores its points times the
# figure's position between worst (0) and best (all points), clamped.
SCORE_PARTS = (
    ("duration", 40, "tst_min", 240.0, 420.0),  # 4 h -> 0, 7 h or more -> 40 (adults: >= 7 h)
    ("efficiency", 30, "se_pct", 70.0, 90.0),  # 70 % -> 0, 90 % or more -> 30
    ("continuity", 15, "waso_min", 90.0, 20.0),  # 90 min awake after onset -> 0, <= 20 -> 15
    ("architecture", 15, "deep_rem_pct", 20.0, 40.0),  # deep + REM share of sleep
)
SCORE_FORMULA = ("score = 40 x duration + 30 x efficiency + 15 x continuity + 15 x "
                 "architecture, each part from 0 to 1: duration (sleep time 4 h -> 0, "
                 "7 h -> 1), efficiency (70 % -> 0, 90 % -> 1), continuity (wake after sleep "
                 "onset 90 min -> 0, 20 min -> 1), architecture (deep + REM 20 % of sleep -> 0, "
                 "40 % -> 1); parts without data are left out and the rest scaled to 100")
APNEA_AHI = 15.0  # moderate or worse (AASM)
APNEA_NIGHTS = 2  # of the last 7 nights with breathing figures
LOW_NIGHTS = 3  # of the last 7 nights with glucose
INSOMNIA_MIN = 30.0  # sleep-onset latency or wake after sleep onset, minutes
INSOMNIA_SHARE = 3 / 7  # three nights a week
IRREGULAR_SD_MIN = 60.0  # standard deviation of the sleep midpoint
FLAG_MIN_NIGHTS = 7
ADVICE = ("This is a screening suggestion from home sensors, not a diagnosis. Consider "
          "showing it to your doctor.")


def _clamp01(x: float) -> float:
    return max(0.0, min(1.0, x))


def sleep_score(row: dict) -> dict | None:
    """The night's 0-100 score with each part, or None without a sleep time."""
    if row.get("tst_min") is None:
        return None
    figures = dict(row)
    stages = [row.get("deep_pct"), row.get("rem_pct")]
    figures["deep_rem_pct"] = sum(stages) if None not in stages else None
    parts, got, possible = {}, 0.0, 0
    for name, points, key, worst, best in SCORE_PARTS:
        value = figures.get(key)
        if value is None:
            parts[name] = None
            continue
        share = _clamp01((value - worst) / (best - worst))
        parts[name] = round(points * share, 1)
        got += points * share
        possible += points
    if possible == 0:
        return None
    return {"value": round(100.0 * got / possible), "parts": parts, "formula": SCORE_FORMULA,
            "scaled_from": possible}


def last_night(data: TenantStore, ps: PatientSettings) -> str:
    """The night that ended last at the newest reading (of now without any), by the person's
    schedule when the bedside node reported one (fusion.ended_night)."""
    return fusion.ended_night(newest_time(data), ps.tz, ps.sleep)


def recent_rows(data: TenantStore, ps: PatientSettings, night: str, n: int) -> list[dict]:
    """night_row() of the n nights up to and including `night` that hold data, newest first."""
    rows, day = [], date.fromisoformat(night)
    for i in range(n):
        doc = patient_night(data, ps, (day - timedelta(days=i)).isoformat())
        if doc["has_data"]:
            row = night_row(doc)
            row["score"] = (sleep_score(row) or {}).get("value")
            row["midpoint_min"] = _midpoint(doc, ps)
            rows.append(row)
    return rows


def _midpoint(doc: dict, ps: PatientSettings) -> float | None:
    """Minutes after the evening's 18:00 local at which sleep was half over."""
    s = doc["sleep"]
    if s.get("onset_ms") is None or s.get("final_wake_ms") is None:
        return None
    mid = datetime.fromtimestamp((s["onset_ms"] + s["final_wake_ms"]) / 2000.0, ps.tz)
    # on the local clock (a night when the clocks change keeps its midpoint's clock time)
    days = (mid.date() - date.fromisoformat(doc["night"])).days
    return days * 1440 + mid.hour * 60 + mid.minute + mid.second / 60.0 - 18 * 60


TREND_KEYS = ("score", "tst_min", "se_pct", "waso_min", "ahi", "odi3", "snore_pct", "noct_mean",
              "lows_l1")


def within(rows: list[dict], nights: int) -> list[dict]:
    """The rows of the `nights` calendar nights ending with the newest row's night."""
    if not rows:
        return []
    first = (date.fromisoformat(rows[0]["night"]) - timedelta(days=nights - 1)).isoformat()
    return [r for r in rows if r["night"] >= first]


def trends(rows: list[dict]) -> dict:
    """Mean of each figure over the last 7 and 30 nights (calendar nights ending with the
    card's night), with how many of those nights had it."""
    out = {}
    for window in TREND_WINDOWS:
        take = within(rows, window)
        out[f"nights_{window}"] = {}
        for key in TREND_KEYS:
            values = [r[key] for r in take if r.get(key) is not None]
            out[f"nights_{window}"][key] = {
                "mean": round(statistics.fmean(values), 1) if values else None, "n": len(values)}
    return out


def screening(rows: list[dict]) -> tuple[list[dict], list[str]]:
    """(flags, what could not be judged yet) from the nights newest first."""
    flags, pending = [], []
    week = within(rows, 7)
    ahi = [(r["night"], r["ahi"]) for r in week if r.get("ahi") is not None]
    high = [(n, a) for n, a in ahi if a >= APNEA_AHI]
    if len(high) >= APNEA_NIGHTS:
        flags.append(_flag("possible_sleep_apnea", "Possible sleep apnea",
                           f"{len(high)} of the last {len(ahi)} nights with breathing figures "
                           f"had {APNEA_AHI:g} or more breathing events per hour",
                           [{"night": n, "ahi": round(a, 1)} for n, a in high]))
    elif not ahi:
        pending.append("breathing: no night with breathing figures yet")
    lows = [(r["night"], r["lows_l1"]) for r in week if r.get("noct_n")]
    low_nights = [(n, k) for n, k in lows if k]
    if len(low_nights) >= LOW_NIGHTS:
        flags.append(_flag("recurring_night_lows", "Lows on several nights",
                           f"lows during sleep on {len(low_nights)} of the last {len(lows)} "
                           f"nights with glucose", [{"night": n, "lows": k}
                                                    for n, k in low_nights]))
    month = within(rows, 30)
    slept = [r for r in month if r.get("sol_min") is not None and r.get("waso_min") is not None]
    if len(slept) < FLAG_MIN_NIGHTS:
        pending.append(f"insomnia pattern and sleep timing: {len(slept)} nights with sleep "
                       f"figures, {FLAG_MIN_NIGHTS} needed")
        return flags, pending
    poor = [r for r in slept if r["sol_min"] > INSOMNIA_MIN or r["waso_min"] > INSOMNIA_MIN]
    if len(poor) / len(slept) >= INSOMNIA_SHARE:
        flags.append(_flag("insomnia_pattern", "Trouble falling or staying asleep",
                           f"on {len(poor)} of {len(slept)} nights it took more than "
                           f"{INSOMNIA_MIN:g} minutes to fall asleep or you were awake more "
                           f"than {INSOMNIA_MIN:g} minutes after falling asleep",
                           [{"night": r["night"], "sol_min": round(r["sol_min"]),
                             "waso_min": round(r["waso_min"])} for r in poor]))
    mids = [r["midpoint_min"] for r in slept if r.get("midpoint_min") is not None]
    if len(mids) >= FLAG_MIN_NIGHTS and statistics.stdev(mids) > IRREGULAR_SD_MIN:
        flags.append(_flag("irregular_sleep_timing", "Irregular sleep times",
                           f"the middle of your sleep varied by {statistics.stdev(mids):.0f} "
                           f"minutes (standard deviation) over {len(mids)} nights",
                           [{"nights": len(mids), "sd_min": round(statistics.stdev(mids))}]))
    return flags, pending


def _flag(key: str, title: str, evidence: str, nights: list[dict]) -> dict:
    return {"key": key, "title": title, "evidence": evidence, "nights": nights,
            "advice": ADVICE}


def card(data: TenantStore, ps: PatientSettings, night: str | None = None) -> dict:
    """The morning card of `night` (default: last night); `has_data` False when it has none."""
    night = night or last_night(data, ps)
    doc = patient_night(data, ps, night)
    rows = recent_rows(data, ps, night, max(TREND_WINDOWS))
    this = rows[0] if rows and rows[0]["night"] == night else None
    out: dict = {"night": night, "tz": ps.tz.key, "has_data": doc["has_data"]}
    if this is None:
        return {**out, "message": "No data for this night."}
    flags, pending = screening(rows)
    out.update({
        "inputs": {k: round(v, 3) for k, v in doc["coverage"].items()
                   if isinstance(v, float) and v > 0},
        "sleep": {**doc["sleep"], "rem_latency_min": this["rem_latency_min"],
                  "score": sleep_score(this)},
        "breathing": doc["breathing"],
        "lows": [_low_context(e) for e in nest_lows(doc["findings"]["lows"])],
        "glucose": {"period": doc["glucose"]["period"], "n": doc["glucose"]["n"],
                    "summary": doc["glucose"]["summary"], "bands": doc["glucose"]["bands"]},
        "room": doc["room"],
        "trends": trends(rows),
        "flags": flags,
        "not_yet": pending,
        "disclaimer": ADVICE,
    })
    return out


def _low_context(low: dict) -> dict:
    """A low (an episode, counted once) with the stage it began in, the heart-rate response
    and any arousal around it (cloud/fusion.py findings)."""
    keep = ("start_ms", "end_ms", "minutes", "nadir", "ongoing", "extended", "deepest",
            "stage_at_start", "hr_response", "arousal")
    return {k: low.get(k) for k in keep}


def nights_summary(data: TenantStore, ps: PatientSettings, n: int) -> list[dict]:
    """The last n nights with data, newest first, as the card's headline figures."""
    if n <= 0:
        return []
    keys = ("night", "score", "tst_min", "se_pct", "waso_min", "ahi", "ahi_severity", "odi3",
            "snore_pct", "noct_mean", "lows_l1", "lows_l2", "sleep_source", "breathing_source")
    return [{k: r.get(k) for k in keys} for r in recent_rows(data, ps, last_night(data, ps), n)]
