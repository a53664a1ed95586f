"""Bedroom sensors every 30 s: temperature, humidity, light, CO2 and sound level.

A closed bedroom with two sleepers climbs from ~600 to 1000-1400 ppm CO2 overnight; the room
cools slowly after the heating setback; a lamp is on while reading and after the final awakening.
"""

from dataclasses import dataclass

import numpy as np

from nightlink.tools.sim.audio import SPL_AT_0_DBFS
from nightlink.tools.sim.events import NightPlan, patient_key
from nightlink.tools.sim.hypnogram import EPOCH_S, W

_STREAM = 7


@dataclass
class Room:
    temp_c: np.ndarray
    humidity_pct: np.ndarray
    light_lux: np.ndarray
    co2_ppm: np.ndarray
    noise_dba: np.ndarray


def make_room(plan: NightPlan, level_dbfs: np.ndarray) -> Room:
    """Per-epoch room readings; level_dbfs is the audio scene's mean level per epoch."""
    rng = np.random.default_rng([plan.seed, _STREAM, patient_key(plan.patient)])
    n = plan.n_epochs
    hours = np.arange(n) * EPOCH_S / 3600.0
    t0, t_end = rng.uniform(20.5, 22.0), rng.uniform(18.0, 19.8)
    temp = t_end + (t0 - t_end) * np.exp(-hours / rng.uniform(2.0, 4.0))
    temp += np.cumsum(rng.normal(0, 0.01, n)) + rng.normal(0, 0.03, n)
    co2_0, co2_ss = rng.uniform(550.0, 700.0), rng.uniform(1000.0, 1500.0)
    co2 = co2_ss + (co2_0 - co2_ss) * np.exp(-hours / rng.uniform(2.5, 5.0)) + rng.normal(0, 8, n)
    humidity = rng.uniform(38.0, 50.0) + 0.004 * (co2 - co2_0) + rng.normal(0, 0.3, n)

    light = np.abs(rng.normal(0.0, 0.15, n))
    reading = int(rng.integers(0, 21))  # lamp on for the first 0-10 minutes of the night
    first_sleep = int(np.argmax(plan.stages != W)) if np.any(plan.stages != W) else n
    light[:min(reading, first_sleep)] += rng.uniform(60.0, 150.0)
    last_sleep = n - int(np.argmax(plan.stages[::-1] != W)) if np.any(plan.stages != W) else n
    lamp_end = rng.uniform(50.0, 200.0)
    light[last_sleep + 2:] += lamp_end

    noise = level_dbfs + SPL_AT_0_DBFS + rng.normal(0, 0.3, n)
    return Room(np.round(temp, 2), np.round(humidity, 1), np.round(light, 1),
                np.rint(co2).astype(int), np.round(noise, 1))
