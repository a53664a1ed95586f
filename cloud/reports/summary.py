"""The multi-day report (14 days by default) per the International Consensus on Time in Range:
data sufficiency, mean, GMI, CV, the five bands against the patient's targets, GRI, LBGI/HBGI,
MAGE, hypoglycemia events, the AGP modal day and daily profiles, plus each night's fused
sleep, breathing, nocturnal glucose and room metrics and the associations across nights."""

from __future__ import annotations

import statistics
from datetime import date, datetime, time, timedelta

from nightlink.cloud import fusion, glycemia, zones
from nightlink.cloud.reports import stats
from nightlink.cloud.reports.settings import PatientSettings, patient_night
from nightlink.cloud.store import TenantStore
from nightlink.shared import units

MS_DAY = 86_400_000
MORNING_MIN = 60  # next-morning glucose: mean of the readings in the hour after final wake

# Target rows: a label without numbers and the limit it counts against (mg/dL; the page shows
# it in the reader's units). "range" stands for the preset's range.
TARGET_LABELS = {"in_range": ("Time in range", "range"),
                 "low_total": ("Time below range", ("<", "lo")),
                 "very_low": ("Time very low", ("<", units.VERY_LOW)),
                 "high_total": ("Time above range", (">", "hi")),
                 "very_high": ("Time very high", (">", units.VERY_HIGH))}

# Night factors against glucose outcomes: (key, label, unit, step). The slope is shown per
# step of the factor (per 10 events/h of AHI, per 30 min of WASO), a change a doctor can read.
PREDICTORS = (
    ("ahi", "AHI", "events/h", 10),
    ("odi4", "ODI 4 %", "events/h", 10),
    ("tst_h", "Total sleep time", "h", 1),
    ("se_pct", "Sleep efficiency", "%", 10),
    ("waso_min", "WASO", "min", 30),
    ("temp_c", "Bedroom temperature (median)", "°C", 1),
    ("co2_max", "Bedroom CO2 (max)", "ppm", 100),
)
OUTCOMES = (  # all in mg/dL; shown in the reader's units
    ("noct_mean", "Overnight mean glucose"),
    ("noct_sd", "Overnight glucose SD"),
    ("morning", "Next-morning glucose"),
)
FDR_Q = 0.05  # rows with a Benjamini-Hochberg q below this are marked


def newest_time(data: TenantStore) -> float:
    """Unix seconds of the newest reading (of now without any)."""
    t = data.docs.newest_time("entries", "sgv")
    return t / 1000 if t else datetime.now().timestamp()


def latest_day(data: TenantStore, ps: PatientSettings) -> str:
    """The local date of the newest reading (or of now without any)."""
    return datetime.fromtimestamp(newest_time(data), ps.tz).strftime("%Y-%m-%d")


def period(end_day: str, days: int, tz) -> tuple[int, int, list[str]]:
    """[start_ms, end_ms) of `days` local calendar days ending with end_day, and the days."""
    last = date.fromisoformat(end_day)
    first = last - timedelta(days=days - 1)
    start = datetime.combine(first, time(0), tz).timestamp()
    end = datetime.combine(last + timedelta(days=1), time(0), tz).timestamp()
    return int(start * 1000), int(end * 1000), [
        (first + timedelta(days=i)).isoformat() for i in range(days)]


def targets_check(bands: dict, preset: dict, readings, judged: bool = True) -> list[dict]:
    """Each target of the preset with its share of readings. "met" is True or False only when
    judged (the period has sufficient data, docs/clinical.md), else None: a handful of
    readings does not meet or miss a 14-day target."""
    lo, hi = preset["range"]
    values = [g for _, g in glycemia.glucose(readings)]
    n = len(values)
    shares = {
        "in_range": 100.0 * sum(1 for g in values if lo <= g <= hi) / n,
        "low_total": 100.0 * sum(1 for g in values if g < lo) / n,
        "very_low": bands["very_low"],
        "high_total": 100.0 * sum(1 for g in values if g > hi) / n,
        "very_high": bands["very_high"],
    }
    out = []
    for key, (op, target) in preset["targets"].items():
        v = shares[key]
        label, limit = TARGET_LABELS[key]
        if limit == "range":
            limit = ("range", lo, hi)
        else:
            limit = (limit[0], {"lo": lo, "hi": hi}.get(limit[1], limit[1]))
        met = (v > target if op == ">" else v < target) if judged else None
        out.append({"key": key, "label": label, "limit": list(limit), "value": v, "op": op,
                    "target": target, "met": met})
    return out


def nest_lows(lows: list[dict]) -> list[dict]:
    """A night's lows as episodes, each once: the level-1 lows with the level-2 lows inside
    them (a level-2 low always lies within a level-1 one), marked with the deepest level
    reached. A level-2 low outside every level-1 low (not expected) stands on its own."""
    level1 = [dict(x, deepest=1, level2=[]) for x in lows if x["level"] == 1]
    out = list(level1)
    for x in lows:
        if x["level"] != 2:
            continue
        host = next((e for e in level1 if e["start_ms"] <= x["start_ms"] <= e["end_ms"]),
                    None)
        if host is None:
            out.append(dict(x, deepest=2, level2=[x]))
        else:
            host["deepest"] = 2
            host["level2"].append(x)
    return sorted(out, key=lambda e: e["start_ms"])


def rem_latency(sleep: dict) -> float | None:
    """The night's REM latency when it has a valid one: sleep staged into REM (not actigraphy),
    REM scored, and REM after sleep onset. A REM epoch right at onset from a wearable or audio
    classifier is a scoring artefact far more often than a sleep-onset REM period, so no
    latency is shown rather than 0 min."""
    lat = sleep.get("rem_latency_min")
    rem_pct = (sleep.get("stage_pct") or {}).get("rem")
    if lat is None or not rem_pct or lat <= 0:
        return None
    return lat


def night_row(doc: dict) -> dict:
    """The night's figures for the trend table, the CSV export and the associations."""
    s, b, g, r = doc["sleep"], doc["breathing"], doc["glucose"], doc["room"]
    summ = g.get("summary") or {}
    return {
        "night": doc["night"], "has_data": doc["has_data"],
        "sleep_source": s["source"], "breathing_source": b.get("source"),
        "tib_min": s["tib_min"], "tst_min": s["tst_min"],
        "tst_h": s["tst_min"] / 60 if s["tst_min"] is not None else None,
        "se_pct": s["se_pct"], "sol_min": s["sol_min"], "waso_min": s["waso_min"],
        "rem_latency_min": rem_latency(s),
        "light_pct": (s["stage_pct"] or {}).get("light"),
        "deep_pct": (s["stage_pct"] or {}).get("deep"),
        "rem_pct": (s["stage_pct"] or {}).get("rem"),
        "snore_pct": b["snore_pct"], "ahi": b["ahi"], "ahi_severity": b["ahi_severity"],
        "ahi_source": b["ahi_source"], "odi3": b["odi3"], "odi4": b["odi4"],
        "noct_period": g["period"], "noct_n": g["n"], "noct_mean": summ.get("mean"),
        "noct_sd": summ.get("sd"), "noct_cv": summ.get("cv_pct"),
        "noct_tir": (g.get("bands") or {}).get("in_range"),
        "noct_tbr": ((g.get("bands") or {}).get("low", 0) + (g.get("bands") or {}).get(
            "very_low", 0)) if g.get("bands") else None,
        # lows: episodes, each once; lows_l2: of which reached level 2 (below 54 mg/dL)
        "lows_l1": len(nest_lows(g["lows"])),
        "lows_l2": sum(1 for e in nest_lows(g["lows"]) if e["deepest"] == 2),
        "dawn_rise": (g.get("dawn") or {}).get("rise"),
        "dawn_flag": (g.get("dawn") or {}).get("flag"),
        "temp_c": (r.get("temp_c") or {}).get("median"),
        "co2_max": (r.get("co2_ppm") or {}).get("max"),
        "noise_max": (r.get("noise_dba") or {}).get("max"),
        "cov_wearable": doc["coverage"]["wearable"], "cov_audio": doc["coverage"]["audio"],
        "cov_inference": doc["coverage"]["inference"],
        "cov_glucose": doc["coverage"]["glucose_readings"],
        "morning": doc.get("morning_glucose"),
    }


def _morning(readings, doc: dict) -> float | None:
    wake = doc["sleep"].get("final_wake_ms")
    if wake is None:
        return None
    vals = [g for t, g in glycemia.glucose(readings) if wake <= t < wake + MORNING_MIN * 60_000]
    return statistics.fmean(vals) if vals else None


def associations(rows: list[dict]) -> list[dict]:
    """Every night factor against every glucose outcome: Pearson r with its Fisher-z 95 %
    interval, the least-squares slope per step of the factor with its 95 % interval, the
    p-value, and the Benjamini-Hochberg q-value over the estimable rows tested together.
    A row is estimable with at least fusion.MIN_NIGHTS nights holding both figures and
    variation in each; the others keep r, p and q as None."""
    out = []
    for pk, plabel, punit, step in PREDICTORS:
        for ok, olabel in OUTCOMES:
            res = fusion.pearson([r[pk] for r in rows], [r[ok] for r in rows])
            row = {"predictor": pk, "predictor_label": plabel, "predictor_unit": punit,
                   "step": step, "outcome": ok, "outcome_label": olabel,
                   "outcome_unit": units.MGDL, **res, "estimable": res["r"] is not None,
                   "p": None, "q": None, "slope_per_step": None, "slope_ci_per_step": None}
            if row["estimable"]:
                row["p"] = stats.pearson_p(res["r"], res["n"])
                row["slope_per_step"] = res["slope"] * step
                row["slope_ci_per_step"] = [v * step for v in stats.slope_ci(
                    res["r"], res["slope"], res["n"])]
            out.append(row)
    tested = [row for row in out if row["estimable"]]
    for row, q in zip(tested, stats.bh_qvalues([row["p"] for row in tested]), strict=True):
        row["q"] = q
    return out


def variability(readings, tz) -> dict:
    """The further consensus and variability figures of docs/clinical.md."""
    median, iqr = glycemia.median_iqr(readings)
    return {"median": median, "iqr": iqr, "j_index": glycemia.j_index(readings),
            "adrr": glycemia.adrr(readings, tz), "modd": glycemia.modd(readings, tz),
            "conga1": glycemia.conga(readings, tz),
            "tight_range_pct": glycemia.time_in(readings, *glycemia.TIGHT_RANGE)}


def episode_counts(ep: dict) -> dict:
    """Episode counts without double counting: level1 counts every episode beyond the level-1
    threshold, of which reached_level2 went beyond the level-2 one too; level2 counts the
    level-2 episodes themselves (one level-1 episode may hold more than one). The listed
    events are the level-1 episodes, each once, with the deepest level it reached. The rate
    per week is per week of CGM data (iglu's per-day rate x 7), not of the calendar: days
    without the sensor do not dilute it; None without data."""
    level1 = ep["level1"]
    return {
        "level1": len(level1),
        "reached_level2": sum(1 for e in level1 if e.reached_level2),
        "level1_only": len(ep["level1_only"]),
        "level2": len(ep["level2"]),
        "extended": len(ep["extended"]),
        "per_week": len(level1) / (ep["hours"] / 168.0) if ep["hours"] else None,
        "events": [{"level": 2 if e.reached_level2 else 1, "start_ms": e.start_ms,
                    "end_ms": e.end_ms, "minutes": e.minutes, "nadir": e.nadir,
                    "mean": e.mean, "extended": e.extended, "ongoing": e.ongoing}
                   for e in level1],
    }


def build_report(data: TenantStore, ps: PatientSettings, end_day: str | None = None,
                 days: int | None = None, with_insights: bool = True) -> dict:
    """The report of `days` local days ending with end_day. with_insights adds the insights
    of the period's nights (cloud/insights.py, as the insights page and API compute them);
    the patient list, which shows only the flags, leaves them out."""
    days = days or ps.report_days
    end_day = end_day or latest_day(data, ps)
    start_ms, end_ms, day_list = period(end_day, days, ps.tz)
    readings = fusion.load_glucose(data, start_ms, end_ms)
    glucose = glycemia.glucose(readings)
    rep: dict = {"tenant": data.tenant_id, "tz": ps.tz.key, "tz_source": ps.tz_source,
                 "targets_preset": ps.targets,
                 "targets_label": ps.preset["label"], "range": list(ps.preset["range"]),
                 "start_day": day_list[0], "end_day": day_list[-1], "days": days,
                 "start_ms": start_ms, "end_ms": end_ms, "n_readings": len(glucose),
                 "sensor_errors": len(readings) - len(glucose)}
    # The zones the bedside node moved between (a phone edge taken abroad): each day and
    # night of the report is counted in the zone the node was in then.
    rep["tz_changes"] = [{"at_ms": int(at * 1000), "from": before, "to": after}
                         for at, before, after in zones.changes(ps.tz)]
    rep["sufficiency"] = glycemia.sufficiency(readings, start_ms, end_ms, days=len(day_list))
    rep["sufficiency"]["days_with_data"] = len(glycemia.daily(readings, ps.tz))
    # Targets, the CV rating and the GRI zone are judged only on sufficient data (>= 70 % of
    # the possible readings over >= 14 days, docs/clinical.md); below it they say so.
    rep["judged"] = rep["sufficiency"]["sufficient"]
    s = glycemia.summary(readings)
    rep["summary"] = s
    if s is not None:
        b = glycemia.bands(readings)
        rep["bands"] = b
        rep["targets"] = targets_check(b, ps.preset, readings, judged=rep["judged"])
        rep["gri"], rep["gri_zone"] = glycemia.gri(b)
        rep["lbgi"], rep["hbgi"] = glycemia.risk_indices(readings)
        rep["mage"] = glycemia.mage_ma(readings, ps.tz)
        rep["variability"] = variability(readings, ps.tz)
        rep["gmi_ok"] = True
    else:
        rep.update(bands=None, targets=[], gri=None, gri_zone=None, lbgi=None, hbgi=None,
                   mage=None, variability=None)
    rep["hypo"] = episode_counts(glycemia.episodes(readings, "hypo", ps.tz))
    rep["hyper"] = episode_counts(glycemia.episodes(readings, "hyper", ps.tz))
    rep["agp"] = glycemia.agp(readings, ps.tz)
    by_day = glycemia.daily(readings, ps.tz)
    rep["daily"] = [{"day": d, "readings": [[t, g] for t, g in by_day.get(d, [])]}
                    for d in day_list]
    nights = []
    # each night whose morning (a day sleeper's wake) falls in the period, by the schedule
    # it was slept by
    for night in dict.fromkeys(n for d in day_list for n in ps.nights_ending_on(d)):
        doc = patient_night(data, ps, night)
        if not doc["has_data"]:
            continue
        nights.append((doc, night_row(doc)))
    night_readings = fusion.load_glucose(data, start_ms - MS_DAY, end_ms + MS_DAY // 2)
    for doc, row in nights:
        row["morning"] = _morning(night_readings, doc)
    rep["nights"] = [row for _, row in nights]
    rep["night_lows"] = [{"night": doc["night"], **low} for doc, _ in nights
                         for low in nest_lows(doc["findings"]["lows"])]
    rep["associations"] = associations(rep["nights"])
    if with_insights:  # the nights whose morning falls in the period, as listed above
        from nightlink.cloud import insights  # it builds on this module

        last_night = ps.night_ending_on(end_day)
        rep["insights"] = insights.insights(data, ps, last_night, days)
    rep["alarm_policy"] = data.alarm_policy()  # the clocks' predicted-low policy, if reported
    rep["alert_policy"] = alert_policy(data, rep["alarm_policy"])
    rep["alarm_budget"] = ps.alarm_budget
    rep["flags"] = flags(rep)
    return rep


def alert_policy(data, reported: dict | None) -> dict:
    """The predicted-low alert this server sends the family's phones: {"text", "source"
    ("edge", "cloud" or "model", as cloud.alerts.LowModel), "calibration" (the server's own
    calibration, when it makes one: nights, false alarms a week, when)}. `reported`: the
    bedside node's policy (TenantStore.alarm_policy())."""
    from nightlink.cloud import alert_calibration
    from nightlink.cloud.alerts import LowModel

    now_ms = int(datetime.now().timestamp() * 1000)
    calibration = data.alarm_calibration()
    low = LowModel.of(reported, calibration=calibration, now_ms=now_ms)
    own = alert_calibration.own(data, now_ms, reported)
    return {"text": low.text(), "source": low.source,
            "calibration": calibration if own else None}


def flags(rep: dict) -> list[dict]:
    """What a doctor's patient list shows next to the patient."""
    out = []
    for t in rep.get("targets") or []:
        if t["key"] in ("low_total", "very_low") and t["met"] is False:
            out.append({"key": "tbr", "text": f"{t['label']} {t['value']:.1f} % "
                        f"(target {t['op']} {t['target']:g} %)"})
            break
    ahi = [r["ahi"] for r in rep["nights"] if r["ahi"] is not None]
    if ahi and max(ahi) >= 15:
        out.append({"key": "ahi", "text": f"AHI >= 15 on {sum(1 for a in ahi if a >= 15)} of "
                    f"{len(ahi)} nights (max {max(ahi):.1f}/h)"})
    low_nights = sum(1 for r in rep["nights"] if r["lows_l1"])
    if low_nights:
        out.append({"key": "lows", "text": f"Nocturnal lows on {low_nights} night"
                    f"{'s' if low_nights != 1 else ''}"})
    suf = rep["sufficiency"]
    if not suf["sufficient"]:
        out.append({"key": "data", "text": f"Low data sufficiency ({suf['days']:.0f} days, "
                    f"{100 * suf['share']:.0f} % of readings; consensus: 14 days, >= 70 %)"})
    return out


def fmt_glucose(mgdl, unit: str, nd_mmol: int = 1) -> str:
    if mgdl is None:
        return "–"
    if unit == units.MMOLL:
        return f"{units.to_mmoll(mgdl):.{nd_mmol}f}"
    return f"{mgdl:.0f}"
