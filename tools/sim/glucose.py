"""CGM night from the UVA/Padova T1D model (simglucose): evening meal, insulin, sensor noise.

The evening scenario is drawn per seed so some nights run low (over-bolus, high basal) and some
high (under-bolus, an unbolused snack). Hypoglycemia events follow the International Consensus
on Time in Range (Battelino 2019): level 1 <70, level 2 <54 mg/dL, starting after >=15
consecutive minutes below and ending after >=15 consecutive minutes above.
"""

import logging
import types
import warnings
from dataclasses import dataclass

import numpy as np

from nightlink.errors import NightlinkError
from nightlink.tools.sim.events import Event, patient_key

_LOGGER = logging.getLogger(__name__)
_STREAM = 5
PATIENTS = tuple(f"{group}#{i:03d}" for group in ("adolescent", "adult", "child")
                 for i in range(1, 11))
CGM_PERIOD_MIN = 5
LEAD_MIN = 270  # simulate from 4.5 h before lights-off
SGV_MIN, SGV_MAX = 40, 400  # what a real sensor reports at its limits
# Dexcom/Nightscout error codes (sgv < 39 means "no glucose", e.g. 5 not calibrated, 9 abs. dev.)
_ERROR_CODES = (1, 5, 9, 10, 12)
MMOL_PER_MGDL = 1 / 18.016


@dataclass
class CgmNight:
    """Sensor and truth series on the 5-minute grid from lights-off."""

    minutes: np.ndarray  # minutes since lights-off, int
    sgv: np.ndarray  # int: sensor mg/dL, or an error code < 39
    bg_true: np.ndarray  # float mg/dL, blood glucose
    error_code: np.ndarray  # int, 0 when the reading is fine
    scenario: dict

    @property
    def valid(self) -> np.ndarray:
        return self.error_code == 0


def check_patient(patient: str) -> None:
    """Raise NightlinkError unless the name is one of the 30 UVA/Padova virtual patients."""
    if patient not in PATIENTS:
        raise NightlinkError(
            f"Unknown virtual patient {patient!r}; use adult#001..adult#010, "
            "adolescent#001..adolescent#010 or child#001..child#010."
        )


def _load(patient: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pandas as pd
        from simglucose.patient.t1dpatient import PATIENT_PARA_FILE, Action, T1DPatient
        from simglucose.sensor.cgm import CGMSensor
        quest_file = PATIENT_PARA_FILE.replace("vpatient_params.csv", "Quest.csv")
        quest = pd.read_csv(quest_file)
    return T1DPatient, Action, CGMSensor, quest.loc[quest.Name == patient].squeeze()


def simulate_cgm(seed: int, patient: str, minutes: int) -> CgmNight:
    """Simulate the evening and night at 1-minute steps; sample the sensor every 5 minutes."""
    check_patient(patient)
    rng = np.random.default_rng([seed, _STREAM, patient_key(patient)])
    T1DPatient, Action, CGMSensor, quest = _load(patient)
    body = T1DPatient.withName(patient)
    # Plain floats instead of a pandas Series: the ODE right-hand side reads ~40 parameters per
    # call, and Series attribute access makes the night ~10x slower.
    fast = types.SimpleNamespace(**{k: (v if isinstance(v, str) else float(v))
                                    for k, v in body._params.items()})
    body._params = fast
    sensor = CGMSensor.withName("GuardianRT", seed=int(rng.integers(0, 2**31 - 1)))

    mode = str(rng.choice(["low", "high", "steady"], p=[0.38, 0.37, 0.25]))
    cho = float(rng.uniform(50.0, 100.0))
    if mode == "low":
        bolus_factor, basal_factor, snack = rng.uniform(1.4, 2.0), rng.uniform(1.15, 1.5), 0.0
    elif mode == "high":
        bolus_factor, basal_factor = rng.uniform(0.3, 0.7), rng.uniform(0.6, 0.85)
        snack = float(rng.uniform(15.0, 40.0))
    else:
        bolus_factor, basal_factor, snack = rng.uniform(0.9, 1.1), rng.uniform(0.95, 1.05), 0.0
    basal = fast.u2ss * fast.BW / 6000 * basal_factor  # U/min
    bolus = cho / float(quest.CR) * bolus_factor  # U, given over one minute at dinner
    dinner_at, snack_at = 30, LEAD_MIN - 40

    n = minutes // CGM_PERIOD_MIN + 1
    sgv_f = np.zeros(n)
    bg = np.zeros(n)
    for m in range(LEAD_MIN + minutes + 1):
        since = m - LEAD_MIN
        if since >= 0 and since % CGM_PERIOD_MIN == 0:
            i = since // CGM_PERIOD_MIN
            sgv_f[i] = sensor.measure(body)
            bg[i] = body.state[3] / fast.Vg
        if m == LEAD_MIN + minutes:
            break
        carb = cho if m == dinner_at else (snack if m == snack_at else 0.0)
        insulin = basal + (bolus if m == dinner_at else 0.0)
        body.step(Action(CHO=carb, insulin=insulin))

    sgv = np.clip(np.rint(sgv_f), SGV_MIN, SGV_MAX).astype(int)
    errors = np.zeros(n, dtype=int)
    if rng.random() < 0.5:  # about half the nights have a rare sensor error
        bad = rng.random(n) < 0.01
        errors[bad] = rng.choice(_ERROR_CODES, size=int(bad.sum()))
        sgv[bad] = errors[bad]
    scenario = {"mode": mode, "dinner_cho_g": round(cho, 1), "dinner_bolus_u": round(bolus, 2),
                "basal_u_per_h": round(basal * 60, 3), "bedtime_snack_g": round(snack, 1),
                "dinner_minutes_before_lights_off": LEAD_MIN - dinner_at,
                "snack_minutes_before_lights_off": LEAD_MIN - snack_at,
                "sensor": "GuardianRT"}
    return CgmNight(np.arange(n) * CGM_PERIOD_MIN, sgv, bg, errors, scenario)


def hypoglycemia_events(cgm: CgmNight, night_end_s: float) -> list[Event]:
    """Level 1 and level 2 hypoglycemia episodes from the sensor series (error rows skipped)."""
    ok = cgm.valid
    minutes, sgv = cgm.minutes[ok], cgm.sgv[ok]
    events = []
    for threshold, kind in ((70, "hypoglycemia_l1"), (54, "hypoglycemia_l2")):
        events.extend(_episodes(minutes, sgv, threshold, kind, night_end_s))
    return events


def _episodes(minutes: np.ndarray, sgv: np.ndarray, threshold: int, kind: str,
              night_end_s: float) -> list[Event]:
    need = 15 // CGM_PERIOD_MIN  # readings that span 15 minutes
    below = sgv < threshold
    out, i, n = [], 0, sgv.size
    while i < n:
        if not below[i] or not below[i:i + need].all() or i + need > n:
            i += 1
            continue
        start = i
        j = i + need
        end_idx = None
        while j < n:
            if not below[j] and j + need <= n and not below[j:j + need].any():
                end_idx = j
                break
            j += 1
        stop = end_idx if end_idx is not None else n
        nadir = int(sgv[start:stop].min())
        end_s = minutes[end_idx] * 60.0 if end_idx is not None else night_end_s
        detail = f"nadir_mgdl={nadir};nadir_mmol={nadir * MMOL_PER_MGDL:.1f}"
        if end_idx is None:
            detail += ";ongoing_at_end"
        out.append(Event(kind, minutes[start] * 60.0, float(end_s), detail))
        i = stop if end_idx is not None else n
    return out
