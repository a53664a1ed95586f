"""Night plan: hypnogram plus the respiratory event schedule every modality renders.

Apnea >=90% airflow drop >=10 s, hypopnea >=30% drop >=10 s with >=3% desaturation or an
arousal (AASM 2012, rule 1A). Events are more frequent in REM and light sleep and rarer in N3.
"""

import zlib
from dataclasses import dataclass, field

import numpy as np

from nightlink.tools.sim.hypnogram import EPOCH_S, N1, N2, N3, REM, W, make_hypnogram

_STREAM = 2
EVENT_TYPES = (
    "apnea", "hypopnea", "snore", "desaturation", "hypoglycemia_l1", "hypoglycemia_l2", "arousal",
)
# Relative event propensity per stage W, N1, N2, N3, REM.
_STAGE_WEIGHT = np.array([0.0, 1.3, 1.0, 0.3, 2.0])
_GAP_S = 35  # minimum breathing between two events, so desaturations do not merge
# AHI severity bands (AASM): normal <5, mild 5-15, moderate 15-30, severe >=30.
_SEVERITY = (("normal", 0.5, 4.5, 0.3), ("mild", 5.0, 15.0, 0.3),
             ("moderate", 15.0, 30.0, 0.2), ("severe", 30.0, 45.0, 0.2))


@dataclass(frozen=True)
class Event:
    """One ground-truth event, in seconds since the night started."""

    type: str
    start_s: float
    end_s: float
    detail: str = ""


@dataclass
class NightPlan:
    """Everything that is decided before any signal is rendered."""

    seed: int
    patient: str
    stages: np.ndarray
    severity: str
    ahi_target: float
    snore_f0_hz: float
    events: list[Event] = field(default_factory=list)

    @property
    def n_epochs(self) -> int:
        return int(self.stages.size)

    @property
    def duration_s(self) -> int:
        return self.n_epochs * EPOCH_S

    def of_type(self, *types: str) -> list[Event]:
        return [e for e in self.events if e.type in types]


def detail_value(event: Event, key: str) -> float:
    """A numeric field from an event's "key=value;key=value" detail."""
    for part in event.detail.split(";"):
        name, _, value = part.partition("=")
        if name == key:
            return float(value)
    raise KeyError(key)


def patient_key(patient: str) -> int:
    """A stable integer for a patient name, to mix into random streams."""
    return zlib.crc32(patient.encode())


def plan_night(seed: int, patient: str, n_epochs: int) -> NightPlan:
    """Draw the hypnogram and the apnea, hypopnea, desaturation, arousal and snore schedule."""
    stages = make_hypnogram(seed, n_epochs)
    rng = np.random.default_rng([seed, _STREAM, patient_key(patient)])
    probs = np.array([s[3] for s in _SEVERITY])
    band = _SEVERITY[int(rng.choice(len(_SEVERITY), p=probs))]
    ahi = float(rng.uniform(band[1], band[2]))
    plan = NightPlan(seed, patient, stages, band[0], ahi, float(rng.uniform(60.0, 150.0)))
    per_s = np.repeat(stages, EPOCH_S)
    resp = _place_respiratory(rng, per_s, ahi)
    plan.events.extend(resp)
    plan.events.extend(_desaturations_and_arousals(rng, resp))
    plan.events.extend(_spontaneous_arousals(rng, per_s, resp))
    plan.events.extend(_snore_episodes(rng, per_s, ahi, plan.snore_f0_hz))
    plan.events.sort(key=lambda e: (e.start_s, e.type))
    return plan


def _place_respiratory(rng: np.random.Generator, per_s: np.ndarray, ahi: float) -> list[Event]:
    sleep_s = int(np.count_nonzero(per_s != W))
    target = int(round(ahi * sleep_s / 3600))
    if target == 0 or sleep_s == 0:
        return []
    weights = _STAGE_WEIGHT[per_s]
    starts = rng.choice(per_s.size, size=4 * target + 10, p=weights / weights.sum())
    apnea_share = float(rng.uniform(0.25, 0.45) + (0.2 if ahi >= 30 else 0.0))
    occupied = np.zeros(per_s.size + 2 * _GAP_S + 120, dtype=bool)
    events: list[Event] = []
    for s in starts:
        s = int(s)
        apnea = rng.random() < apnea_share
        rem = per_s[s] == REM
        if apnea:
            dur = 10.0 + rng.gamma(2.0, 6.0) * (1.3 if rem else 1.0)
            dur = float(np.clip(dur, 10.0, 60.0))
        else:
            dur = float(np.clip(10.0 + rng.gamma(2.0, 5.0), 10.0, 45.0))
        dur = round(dur, 1)
        end = s + int(np.ceil(dur))
        if end + 10 > per_s.size or np.any(per_s[s:end + 10] == W):
            continue
        if occupied[max(0, s - _GAP_S):end + _GAP_S].any():
            continue
        occupied[s:end] = True
        if apnea:
            detail = f"airflow_drop_pct={rng.uniform(92.0, 98.0):.0f}"
        else:
            detail = f"airflow_drop_pct={rng.uniform(35.0, 65.0):.0f}"
        events.append(Event("apnea" if apnea else "hypopnea", float(s), float(s) + dur, detail))
        if len(events) >= target:
            break
    events.sort(key=lambda e: e.start_s)
    return events


def _desaturations_and_arousals(rng: np.random.Generator, resp: list[Event]) -> list[Event]:
    out: list[Event] = []
    for e in resp:
        dur = e.end_s - e.start_s
        lag = float(rng.uniform(20.0, 30.0))  # circulation delay to the finger probe
        recovery = float(rng.uniform(10.0, 20.0))
        if e.type == "apnea":
            drop = float(np.clip(2.5 + 0.1 * dur + rng.normal(0.0, 0.8), 3.0, 8.0))
            arousal = rng.random() < 0.9
        else:
            desat = rng.random() < 0.7
            drop = float(rng.uniform(3.0, 5.5)) if desat else float(rng.uniform(1.0, 2.2))
            arousal = (not desat) or rng.random() < 0.5
        drop = round(drop, 1)
        nadir = e.end_s + lag
        kind = "desaturation" if drop >= 3.0 else "spo2_dip"  # sub-threshold: rendered in SpO2, not a truth event
        out.append(Event(kind, round(e.start_s + lag, 1), round(nadir + recovery, 1),
                         f"drop_pct={drop:.1f};nadir_s={nadir:.1f}"))
        if arousal:
            length = float(rng.uniform(3.0, 12.0))
            out.append(Event("arousal", round(e.end_s - 1.0, 1), round(e.end_s - 1.0 + length, 1),
                             f"respiratory;after={e.type}"))
    return out


def _spontaneous_arousals(rng: np.random.Generator, per_s: np.ndarray,
                          resp: list[Event]) -> list[Event]:
    sleep_s = int(np.count_nonzero(per_s != W))
    count = int(rng.poisson(4.0 * sleep_s / 3600))
    busy = np.zeros(per_s.size + 60, dtype=bool)
    for e in resp:
        busy[int(e.start_s) - 30 if e.start_s > 30 else 0:int(e.end_s) + 30] = True
    out = []
    for _ in range(count):
        s = int(rng.integers(0, max(per_s.size - 20, 1)))
        length = float(rng.uniform(3.0, 15.0))
        end = s + int(np.ceil(length))
        if end > per_s.size or np.any(per_s[s:end] == W) or busy[s:end].any():
            continue
        busy[s:end] = True
        out.append(Event("arousal", float(s), float(s) + round(length, 1), "spontaneous"))
    return out


def _snore_episodes(rng: np.random.Generator, per_s: np.ndarray, ahi: float,
                    f0: float) -> list[Event]:
    propensity = float(np.clip(rng.uniform(0.0, 0.35) + 0.012 * ahi, 0.0, 0.85))
    deep_light = np.flatnonzero((per_s == N2) | (per_s == N3) | (per_s == N1))
    if deep_light.size == 0 or propensity < 0.02:
        return []
    budget = propensity * deep_light.size
    weights = np.where(per_s[deep_light] == N1, 0.4, 1.0)
    weights = weights / weights.sum()
    taken = np.zeros(per_s.size, dtype=bool)
    out, total = [], 0
    for _ in range(400):
        if total >= budget:
            break
        s = int(deep_light[rng.choice(deep_light.size, p=weights)])
        length = int(rng.uniform(120, 1200))  # 2-20 minutes
        end = min(s + length, per_s.size)
        # An episode stops at the first waking or REM second (snoring falls in REM atonia less).
        stop = np.flatnonzero((per_s[s:end] == W) | (per_s[s:end] == REM))
        if stop.size:
            end = s + int(stop[0])
        if end - s < 60 or taken[max(0, s - 30):end + 30].any():
            continue
        taken[s:end] = True
        total += end - s
        out.append(Event("snore", float(s), float(end), f"f0_hz={f0:.0f}"))
    return out


