"""Simulated daytime CGM between two simulated nights, so a run of nights becomes whole days
of CGM (the consensus's data sufficiency counts readings over 24 hours, not only at night).

The same UVA/Padova model and GuardianRT sensor noise as the nights (glucose.py): the day
starts at the previous night's last true glucose, has a drawn breakfast and lunch with
imperfect boluses and sometimes an unbolused afternoon snack, and ends with the next night's
own evening (its basal, dinner, bolus and bedtime snack from that night's scenario), so it
runs into the next night. The last hour is drawn toward the next night's first reading: the
two simulations start from different states, and a real sensor has no step at lights-off.
Everything here is simulated, and the files the demo writes from it say so.
"""

from __future__ import annotations

import types
from dataclasses import dataclass

import numpy as np

from nightlink.tools.sim.events import patient_key
from nightlink.tools.sim.glucose import (
    CGM_PERIOD_MIN,
    LEAD_MIN,
    SGV_MAX,
    SGV_MIN,
    _load,
    check_patient,
)

_STREAM = 11  # the day's own random stream, apart from the nights'
BREAKFAST_MIN, LUNCH_MIN, SNACK_MIN = 60, 360, 570  # minutes after the night's end
JOIN_MIN = 60  # the last hour is drawn toward the next night's first reading


@dataclass
class CgmDay:
    """Sensor readings every 5 minutes after the previous night's end (exclusive) up to the
    next night's lights-off (exclusive)."""

    minutes: np.ndarray  # minutes since the previous night's end, int
    sgv: np.ndarray  # int mg/dL
    meals: dict


def simulate_day(seed: int, patient: str, minutes: int, start_bg: float | None,
                 evening: dict, end_sgv: float | None = None) -> CgmDay:
    """A day of `minutes` minutes: from the previous night's end (its true glucose start_bg,
    or the patient's steady state) to the next night's lights-off, whose scenario `evening`
    is (glucose.simulate_cgm's) and whose first reading is end_sgv."""
    check_patient(patient)
    rng = np.random.default_rng([seed, _STREAM, patient_key(patient)])
    T1DPatient, Action, CGMSensor, quest = _load(patient)
    start = T1DPatient.withName(patient)._params
    state = np.array(start.iloc[2:15].values, dtype=float)
    if start_bg is not None:  # the glucose compartments at the previous night's last glucose
        scale = float(start_bg) / float(start.Gb)
        state[[3, 4, 12]] *= scale
    body = T1DPatient.withName(patient, init_state=state)
    fast = types.SimpleNamespace(**{k: (v if isinstance(v, str) else float(v))
                                    for k, v in body._params.items()})
    body._params = fast  # plain floats: ~10x faster (glucose.simulate_cgm)
    sensor = CGMSensor.withName("GuardianRT", seed=int(rng.integers(0, 2**31 - 1)))

    basal = fast.u2ss * fast.BW / 6000 * float(rng.uniform(0.95, 1.05))  # U/min
    meals = {"breakfast_g": round(float(rng.uniform(30, 60)), 1),
             "lunch_g": round(float(rng.uniform(40, 80)), 1),
             "afternoon_snack_g": round(float(rng.uniform(10, 25)), 1)
             if rng.random() < 0.3 else 0.0}
    factors = rng.uniform(0.8, 1.25, size=2)  # bolus / needed, per meal
    carbs = {BREAKFAST_MIN: meals["breakfast_g"], LUNCH_MIN: meals["lunch_g"],
             SNACK_MIN: meals["afternoon_snack_g"]}
    boluses = {BREAKFAST_MIN: meals["breakfast_g"] / float(quest.CR) * factors[0],
               LUNCH_MIN: meals["lunch_g"] / float(quest.CR) * factors[1]}
    lead = minutes - LEAD_MIN  # the next night's evening begins here
    dinner = minutes - evening["dinner_minutes_before_lights_off"]
    snack = minutes - evening["snack_minutes_before_lights_off"]
    carbs.update({dinner: evening["dinner_cho_g"], snack: evening["bedtime_snack_g"]})
    boluses[dinner] = evening["dinner_bolus_u"]
    evening_basal = evening["basal_u_per_h"] / 60

    at = np.arange(CGM_PERIOD_MIN, minutes, CGM_PERIOD_MIN)
    sgv = np.zeros(at.size)
    k = 0
    for m in range(minutes):
        if k < at.size and m == at[k]:
            sgv[k] = sensor.measure(body)
            k += 1
        rate = evening_basal if m >= lead else basal
        body.step(Action(CHO=carbs.get(m, 0.0) if m < minutes else 0.0,
                         insulin=rate + boluses.get(m, 0.0)))
    if end_sgv is not None and at.size:
        weight = np.clip((at - (minutes - JOIN_MIN)) / JOIN_MIN, 0.0, 1.0)
        gap = float(end_sgv) - sgv[-1]
        sgv = sgv + weight * gap
    meals.update(breakfast_bolus_u=round(boluses[BREAKFAST_MIN], 2),
                 lunch_bolus_u=round(boluses[LUNCH_MIN], 2))
    return CgmDay(at, np.clip(np.rint(sgv), SGV_MIN, SGV_MAX).astype(int), meals)
