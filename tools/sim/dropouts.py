"""Where a simulated night loses data, as real nights do: the wearable's Bluetooth link drops,
the CGM loses signal, a room sensor restarts. Samples inside a dropout are not written."""

from dataclasses import dataclass

import numpy as np

_STREAM = 7  # this module's own random stream


@dataclass(frozen=True)
class Dropout:
    source: str  # "wearable", "cgm" or "room"
    start_s: float  # seconds since night start
    end_s: float

    def covers(self, t_s):
        """True (or a boolean array) where t_s lies inside the dropout."""
        return (np.asarray(t_s) >= self.start_s) & (np.asarray(t_s) < self.end_s)


def plan_dropouts(seed: int, duration_s: float) -> list[Dropout]:
    """One or two wearable dropouts of 2-12 min; maybe a 15-40 min CGM signal loss and a
    1-5 min room-sensor restart; none in the first or last 20 minutes."""
    rng = np.random.default_rng([seed, _STREAM])
    lo, hi = 1200.0, duration_s - 1200.0
    out: list[Dropout] = []
    if hi - lo < 900:
        return out

    def place(source, min_s, max_s):
        length = float(rng.uniform(min_s, max_s))
        start = float(np.round(rng.uniform(lo, max(lo, hi - length)), 1))
        out.append(Dropout(source, start, round(start + length, 1)))

    for _ in range(int(rng.integers(1, 3))):
        place("wearable", 120, 720)
    if rng.random() < 0.5:
        place("cgm", 900, 2400)
    if rng.random() < 0.5:
        place("room", 60, 300)
    return sorted(out, key=lambda d: (d.start_s, d.source))


def kept(dropouts: list[Dropout], source: str, t_s) -> np.ndarray:
    """Mask of samples of `source` at times t_s that survive the night's dropouts."""
    keep = np.ones(np.shape(t_s), dtype=bool)
    for d in dropouts:
        if d.source == source:
            keep &= ~d.covers(t_s)
    return keep
