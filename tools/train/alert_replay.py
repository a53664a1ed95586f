"""The cloud's glucose alerts replayed over real CGM (`nightlink eval alerts`): each person's
readings stored in turn and `cloud.alerts.evaluate` run at each, with urgent_low, low and
predicted_low on at their defaults, as the alert worker runs them; the alerts scored by the
rules of tools/train/glucose_real.py (nights 22:00-07:00 and whole days apart). Three times:
with the predicted low as the clock's model under its own policy (no prefix), under the
threshold the cloud calibrates each day on the person's previous nights when no bedside node
reports one (`cal_`, cloud/alert_calibration.py, at the model's default budget; the readings'
clock times taken as the person's), and as the straight line the cloud used before
(`line_`). Figures for the predicted-low alerts alone (`predicted_`) and for every low alert
the family gets (`all_`: predicted, low, urgent low).
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from zoneinfo import ZoneInfo

import numpy as np

from nightlink.cloud import alert_calibration, alerts
from nightlink.tools.train.cgm_real import SLOT_MIN, Person
from nightlink.tools.train.glucose import Tally
from nightlink.tools.train.glucose_real import Frame, per_person_figures

LOW_RULES = ("urgent_low", "low", "predicted_low")
HISTORY_MIN = alerts.HISTORY_MIN  # what the worker reads back
UTC = ZoneInfo("UTC")  # the readings' clock times are the person's (cgm_real reads them so)


MODES = {"": "model", "cal_": "calibrated", "line_": "line"}  # figure prefix -> replay mode


def replay(p: Person, mode: str) -> tuple[list[int], list[int]]:
    """Slots of the person's predicted-low alerts, and of all their low alerts, with the
    predicted low as the model under its own policy ("model"), under the cloud's daily
    calibration ("calibrated") or as the straight line ("line")."""
    slots = np.flatnonzero(p.observed)
    times = (p.start_min + SLOT_MIN * slots) * 60_000
    entries = [{"type": "sgv", "date": int(t), "sgv": float(v)}
               for t, v in zip(times, p.x[slots], strict=True)]
    settings = {r: {"enabled": r in LOW_RULES} for r in alerts.RULES}
    predictor = alerts.LowModel(line=mode == "line")
    pairs = [(int(t), float(v)) for t, v in zip(times, p.x[slots], strict=True)]
    points = alert_calibration.sounding(pairs, []) if mode == "calibrated" else []
    recalibrate_at = int(times[0]) if len(times) else 0
    previous: dict = {}
    opened: dict = {}  # (rule, level): (its open alert's time, threshold)
    closed: set = set()  # (rule, level) whose last alert ended
    predicted, every = [], []
    lo = cal_lo = 0
    for i, (t, s) in enumerate(zip(times, slots, strict=True)):
        # as the worker reads: HISTORY_MIN back, or to the last alerts (a day at most), so an
        # episode's end is judged on the readings since its alert
        since = t - HISTORY_MIN * 60_000
        if previous:
            since = max(min(since, min(previous.values())), t - 1440 * 60_000)
        while times[lo] < since:
            lo += 1
        if mode == "calibrated" and t >= recalibrate_at:  # once a day, as the worker does
            while times[cal_lo] < t - alert_calibration.READ_BACK_MS:
                cal_lo += 1
            doc = alert_calibration.calibrate(pairs[cal_lo:i + 1], [], UTC, int(t),
                                              points=points)
            predictor = alerts.LowModel.of(None, calibration=doc)
            recalibrate_at = int(t) + alert_calibration.EVERY_MS
        # as the worker: an open alert whose episode is over ends, closing its episode
        readings = alerts.readings_of(entries[lo:i + 1])
        for key, (since_ms, threshold) in list(opened.items()):
            if alerts.episode_over(key[0], threshold, readings, since_ms, int(t)):
                del opened[key]
                closed.add(key)
        for a in alerts.evaluate(entries[lo:i + 1], int(t), settings, previous=previous,
                                 predictor=predictor, closed=closed):
            key = (a.rule, a.level)
            previous[key] = a.at_ms
            closed.discard(key)
            if a.rule != "predicted_low":
                opened[key] = (a.at_ms, a.detail["threshold"])
            if a.rule == "predicted_low":
                predicted.append(int(s))
            every.append(int(s))
    return predicted, sorted(set(every))


def _person(args) -> dict[str, Tally]:
    p, mode = args
    predicted, every = replay(p, mode)
    out = {}
    for period, nights in (("night", True), ("day", False)):
        frame = Frame.of(p, nights)
        for what, slots in (("predicted", predicted), ("all", every)):
            total = Tally()
            for t in frame.tallies(slots).values():
                total += t
            out[f"{period}_{what}"] = total
    return out


def evaluate(people: list[Person], workers: int | None = None) -> dict:
    """Figures of the model (no prefix), under the cloud's calibration (`cal_`) and of the
    straight line (`line_`)."""
    workers = workers or min(4, os.cpu_count() or 1)
    jobs = [(p, mode) for mode in MODES.values() for p in people]
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(_person, jobs))
    else:
        results = [_person(j) for j in jobs]
    out: dict = {}
    n = len(people)
    for k, prefix in enumerate(MODES):
        mine = results[k * n:(k + 1) * n]
        for period, pre in (("night", ""), ("day", "day_")):
            for what in ("predicted", "all"):
                total = Tally()
                for r in mine:
                    total += r[f"{period}_{what}"]
                out.update(total.figures(period, f"{prefix}{pre}{what}_"))
                out[f"{prefix}{pre}{what}_alerts"] = total.alarms
                # person by person (median, worst decile): what a calibration evens out
                for key, v in per_person_figures([r[f"{period}_{what}"] for r in mine], period).items():
                    out[f"{prefix}{pre}{what}_{key}"] = v
            if not prefix:
                out[f"{pre}events"] = total.events
                out[f"{pre}{period}s"] = total.periods
    out["people"] = n
    return out
