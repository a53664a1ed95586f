"""The predicted-low threshold calibrated on the person's own nights by the cloud, for a
family without a bedside node (xDrip+, AndroidAPS or Loop uploading straight to the cloud).

A bedside node calibrates the threshold each morning and reports it (its status report's
`alarm_policy_params`); the cloud's predicted-low alert then runs the clock's model under
that policy (cloud/alerts.py). Without a node, the cloud does the same calibration itself,
once a day per tenant (`AlertWorker`), on the readings and carbs it stores:

- the last `lowrisk.CAL_RECENT_NIGHTS` nights (22:00-07:00 in the patient's time zone, the
  nights the model's figures are scored on) with CGM over at least 70 % of the night;
- at each reading (readings 4.5 minutes apart: a 1-minute sensor's once per 5 minutes) the
  highest threshold at which the alert would sound there, under the model's policy
  (`lowrisk.sounding_permille`: forecast floor, not while rising, held after carbs);
- for each candidate threshold from `lowrisk.LOWEST_PERMILLE` to `HIGHEST_PERMILLE`, every
  `CAL_STEP`, the alerts the cloud would have raised (at most one per refractory period) and
  how many were false: no low (a level-1 episode, < 70 mg/dL for 15 minutes, as the reports
  count them) began from 15 minutes before the alert to 30 minutes after it; an alert inside
  a low already under way is neither;
- among the candidates whose false alerts a night fit the person's budget (false alarms a
  week, the patient settings' `alarm_budget`, else the model's default), the one that warned
  of the most of the person's lows on those nights (an alert in the 30 minutes before a low's
  start), the least sensitive of equals; else the least sensitive one allowed. With fewer
  than `CAL_MIN_NIGHTS` such nights, the model's own threshold, said as such.

The same rule as the edge's (edge/features/glucose_risk.calibrated_policy), on the cloud's
own alert: the edge's threshold wins whenever a node reports one, since the clock on the
nightstand sounds that one.
"""

from __future__ import annotations

import time
from bisect import bisect_left, bisect_right
from datetime import datetime
from zoneinfo import ZoneInfo

from nightlink.cloud import glycemia
from nightlink.shared import lowrisk

MINUTE_MS = 60_000
DAY_MS = 86_400_000
NIGHT_MIN = (22 * 60, 7 * 60)  # 22:00-07:00 local
COVERED = 0.7  # a night counts with CGM over this share of it
EVERY_MS = DAY_MS  # how often the worker recalibrates a tenant
# how far back a calibration reads: its nights, and the hour of readings before the first
READ_BACK_MS = (lowrisk.CAL_RECENT_NIGHTS + 2) * DAY_MS
_EARLY_MS = 15 * MINUTE_MS  # a low that began this long before the alert: the alert was true
_AHEAD_MS = 30 * MINUTE_MS  # ... or that began this long after it
# readings before an evaluation that decide it: the hour of history, the persist chain, slack
_WINDOW_MS = (60 + 6 * 5 + 15) * MINUTE_MS


def _night_of(t_ms: int, tz: ZoneInfo, night=NIGHT_MIN) -> int | None:
    """The night a moment belongs to (days since the epoch of its evening, local), None
    outside the night window."""
    local = datetime.fromtimestamp(t_ms / 1000, tz)
    minute = local.hour * 60 + local.minute
    start, end = night
    inside = (minute >= start or minute < end) if start > end else start <= minute < end
    if not inside:
        return None
    day = local.date().toordinal()
    return day - 1 if start > end and minute < end else day


def covered_nights(readings, tz: ZoneInfo, night=NIGHT_MIN) -> list[int]:
    """The nights with CGM over COVERED of them, oldest first (grid points with glucose)."""
    g = glycemia.grid(readings, tz)
    if g is None:
        return []
    span = (night[1] - night[0]) % 1440 or 1440
    counts: dict[int, int] = {}
    for k, v in enumerate(g.values):
        if v is not None:
            n = _night_of(g.time_ms(k), tz, night)
            if n is not None:
                counts[n] = counts.get(n, 0) + 1
    return sorted(n for n, c in counts.items() if c * g.dt_min >= COVERED * span)


def sounding(readings, carbs_ms: list[int], policy=lowrisk.DEFAULT_POLICY,
             model=None) -> list[tuple[int, int]]:
    """(t_ms, p) at each reading (4.5 minutes apart) where the policy would sound at any
    threshold up to p; readings (t_ms, sgv) oldest first, carbs_ms the times of carbs.
    Without a `model`, the network runs on all the hours at once (cloud/lowrisk_batch.py):
    one pass records them, a second decides with the answers."""
    if model is None:
        from nightlink.cloud import lowrisk_batch

        asked = lowrisk_batch.Recorder()
        _sounding(readings, carbs_ms, policy, asked)
        model = lowrisk_batch.Answered(list(asked.seen))
    return _sounding(readings, carbs_ms, policy, model)


def _sounding(readings, carbs_ms: list[int], policy, model) -> list[tuple[int, int]]:
    times = [t for t, _ in readings]
    carbs = sorted(carbs_ms)
    hold_ms = policy[5] * MINUTE_MS
    out, last = [], None
    for i, (t, _g) in enumerate(readings):
        if last is not None and t - last < lowrisk.PREDICT_GAP_MS:
            continue
        last = t
        # the newest carbs that could hold this reading off (entered up to 10 minutes ahead)
        c = bisect_right(carbs, t + 10 * MINUTE_MS)
        carb = carbs[c - 1] if c and t - carbs[c - 1] < hold_ms else None
        lo = bisect_left(times, t - _WINDOW_MS)
        got = lowrisk.sounding_permille(model, readings[lo:i + 1], t, policy, carb)
        if got is not None:
            out.append((t, got[0]))
    return out


def alerts_at(points: list[tuple[int, int]], threshold: int, refractory_min: int) -> list[int]:
    """When the cloud would alert at this threshold: at most once per refractory period."""
    out, last = [], None
    for t, p in points:
        if p >= threshold and (last is None or t - last >= refractory_min * MINUTE_MS):
            out.append(t)
            last = t
    return out


def is_false(t_ms: int, lows) -> bool | None:
    """True for an alert no low followed, None for one inside a low under way, else False."""
    if any(e.start_ms - _AHEAD_MS <= t_ms <= e.start_ms + _EARLY_MS for e in lows):
        return False
    if any(e.start_ms + _EARLY_MS < t_ms <= e.end_ms for e in lows):
        return None
    return True


def _caught(low, alerts: list[int]) -> bool:
    """An alert warned of the low: it sounded in the 30 minutes before the low's start."""
    i = bisect_left(alerts, low.start_ms - _AHEAD_MS)
    return i < len(alerts) and alerts[i] < low.start_ms


def calibrate(readings, carbs_ms: list[int], tz: ZoneInfo, now_ms: int,
              budget_per_week: float | None = None, night=NIGHT_MIN, points=None) -> dict:
    """The calibration (a JSON object the store keeps): `permille` (the threshold to use),
    `calibrated` (False: too few nights, the model's own), `nights`, `false_per_week` (how
    often that threshold would have alerted falsely on them; None when not calibrated),
    `budget_per_week`, `computed_ms`, `night` and `tz`. readings: (t_ms, sgv), any order.
    `points`: sounding()'s of these readings and carbs when already at hand (a replay day
    after day), else computed."""
    budget = budget_or_default(budget_per_week)
    since = now_ms - READ_BACK_MS
    pts = sorted((int(t), g) for t, g in readings if g >= 39 and since <= t <= now_ms)
    nights = covered_nights(pts, tz, night)[-lowrisk.CAL_RECENT_NIGHTS:]
    doc = {"permille": lowrisk.ALARM_PERMILLE, "calibrated": False, "nights": len(nights),
           "false_per_week": None, "budget_per_week": budget, "computed_ms": int(now_ms),
           "night": f"{night[0] // 60:02d}:{night[0] % 60:02d}-{night[1] // 60:02d}:"
                    f"{night[1] % 60:02d}", "tz": tz.key}
    if len(nights) < lowrisk.CAL_MIN_NIGHTS:
        return doc
    policy = lowrisk.DEFAULT_POLICY
    points = (sounding(pts, carbs_ms, policy) if points is None
              else [(t, p) for t, p in points if since <= t <= now_ms])
    lows = glycemia.hypo_events(pts, 1, tz)
    counted = set(nights)
    night_lows = [e for e in lows if _night_of(e.start_ms, tz, night) in counted]
    false, caught = {}, {}
    candidates = list(range(lowrisk.LOWEST_PERMILLE, lowrisk.HIGHEST_PERMILLE + 1,
                            lowrisk.CAL_STEP))
    for c in candidates:
        alerts = alerts_at(points, c, policy[2])
        false[c] = sum(1 for t in alerts
                       if _night_of(t, tz, night) in counted and is_false(t, lows))
        caught[c] = sum(1 for e in night_lows if _caught(e, alerts))
    # in whole counts: 1 false alarm in 5 nights is 1.4 a week, within a budget of 1.4
    fits = [c for c in candidates if false[c] * 7 <= budget * len(nights) + 1e-9]
    # the most lows warned of, then the least sensitive (candidates ascend)
    chosen = max(fits, key=lambda c: (caught[c], c)) if fits else candidates[-1]
    doc.update(permille=chosen, calibrated=True,
               false_per_week=round(false[chosen] * 7 / len(nights), 2))
    return doc


def budget_or_default(budget_per_week: float | None) -> float:
    """The false alarms a week accepted: the patient's setting, else the model's default."""
    return lowrisk.BUDGET_PER_WEEK if budget_per_week is None else float(budget_per_week)


def own(data, now_ms: int | None = None, reported=False) -> bool:
    """True when no bedside node reports the tenant's policy (or none did for a week, as of
    now_ms or now): the cloud calibrates its own. `reported`: TenantStore.alarm_policy()
    when the caller has already read it."""
    from nightlink.cloud.alerts import LowModel

    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    reported = data.alarm_policy() if reported is False else reported
    return LowModel.of(reported, now_ms=now_ms).source != "edge"


def due(data, now_ms: int) -> bool:
    """True when the cloud calibrates the tenant's threshold (own()) and its calibration is
    missing, over a day old, or made for another budget or time zone than the patient's."""
    if not own(data, now_ms):
        return False
    last = data.alarm_calibration()
    if last is None or not 0 <= now_ms - int(last.get("computed_ms", 0)) < EVERY_MS:
        return True
    from nightlink.cloud.reports.settings import patient_settings

    ps = patient_settings(data)  # a budget or time zone changed since: at once
    return (last.get("budget_per_week") != budget_or_default(ps.alarm_budget)
            or last.get("tz") != ps.tz.key)


def recalibrate_if_due(data, now_ms: int) -> dict | None:
    """recalibrate() in this thread when due(); None when not."""
    return recalibrate(data, now_ms) if due(data, now_ms) else None


def recalibrate(data, now_ms: int | None = None) -> dict:
    """Calibrate the tenant's threshold on its stored readings and carbs, and keep it. The
    readings are read as (time, value) pairs, not as Nightscout documents (two weeks of a
    1-minute sensor's documents took 0.3 s to read)."""
    from nightlink.cloud.reports.settings import patient_settings

    now_ms = int(time.time() * 1000) if now_ms is None else int(now_ms)
    ps = patient_settings(data)
    since = now_ms - READ_BACK_MS
    readings = [(t, int(v) if float(v).is_integer() else v)
                for t, v in data.docs.readings(since, now_ms + 1)]
    doc = calibrate(readings, data.carbs_times(since, now_ms), ps.tz, now_ms, ps.alarm_budget)
    data.set_alarm_calibration(doc)
    return doc
