"""The cloud's glucose alerts replayed over real CGM (`nightlink eval alerts`): each person's
readings stored in turn and `cloud.alerts.evaluate` run at each, with urgent_low, low and
predicted_low on at their defaults, as the alert worker runs them; the alerts scored by the
rules of tools/train/glucose_real.py (nights 22:00-07:00 and whole days apart). Twice: with
the predicted low as the clock's model under its own policy (what the cloud does), and as the
straight line it used before (`line_`). Figures for the predicted-low alerts alone
(`predicted_`) and for every low alert the family gets (`all_`: predicted, low, urgent low).
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from nightlink.cloud import alerts
from nightlink.tools.train.cgm_real import SLOT_MIN, Person
from nightlink.tools.train.glucose import Tally
from nightlink.tools.train.glucose_real import Frame

LOW_RULES = ("urgent_low", "low", "predicted_low")
HISTORY_MIN = alerts.HISTORY_MIN  # what the worker reads back


def replay(p: Person, line: bool) -> tuple[list[int], list[int]]:
    """Slots of the person's predicted-low alerts, and of all their low alerts."""
    slots = np.flatnonzero(p.observed)
    times = (p.start_min + SLOT_MIN * slots) * 60_000
    entries = [{"type": "sgv", "date": int(t), "sgv": float(v)}
               for t, v in zip(times, p.x[slots], strict=True)]
    settings = {r: {"enabled": r in LOW_RULES} for r in alerts.RULES}
    predictor = alerts.LowModel(line=line)
    previous: dict = {}
    predicted, every = [], []
    lo = 0
    for i, (t, s) in enumerate(zip(times, slots, strict=True)):
        while times[lo] < t - HISTORY_MIN * 60_000:
            lo += 1
        for a in alerts.evaluate(entries[lo:i + 1], int(t), settings, previous=previous,
                                 predictor=predictor):
            previous[(a.rule, a.level)] = a.at_ms
            if a.rule == "predicted_low":
                predicted.append(int(s))
            every.append(int(s))
    return predicted, sorted(set(every))


def _person(args) -> dict[str, Tally]:
    p, line = args
    predicted, every = replay(p, line)
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
    """Figures of the model (no prefix) and of the straight line (`line_`)."""
    workers = workers or min(4, os.cpu_count() or 1)
    jobs = [(p, line) for line in (False, True) for p in people]
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(_person, jobs))
    else:
        results = [_person(j) for j in jobs]
    out: dict = {}
    n = len(people)
    for k, prefix in ((0, ""), (1, "line_")):
        mine = results[k * n:(k + 1) * n]
        for period, pre in (("night", ""), ("day", "day_")):
            for what in ("predicted", "all"):
                total = Tally()
                for r in mine:
                    total += r[f"{period}_{what}"]
                out.update(total.figures(period, f"{prefix}{pre}{what}_"))
                out[f"{prefix}{pre}{what}_alerts"] = total.alarms
            if not prefix:
                out[f"{pre}events"] = total.events
                out[f"{pre}{period}s"] = total.periods
    out["people"] = n
    return out
