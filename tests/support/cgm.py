"""Tiny generated CGM folders in the shared dataset's layout (`csv/<person>.csv`,
`timestamp,glucose_value_mg_dl`), for the glucose trainer and evaluation tests, and the
bedside node's glucose model as a reference for the clock's."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

START = datetime(2024, 3, 1, 12, 0)


def person_trace(days: int, seed: int, step_min: int = 5) -> tuple[list[datetime], np.ndarray]:
    """Readings every step_min minutes from noon on 1 March: a slow daily swing with noise and,
    every other night at about 02:00, a fall to 55 mg/dL that lasts about 40 minutes."""
    rng = np.random.default_rng(seed)
    n = days * 1440 // step_min
    t = np.arange(n) * step_min
    g = 150 + 40 * np.sin(2 * np.pi * t / 1440) + rng.normal(0, 4, n)
    for d in range(days):
        if d % 2 == 0:
            onset = d * 1440 + 14 * 60 + int(rng.integers(-60, 60))  # about 02:00
            fall = np.clip((t - (onset - 60)) / 60.0, 0, 1) * (g - 55)
            rise = np.clip((t - (onset + 40)) / 45.0, 0, 1) * (g - 55)
            g = g - fall + rise
    times = [START + timedelta(minutes=int(m)) for m in t]
    return times, np.clip(g, 40, 400)


def write_person(folder: Path, name: str, times, values) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.csv"
    lines = ["timestamp,glucose_value_mg_dl"]
    lines += [f"{t:%Y-%m-%d %H:%M:%S},{v:.1f}" for t, v in zip(times, values, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_folder(root: Path, people: int = 3, days: int = 3, steps=(5,)) -> Path:
    """root/csv with `people` people named G01.. (cadence cycling through `steps`)."""
    for k in range(people):
        step = steps[k % len(steps)]
        times, values = person_trace(days, seed=k + 1, step_min=step)
        write_person(root / "csv", f"G{k + 1:02d}", times, values)
    return root


def edge_prediction(hour):
    """The bedside node's LiteRT glucose model on an hour of 12 readings (mg/dL, oldest first,
    5 minutes apart): (risk in permille, 30-minute forecast in mg/dL), to check the clock's
    model (shared/lowrisk.py) where the cloud and the apps run it."""
    from nightlink.edge.features.classify import MODELS
    from nightlink.edge.features.glucose_risk import LiteRtGlucose

    rt = LiteRtGlucose((MODELS / "glucose_risk.tflite").read_bytes())
    _lq, permille, forecast = rt.predict(np.array([hour], dtype=np.float32))
    return int(permille[0]), float(forecast[0])
