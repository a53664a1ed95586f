"""Airflow model at 100 Hz: breath phase, inspiration/expiration envelopes, apnea gating.

Shared by the audio renderer (breath and snore loudness) and the wearable (respiratory sinus
arrhythmia), so both follow the same breaths. Adult sleeping rate 12-18 breaths/min.
"""

from dataclasses import dataclass

import numpy as np

from nightlink.tools.sim.events import NightPlan, detail_value, patient_key
from nightlink.tools.sim.hypnogram import EPOCH_S, N1, N2, N3, REM, W

ENV_RATE = 100  # envelope samples per second
_STREAM = 3
# Per-stage breathing rate change and breath-sound loudness (deep sleep is quieter).
_RATE_GAIN = {W: 1.12, N1: 1.03, N2: 1.0, N3: 0.95, REM: 1.06}
_LOUDNESS = {W: 1.0, N1: 0.85, N2: 0.75, N3: 0.55, REM: 0.7}


@dataclass
class Airflow:
    """Envelopes at ENV_RATE covering the whole night (one more sample than seconds * rate)."""

    phase: np.ndarray  # breath cycles since start, float64
    inspiration: np.ndarray  # 0..1 shape of each inspiration, float32
    breath: np.ndarray  # breath-sound envelope incl. stage loudness and events, float32
    gate: np.ndarray  # airflow multiplier: 1 normal, ~0.03 apnea, 0.35-0.65 hypopnea
    rate_bpm: float


def _stage_lookup(plan: NightPlan, table: dict) -> np.ndarray:
    values = np.array([table[s] for s in range(5)], dtype=np.float64)
    n = plan.duration_s * ENV_RATE + 1
    epoch = np.minimum(np.arange(n) // (EPOCH_S * ENV_RATE), plan.n_epochs - 1)
    return values[plan.stages[epoch]]


def _ramp_box(n: int, start_s: float, end_s: float, ramp_s: float) -> tuple[slice, np.ndarray]:
    """A 0..1 trapezoid over [start, end] with linear ramps, as a slice and its values."""
    a = max(int((start_s - ramp_s) * ENV_RATE), 0)
    b = min(int((end_s + ramp_s) * ENV_RATE) + 1, n)
    t = np.arange(a, b) / ENV_RATE
    up = np.clip((t - (start_s - ramp_s)) / ramp_s, 0.0, 1.0)
    down = np.clip(((end_s + ramp_s) - t) / ramp_s, 0.0, 1.0)
    return slice(a, b), np.minimum(up, down)


def make_airflow(plan: NightPlan) -> Airflow:
    """Render breath phase and loudness envelopes for the whole night."""
    rng = np.random.default_rng([plan.seed, _STREAM, patient_key(plan.patient)])
    n = plan.duration_s * ENV_RATE + 1
    rate_bpm = float(rng.uniform(12.0, 17.0))
    # Slow rate wander: random walk at 0.1 Hz, interpolated; REM breathing is irregular.
    knots = np.cumsum(rng.normal(0.0, 0.02, size=n // (10 * ENV_RATE) + 2))
    knots -= np.convolve(knots, np.ones(31) / 31, mode="same")
    wander = np.interp(np.arange(n) / (10 * ENV_RATE), np.arange(knots.size), knots)
    rem = _stage_lookup(plan, {W: 0.0, N1: 0.0, N2: 0.0, N3: 0.0, REM: 1.0})
    jitter = np.interp(np.arange(n) / ENV_RATE, np.arange(n // ENV_RATE + 2),
                       rng.normal(0.0, 0.08, size=n // ENV_RATE + 2))
    rate_hz = rate_bpm / 60.0 * _stage_lookup(plan, _RATE_GAIN) * (1.0 + wander + rem * jitter)
    phase = np.cumsum(rate_hz) / ENV_RATE
    frac = phase % 1.0
    insp = np.where(frac < 0.4, np.sin(np.pi * frac / 0.4) ** 2, 0.0)
    expi = np.where((frac >= 0.45) & (frac < 0.9), 0.45 * np.sin(np.pi * (frac - 0.45) / 0.45) ** 2,
                    0.0)

    gate = np.ones(n)
    boost = np.ones(n)
    for e in plan.of_type("apnea", "hypopnea"):
        drop = detail_value(e, "airflow_drop_pct") / 100.0
        sl, box = _ramp_box(n, e.start_s + 0.5, e.end_s - 0.5, 0.5)
        gate[sl] = np.minimum(gate[sl], 1.0 - drop * box)
        # Recovery breaths: a loud gasp after an apnea, a deeper breath after a hypopnea.
        sl, box = _ramp_box(n, e.end_s + 0.3, e.end_s + 3.5, 0.3)
        boost[sl] = np.maximum(boost[sl], 1.0 + (2.5 if e.type == "apnea" else 0.8) * box)
    breath = _stage_lookup(plan, _LOUDNESS) * gate * boost * (insp + expi)
    return Airflow(phase, (insp * gate * boost).astype(np.float32), breath.astype(np.float32),
                   gate.astype(np.float32), rate_bpm)
