"""Scoring predicted-low alarms on real CGM (tools/train/cgm_real.py), nights and whole days
apart, next to the CGM's own threshold alarm (glucose < 70 now) and a trend alarm (the straight
line through the last 20 minutes below 70 in 30 minutes).

The CGM is the reference. An event is a low < 70 mg/dL lasting >= 15 minutes; an alarm detects
it when it sounds between 30 minutes before its onset and 15 minutes after; an alarm sounding
inside a low already detected-or-missed (later than 15 minutes after onset, before its end) is
neither true nor false. Every other alarm is false; a near miss is a false alarm whose glucose
bottomed out at 70-80 mg/dL within 45 minutes, a dip one that went below 70 for less than
15 minutes. Only nights (22:00-07:00) and days with glucose in >= 70 % of their slots count.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from nightlink.edge.features.glucose_risk import (
    EARLY_SLOTS,
    HISTORY,
    HORIZON,
    LATE_SLOTS,
    MIN_CAL_NIGHTS,
    AlarmPolicy,
    calibrate_threshold,
    fill_history,
    history_rows,
    is_false_alarm,
    pick_threshold,
    policy_alarms,
    slope_mgdl_per_min,
)
from nightlink.tools.train.cgm_real import (
    LOW_MGDL,
    MIN_COVERAGE,
    NIGHT_SLOTS,
    SLOT_MIN,
    Person,
    events,
)
from nightlink.tools.train.glucose import Tally, refractory

NADIR_SLOTS = 45 // SLOT_MIN
TREND_WINDOW = 20 // SLOT_MIN  # slots before now in the trend line
CANDIDATES = np.arange(100, 1000, 25)
RECENT_NIGHTS = 14
EMPTY_NIGHTS_NOTE = ("note: no night (22:00-07:00) has glucose in 70 % of its 5-minute slots, "
                     "so the night figures are empty.")


def model_rows(p: Person) -> tuple[np.ndarray, np.ndarray]:
    """(histories, slots) at every slot where a reading arrived and the hour before suffices."""
    slots = np.flatnonzero(p.observed)
    rows = history_rows(p.x)[slots]
    full = (rows > 0).all(axis=1)
    keep = full.copy()
    rows = rows.copy()
    for i in np.flatnonzero(~full):
        f = fill_history(rows[i])
        if f is not None:
            rows[i] = f
            keep[i] = True
    return rows[keep].reshape(-1, HISTORY), slots[keep]


@dataclass
class Predictions:
    slots: np.ndarray
    permille: np.ndarray
    forecast: np.ndarray
    slope: np.ndarray
    trend: np.ndarray  # the trend baseline's 30-minute forecast from the same rows


def trend_line(win: np.ndarray, have: np.ndarray) -> np.ndarray:
    """The least-squares line through the readings present (`have`) of each window of the
    last 20 minutes, 30 minutes after the window's last slot (mg/dL)."""
    t = np.arange(-TREND_WINDOW, 1) * SLOT_MIN
    cnt = np.maximum(have.sum(axis=1), 1)
    tm = (have * t).sum(axis=1) / cnt
    xm = (have * win).sum(axis=1) / cnt
    dt = np.where(have, t - tm[:, None], 0.0)
    rate = (dt * (win - xm[:, None])).sum(axis=1) / np.maximum((dt ** 2).sum(axis=1), 1e-9)
    return xm + rate * (30 - tm)


def trend_forecast(rows: np.ndarray) -> np.ndarray:
    """The trend alarm's line through the last 20 minutes of each model input row, 30 minutes
    ahead (mg/dL, 39..400): its forecast, scored on the model's own rows."""
    recent = np.asarray(rows, dtype=np.float64)[:, -(TREND_WINDOW + 1):]
    return np.clip(trend_line(recent, np.ones(recent.shape, dtype=bool)), 39, 400)


def predict(runtime, p: Person, batch: int = 20000) -> Predictions:
    rows, slots = model_rows(p)
    perm, fc = [], []
    for i in range(0, rows.shape[0], batch):
        _lq, pm, f = runtime.predict(rows[i:i + batch])
        perm.append(pm)
        fc.append(f)
    if not perm:
        return Predictions(slots, np.zeros(0, int), np.zeros(0), np.zeros(0), np.zeros(0))
    slope = slope_mgdl_per_min(p.x)[slots]
    return Predictions(slots, np.concatenate(perm).astype(int),
                       np.clip(np.concatenate(fc), 39, 400), slope, trend_forecast(rows))


def _alarms(p: Person, pred: Predictions, policy: AlarmPolicy) -> list[int]:
    """The model's alarms under the policy, held off after the person's carbs if known."""
    return policy_alarms(pred.slots, pred.permille, pred.forecast, pred.slope, policy,
                         carbs=p.carbs, glucose=p.x[pred.slots])


FLOORS = (400.0, 110.0, 100.0, 95.0, 90.0, 85.0, 80.0)


def choose_floor(runtime, people: list[Person], policy: AlarmPolicy,
                 floors=FLOORS, preds: dict | None = None) -> tuple[float, list[dict]]:
    """The forecast floor for `policy`, chosen on `people` (the training people of a fold,
    never its test people): the floor with the fewest false alarms a night whose recall stays
    within 0.01 of no floor at all and whose median warning is no shorter, at the policy's own
    threshold. Returns the floor and what each candidate gave. `preds`: the predictions by
    person's name when already made."""
    preds = preds if preds is not None else {p.name: predict(runtime, p) for p in people}
    rows = []
    for floor in floors:
        cand = replace(policy, forecast_floor_mgdl=float(floor))
        totals, chosen = new_totals(), []
        score(runtime, people, cand, totals, chosen, calibrate=False, preds=preds)
        f = figures(totals, cand, chosen, len(people))
        rows.append({"floor": float(floor), "recall": f["recall"],
                     "false_alarms_per_night": f["false_alarms_per_night"],
                     "median_lead_min": f["median_lead_min"]})
    off = rows[0]
    best = off
    for r in rows[1:]:
        if r["recall"] is None or off["recall"] is None:
            continue
        ok = (r["recall"] >= off["recall"] - 0.01
              and (r["median_lead_min"] or 0) >= (off["median_lead_min"] or 0))
        if ok and (r["false_alarms_per_night"] or 0) < (best["false_alarms_per_night"] or 0):
            best = r
    return best["floor"], rows


def choose_threshold(runtime, people: list[Person], policy: AlarmPolicy,
                     preds: dict | None = None) -> tuple[int, list[dict]]:
    """The model's own threshold, sounded until a person has nights enough to calibrate on,
    chosen on `people` (a fold's training people, never its test people) by the calibration's
    own rule (pick_threshold) on all their nights together: among the thresholds within the
    policy's bounds whose false alarms fit its budget, the one that warned of the most lows
    before they began, the least sensitive of equals. Returns the threshold and what each
    candidate gave. `preds`: the predictions by person's name when already made."""
    preds = preds if preds is not None else {p.name: predict(runtime, p) for p in people}
    cands = CANDIDATES[(CANDIDATES >= policy.lowest_permille)
                       & (CANDIDATES <= policy.highest_permille)]
    rows, false, caught, nights = [], [], [], 0
    for c in cands:
        totals, chosen = new_totals(), []
        score(runtime, people, replace(policy, alarm_permille=int(c)), totals, chosen,
              calibrate=False, preds=preds)
        t = _sum(n for per in totals["night"]["fixed"] for n in per.values())
        nights = int(t.periods)
        false.append(t.false_alarms)
        caught.append(warned(t))
        rows.append({"permille": int(c), "lows_warned": warned(t), "lows_caught": t.detected,
                     "lows": t.events,
                     "false_alarms_per_night": round(t.false_alarms / max(1, nights), 3)})
    return pick_threshold(np.array(false), np.array(caught), nights, policy, cands), rows


def threshold_alarms(p: Person, refractory_min: int = 60) -> list[int]:
    slots = np.flatnonzero(p.observed & (p.x > 0) & (p.x < LOW_MGDL))
    return refractory(slots, refractory_min)


def trend_alarms(p: Person, refractory_min: int = 60) -> list[int]:
    """The least-squares line through the last 20 minutes (>= 4 of 5 readings present) is
    below 70 mg/dL 30 minutes ahead."""
    padded = np.r_[np.zeros(TREND_WINDOW), p.x]
    win = np.lib.stride_tricks.sliding_window_view(padded, TREND_WINDOW + 1)[:p.x.size]
    have = win > 0
    ok = (p.observed & (have.sum(axis=1) >= TREND_WINDOW)
          & (trend_line(win, have) < LOW_MGDL))
    return refractory(np.flatnonzero(ok), refractory_min)


# -- tallies per night or day ------------------------------------------------------------------


@dataclass
class Frame:
    """A person's periods (nights or days) and their events, once per person."""

    period: np.ndarray  # per slot: period id, -1 outside any counted period
    ids: np.ndarray  # counted period ids, ascending
    events: list
    held: np.ndarray

    @classmethod
    def of(cls, p: Person, nights: bool) -> Frame:
        if nights:
            pid = p.night_id()
            size = NIGHT_SLOTS
        else:
            pid = (p.start_min + SLOT_MIN * np.arange(p.x.size)) // 1440
            size = 1440 // SLOT_MIN
        covered = ~np.isnan(p.held) & (pid >= 0)
        ids, counts = np.unique(pid[covered], return_counts=True)
        ids = ids[counts >= MIN_COVERAGE * size]
        period = np.where(np.isin(pid, ids), pid, -1)
        return cls(period, ids, events(p.held), p.held)

    def tallies(self, alarms: list[int]) -> dict[int, Tally]:
        out = {int(i): Tally(periods=1) for i in self.ids}
        counted = self.period >= 0
        for i, c in zip(*np.unique(self.period[counted], return_counts=True), strict=True):
            out[int(i)].hours = c * SLOT_MIN / 60
        alarms = np.asarray(alarms, dtype=np.int64)
        for onset, _end in self.events:
            pid = int(self.period[onset])
            if pid < 0:
                continue
            t = out[pid]
            t.events += 1
            hits = alarms[(alarms >= onset - EARLY_SLOTS) & (alarms <= onset + LATE_SLOTS)]
            if hits.size:
                t.detected += 1
                t.leads.append(int(onset - hits[0]) * SLOT_MIN)
        for a in alarms:
            pid = int(self.period[a])
            if pid < 0:
                continue
            t = out[pid]
            false = is_false_alarm(int(a), self.events)  # the edge's rule, calibration's too
            if false is False:
                t.alarms += 1
                t.true_alarms += 1
            elif false is None:
                continue  # inside a low already under way
            else:
                t.alarms += 1
                ahead = self.held[a:a + NADIR_SLOTS + 1]
                nadir = np.nanmin(ahead) if np.isfinite(ahead).any() else np.inf
                if LOW_MGDL <= nadir < LOW_MGDL + 10:
                    t.near_misses += 1
                elif nadir < LOW_MGDL:
                    t.dips += 1
        return out

    def add_errors(self, tallies: dict[int, Tally], p: Person, pred: Predictions,
                   forecast: np.ndarray | None = None) -> None:
        """Squared 30-minute forecast errors (the model's, or `forecast` at the same slots)
        against the reading that arrived then."""
        j = pred.slots + HORIZON
        ok = j < p.x.size
        fc = pred.forecast if forecast is None else forecast
        j, fc, s = j[ok], fc[ok], pred.slots[ok]
        ok = p.observed[j] & (self.period[s] >= 0)
        err = (fc[ok] - p.x[j[ok]]) ** 2
        for pid, e in zip(self.period[s[ok]], err, strict=True):
            t = tallies[int(pid)]
            t.sq_err += float(e)
            t.n_err += 1


def _sum(tallies) -> Tally:
    out = Tally()
    for t in tallies:
        out += t
    return out


def per_person_figures(people: list[Tally], per: str) -> dict:
    """Median and worst decile across people (recall, precision: low end; false alarms: high)."""
    out = {}
    rec = [t.detected / t.events for t in people if t.events]
    pre = [t.true_alarms / t.alarms for t in people if t.alarms]
    fa = [t.false_alarms / t.periods for t in people if t.periods]
    for name, vals, worst in (("recall", rec, 10), ("precision", pre, 10),
                              (f"false_alarms_per_{per}", fa, 90)):
        if vals:
            out[f"{name}_median"] = round(float(np.median(vals)), 3)
            out[f"{name}_worst_decile"] = round(float(np.percentile(vals, worst)), 3)
    return out


def warned(t: Tally) -> int:
    """Lows an alarm warned of before they began (lows_caught's rule, from the tally's leads)."""
    return sum(1 for lead in t.leads if lead > 0)


def calibrated_tallies(frame: Frame, by_threshold: dict[int, dict[int, Tally]],
                       policy: AlarmPolicy) -> tuple[dict[int, Tally], list[int]]:
    """Each night scored at the threshold the edge would have calibrated that morning from the
    person's previous RECENT_NIGHTS counted nights."""
    out, chosen = {}, []
    for k, night in enumerate(frame.ids):
        recent = frame.ids[max(0, k - RECENT_NIGHTS):k]
        false = {int(n): np.array([by_threshold[int(c)][int(n)].false_alarms for c in CANDIDATES])
                 for n in recent}
        caught = {int(n): np.array([warned(by_threshold[int(c)][int(n)]) for c in CANDIDATES])
                  for n in recent}
        thr = calibrate_threshold(false, caught, policy, CANDIDATES)
        chosen.append(thr)
        out[int(night)] = by_threshold[thr][int(night)]
    return out, chosen


def evaluate(runtime, people: list[Person], policy: AlarmPolicy, *, calibrate: bool = True) -> dict:
    """Figures for nights (no prefix) and whole days (`day_`), the model under the policy and
    both baselines (`threshold_`, `trend_`), per person, and what the policy was."""
    totals, chosen = new_totals(), []
    score(runtime, people, policy, totals, chosen, calibrate=calibrate)
    return figures(totals, policy, chosen, len(people))


def new_totals() -> dict:
    out: dict = {k: {"model": [], "fixed": [], "threshold": [], "trend": []}
                 for k in ("night", "day")}
    out["people"] = []  # (name, sampling interval in minutes), in the order scored
    return out


def score(runtime, people: list[Person], policy: AlarmPolicy, totals: dict, chosen_all: list,
          *, calibrate: bool = True, preds: dict | None = None) -> None:
    """Add each person's tallies to `totals` (several runs, e.g. folds, can pool them);
    `preds`, the predictions by person's name when already made."""
    for p in people:
        pred = preds[p.name] if preds is not None else predict(runtime, p)
        nights, days = Frame.of(p, True), Frame.of(p, False)
        fixed = _alarms(p, pred, policy)
        base = {"threshold": threshold_alarms(p, policy.refractory_min),
                "trend": trend_alarms(p, policy.refractory_min)}
        totals["people"].append((p.name, p.interval_min))
        for key, frame in (("night", nights), ("day", days)):
            t_fixed = frame.tallies(fixed)
            frame.add_errors(t_fixed, p, pred)
            totals[key]["fixed"].append(t_fixed)
            for name, alarms in base.items():
                totals[key][name].append(frame.tallies(alarms))
            frame.add_errors(totals[key]["trend"][-1], p, pred, pred.trend)
        if calibrate:
            by_thr = {}
            for c in CANDIDATES:
                al = _alarms(p, pred, replace(policy, alarm_permille=int(c)))
                by_thr[int(c)] = nights.tallies(al)
            t_cal, chosen = calibrated_tallies(nights, by_thr, policy)
            night_fixed = totals["night"]["fixed"][-1]
            for n, t in t_cal.items():  # the forecast errors do not depend on the threshold
                t = replace(t, sq_err=night_fixed[n].sq_err, n_err=night_fixed[n].n_err)
                t_cal[n] = t
            totals["night"]["model"].append(t_cal)
            chosen_all.extend(chosen)
        else:
            totals["night"]["model"].append(totals["night"]["fixed"][-1])
        totals["day"]["model"].append(totals["day"]["fixed"][-1])


def figures(totals, policy: AlarmPolicy, chosen: list[int], n_people: int) -> dict:
    out: dict = {}
    for key, per, pre in (("night", "night", ""), ("day", "day", "day_")):
        for name, prefix in (("model", ""), ("threshold", "threshold_"), ("trend", "trend_"),
                             ("fixed", "fixed_")):
            per_person = [_sum(t.values()) for t in totals[key][name]]
            total = _sum(per_person)
            out.update(total.figures(per, pre + prefix))
            if name in ("model", "trend"):
                out.update(rmse_split(per_person, totals["people"], pre + prefix))
            if name == "model":
                out[f"{pre}events"] = total.events
                out[f"{pre}{per}s"] = total.periods
                out[f"{pre}hours"] = round(total.hours, 1)
            out[f"{pre}{prefix}per_person"] = per_person_figures(per_person, per)
    out["people"] = n_people
    # those with a night or a day counted (>= 70 % of its slots): a file of a few hours adds
    # to `people`, not to any figure
    out["people_scored"] = sum(
        1 for n, d in zip(totals["night"]["fixed"], totals["day"]["fixed"], strict=True)
        if n or d)
    out["policy"] = policy_dict(policy)
    out["policy"]["calibrated_permille_median"] = int(np.median(chosen)) if chosen else None
    if chosen:  # each night at the threshold calibrated from the person's previous nights
        out["policy"]["text"] = (
            policy.describe(state=False) + f"; each night at the threshold calibrated on the "
            f"person's previous {RECENT_NIGHTS} nights (median {int(np.median(chosen))} permille; "
            f"the model's own while fewer than {MIN_CAL_NIGHTS})")
    else:
        out["policy"]["text"] = policy.describe()
    return out


def _rmse(tallies) -> float | None:
    t = _sum(tallies)
    return round(float(np.sqrt(t.sq_err / t.n_err)), 2) if t.n_err else None


def rmse_split(per_person: list[Tally], people: list[tuple[str, int]], prefix: str) -> dict:
    """The 30-minute forecast RMSE overall, by the sensor's sampling interval (minutes) and
    across people (median, worst and whose): whether one kind of sensor or a few people carry
    the error."""
    by_interval: dict[str, list[Tally]] = {}
    for (_name, interval), t in zip(people, per_person, strict=True):
        by_interval.setdefault(str(interval), []).append(t)
    each = {name: _rmse([t]) for (name, _i), t in zip(people, per_person, strict=True)}
    each = {k: v for k, v in each.items() if v is not None}
    split: dict = {}
    if each:
        worst = max(each, key=each.get)
        split = {"median": round(float(np.median(list(each.values()))), 2),
                 "worst": each[worst], "worst_person": worst}
    return {f"{prefix}rmse_30": _rmse(per_person),
            f"{prefix}rmse_30_by_interval": {k: _rmse(v) for k, v in sorted(
                by_interval.items(), key=lambda kv: int(kv[0]))},
            f"{prefix}rmse_30_per_person": split}


HEADLINE = ("recall", "precision", "false_alarms_per_night", "near_misses_per_night",
            "median_lead_min", "rmse_30", "events", "nights", "threshold_recall",
            "threshold_precision", "threshold_false_alarms_per_night", "threshold_median_lead_min",
            "trend_recall", "trend_precision", "trend_false_alarms_per_night",
            "trend_median_lead_min", "trend_rmse_30", "rmse_30_by_interval",
            "trend_rmse_30_by_interval", "rmse_30_per_person", "day_recall", "day_precision",
            "day_false_alarms_per_day", "day_median_lead_min", "day_rmse_30")


def policy_dict(policy: AlarmPolicy) -> dict:
    return {
        "alarm_permille": policy.alarm_permille, "persist": policy.persist,
        "refractory_min": policy.refractory_min, "forecast_floor_mgdl": policy.forecast_floor_mgdl,
        "rising_mgdl_per_min": policy.rising_mgdl_per_min,
        "budget_per_week": policy.budget_per_week,
        "lowest_permille": policy.lowest_permille, "highest_permille": policy.highest_permille,
        "carb_hold_min": policy.carb_hold_min, "urgent_mgdl": policy.urgent_mgdl,
    }


# -- training rows -----------------------------------------------------------------------------


def samples(people: list[Person], *, keep_every: int = 1, seed: int = 0):
    """(histories mg/dL, low within 30 min, reading 30 min ahead or NaN) from real CGM.

    The target is a low that counts (>= 15 minutes) under way at some point in the next 30
    minutes, so brief dips are not taught as lows. `keep_every` thins the rows far from any
    low (newest reading >= 120 mg/dL and no low ahead) to keep training short."""
    rng = np.random.default_rng(seed)
    xs, ys, fs = [], [], []
    for p in people:
        rows, slots = model_rows(p)
        if not slots.size:
            continue
        in_event = np.zeros(p.x.size + HORIZON + 1, dtype=bool)
        for on, end in events(p.held):
            in_event[on:end] = True
        ahead = np.lib.stride_tricks.sliding_window_view(in_event[1:], HORIZON)[slots]
        y = ahead.any(axis=1)
        j = slots + HORIZON
        fut = np.full(slots.size, np.nan, dtype=np.float32)
        ok = j < p.x.size
        ok[ok] &= p.observed[j[ok]]
        fut[ok] = p.x[j[ok]]
        keep = y | (rows[:, -1] < 120) | (rng.random(slots.size) < 1.0 / keep_every)
        xs.append(rows[keep])
        ys.append(y[keep])
        fs.append(fut[keep])
    if not xs:
        return (np.zeros((0, HISTORY), dtype=np.float32), np.zeros(0, dtype=np.uint8),
                np.zeros(0, dtype=np.float32))
    return (np.concatenate(xs).astype(np.float32), np.concatenate(ys).astype(np.uint8),
            np.concatenate(fs))
