"""Wrist/finger wearable: beat-to-beat RR intervals, 1 Hz SpO2 and per-second activity counts.

Heart rate is lowest and most variable beat to beat in N3 (vagal dominance), highest in Wake,
unsteady in REM; apneas bring a brief bradycardia then a surge at the arousal. SpO2 nadirs lag
the event end by the circulation delay (20-30 s) and recover within 10-20 s.

Every night draws its own sleeper (`Sleeper`): heart-rate baseline and how strongly it follows
the stages, beat-to-beat variability, sensor noise and artefact beats, how much they move in
sleep, and how often they lie awake without moving (quiet wake, the reason wrist actigraphy
over-calls sleep on real nights). A model trained on one fixed sleeper would look far better
in silico than it is.
"""

from dataclasses import dataclass

import numpy as np

from nightlink.tools.sim.breathing import ENV_RATE, Airflow
from nightlink.tools.sim.events import NightPlan, detail_value, patient_key
from nightlink.tools.sim.hypnogram import EPOCH_S, N1, N2, N3, REM, W

_STREAM = 6
_HR_OFFSET = {W: 10.0, N1: 3.0, N2: 0.0, N3: -5.0, REM: 4.0}
# Respiratory sinus arrhythmia amplitude (ms) and white beat-to-beat noise SD (ms) per stage.
_RSA_MS = {W: 12.0, N1: 20.0, N2: 28.0, N3: 40.0, REM: 15.0}
_NOISE_MS = {W: 8.0, N1: 10.0, N2: 12.0, N3: 16.0, REM: 14.0}


@dataclass
class Sleeper:
    """One night's physiology and sensor quirks."""

    base_hr: float  # bpm in N2
    hr_gain: float  # how strongly HR follows the stage (x _HR_OFFSET)
    hr_drift: float  # bpm SD of the slow wander
    rsa_gain: float
    noise_gain: float
    artefact_rate: float  # share of beats mis-timed by the sensor
    surge_p: float  # chance an awakening brings a heart-rate surge
    sleep_move: float  # movement in sleep (x the stage's baseline)
    twitch_rate: float  # position changes per second of sleep
    quiet_wake_p: float  # chance a wake bout is spent lying still
    wake_move: float  # movement when awake and not still
    accel_noise: float  # counts of sensor noise per second
    arousal_move_p: float  # chance an arousal moves the wrist

    @classmethod
    def draw(cls, rng: np.random.Generator) -> "Sleeper":
        return cls(base_hr=rng.uniform(48.0, 78.0), hr_gain=rng.uniform(0.2, 1.2),
                   hr_drift=rng.uniform(1.0, 4.0), rsa_gain=rng.uniform(0.4, 1.5),
                   noise_gain=rng.uniform(0.7, 2.0), artefact_rate=rng.uniform(0.001, 0.01),
                   surge_p=rng.uniform(0.3, 0.9), sleep_move=float(np.exp(rng.normal(0, 0.6))),
                   twitch_rate=rng.uniform(0.001, 0.008), quiet_wake_p=rng.uniform(0.2, 0.7),
                   wake_move=rng.uniform(1.5, 8.0), accel_noise=rng.uniform(0.0, 0.3),
                   arousal_move_p=rng.uniform(0.1, 0.6))


@dataclass
class Wearable:
    beat_t_s: np.ndarray  # time of each beat (the end of each RR interval)
    rr_ms: np.ndarray  # int
    spo2: np.ndarray  # % at 1 Hz, one decimal
    accel: np.ndarray  # (seconds, 3) int counts


def _per_second(plan: NightPlan, table: dict) -> np.ndarray:
    values = np.array([table[s] for s in range(5)])
    return np.repeat(values[plan.stages], EPOCH_S).astype(np.float64)


def _bump(n: int, start: float, rise: float, hold: float, fall: float) -> tuple[slice, np.ndarray]:
    a, b = max(int(start), 0), min(int(start + rise + hold + fall) + 1, n)
    t = np.arange(a, b) - start
    y = np.clip(t / rise, 0, 1) * np.clip((rise + hold + fall - t) / fall, 0, 1)
    return slice(a, b), y


def make_wearable(plan: NightPlan, airflow: Airflow) -> Wearable:
    rng = np.random.default_rng([plan.seed, _STREAM, patient_key(plan.patient)])
    n = plan.duration_s
    who = Sleeper.draw(rng)
    hr = who.base_hr + who.hr_gain * _per_second(plan, _HR_OFFSET)
    hr += np.interp(np.arange(n) / 60.0, np.arange(n // 60 + 2), rng.normal(0, 1.5, n // 60 + 2))
    hr += np.interp(np.arange(n) / 1800.0, np.arange(n // 1800 + 2),
                    rng.normal(0, who.hr_drift, n // 1800 + 2))
    rem = np.repeat(plan.stages == REM, EPOCH_S)
    hr += rem * np.interp(np.arange(n) / 8.0, np.arange(n // 8 + 2), rng.normal(0, 3.0, n // 8 + 2))
    for e in plan.of_type("apnea", "hypopnea"):
        sl, y = _bump(n, e.start_s + 3, 5, e.end_s - e.start_s - 8, 3)
        hr[sl] -= (4.0 if e.type == "apnea" else 2.0) * y
    for e in plan.of_type("arousal"):
        sl, y = _bump(n, e.start_s, 3, e.end_s - e.start_s, 10)
        hr[sl] += rng.uniform(8.0, 22.0) * y
    # Awakenings: a surge at each transition to Wake after sleep onset.
    trans = np.flatnonzero((plan.stages[1:] == W) & (plan.stages[:-1] != W)) + 1
    for ep in trans:
        if rng.random() < who.surge_p:
            sl, y = _bump(n, ep * EPOCH_S, 4, 20, 30)
            hr[sl] += rng.uniform(3.0, 20.0) * y

    rsa = who.rsa_gain * _per_second(plan, _RSA_MS)
    noise = who.noise_gain * _per_second(plan, _NOISE_MS)
    phase = airflow.phase
    beats, rrs = [], []
    t = float(rng.uniform(0.3, 1.0))
    eps = rng.standard_normal(int(n * 2.2) + 10)
    k = 0
    while True:
        s = min(int(t), n - 1)
        ph = phase[min(int(t * ENV_RATE), phase.size - 1)]
        rr = 60000.0 / hr[s] - rsa[s] * np.cos(2 * np.pi * ph) + noise[s] * eps[k]
        if rng.random() < who.artefact_rate:  # a missed or doubled beat
            rr *= rng.choice((0.5, 1.9))
        k += 1
        t += rr / 1000.0
        if t >= n:
            break
        beats.append(t)
        rrs.append(rr)
    beat_t = np.round(np.array(beats), 3)
    rr_ms = np.rint(np.diff(np.concatenate(([beat_t[0] - rrs[0] / 1000.0], beat_t))) * 1000)

    spo2 = _spo2(rng, plan)
    accel = _accel(rng, plan, who)
    return Wearable(beat_t, rr_ms.astype(int), spo2, accel)


def _spo2(rng: np.random.Generator, plan: NightPlan) -> np.ndarray:
    n = plan.duration_s
    base = rng.uniform(95.5, 97.5)
    level = base + np.interp(np.arange(n) / 300.0, np.arange(n // 300 + 2),
                             rng.normal(0, 0.3, n // 300 + 2))
    dip = np.zeros(n)
    for e in plan.of_type("desaturation", "spo2_dip"):
        drop, nadir = detail_value(e, "drop_pct"), detail_value(e, "nadir_s")
        # Falls from the start to the nadir, then recovers over the last 10-20 s of the event.
        sl, y = _bump(n, e.start_s, nadir - e.start_s, 0.0, e.end_s - nadir)
        dip[sl] = np.maximum(dip[sl], drop * y)
    spo2 = np.minimum(level - dip + rng.normal(0, 0.12, n), 100.0)
    return np.round(spo2, 1)


def _wake_scale(rng: np.random.Generator, stages: np.ndarray, who: Sleeper) -> np.ndarray:
    """Per-epoch movement scale while awake: each wake bout is either still or restless."""
    out = np.zeros(stages.size)
    starts = np.flatnonzero((stages == W) & (np.concatenate(([W + 1], stages[:-1])) != W))
    for a in starts:
        b = a + int(np.argmax(stages[a:] != W)) if np.any(stages[a:] != W) else stages.size
        still = rng.random() < who.quiet_wake_p
        out[a:b] = rng.uniform(0.2, 0.8) if still else who.wake_move * rng.uniform(0.5, 1.5)
    return out


def _accel(rng: np.random.Generator, plan: NightPlan, who: Sleeper) -> np.ndarray:
    n = plan.duration_s
    stage = np.repeat(plan.stages, EPOCH_S)
    scale = np.repeat(_wake_scale(rng, plan.stages, who), EPOCH_S)
    asleep = np.where(stage == N1, 0.6, 0.0) + np.where(stage == REM, 0.3, 0.0)
    asleep += np.where((stage == N2) | (stage == N3), 0.15, 0.0)
    scale += who.sleep_move * asleep
    act = rng.exponential(1.0, n) * scale + who.accel_noise * rng.random(n)
    twitch = (stage != W) & (rng.random(n) < who.twitch_rate)  # occasional position change
    act[twitch] += rng.uniform(5, 40, int(twitch.sum()))
    for e in plan.of_type("arousal"):  # a few arousals stir the wrist, most do not
        if rng.random() < who.arousal_move_p:
            sl, y = _bump(n, e.start_s, 1, min(e.end_s - e.start_s, 5), 2)
            act[sl] += rng.uniform(3, 30) * y
    trans = np.flatnonzero((plan.stages[1:] == W) & (plan.stages[:-1] != W)) + 1
    for ep in trans:
        if rng.random() < 1.0 - 0.6 * who.quiet_wake_p:  # some wake up without stirring
            sl, y = _bump(n, ep * EPOCH_S + rng.uniform(0, 10), 2, 20, 5)
            act[sl] += rng.uniform(30, 200) * y
    axes = rng.dirichlet((2.0, 2.0, 2.0), size=n)
    return np.rint(act[:, None] * axes * 3).astype(int)
