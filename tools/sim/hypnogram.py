"""Sleep-cycle model: one AASM stage per 30-second epoch for a simulated night.

Cycle structure after Carskadon & Dement (Principles and Practice of Sleep Medicine):
~90-minute NREM/REM cycles (80-110 min), N3 concentrated in the first two cycles,
REM episodes lengthening towards morning, a few brief awakenings.
"""

import math

import numpy as np

from nightlink.errors import NightlinkError

EPOCH_S = 30
W, N1, N2, N3, REM = 0, 1, 2, 3, 4
STAGE_NAMES = ("W", "N1", "N2", "N3", "REM")
STAGE4_NAMES = ("Wake", "Light", "Light", "Deep", "REM")
_STREAM = 1
MAX_HOURS = 14.0


def epochs_for_hours(hours: float) -> int:
    """Number of 30-second epochs in a night of this length; NightlinkError if out of range."""
    if not isinstance(hours, int | float) or math.isnan(hours) or not 0 < hours <= MAX_HOURS:
        raise NightlinkError(f"Hours must be more than 0 and at most {MAX_HOURS:g}, not {hours}.")
    return max(1, int(round(hours * 3600 / EPOCH_S)))

# Fraction of each cycle spent in N3 (by cycle index), and REM minutes per cycle.
_N3_FRACTION = (0.40, 0.25, 0.08, 0.03, 0.0, 0.0)
_REM_MINUTES = (8.0, 16.0, 24.0, 32.0, 38.0, 40.0)


def is_sleep(stages: np.ndarray) -> np.ndarray:
    """True for epochs scored as sleep (anything but W)."""
    return stages != W


def make_hypnogram(seed: int, n_epochs: int) -> np.ndarray:
    """Return the stage code (W, N1, N2, N3, REM) of every epoch of a night."""
    rng = np.random.default_rng([seed, _STREAM])
    stages = np.full(n_epochs, N2, dtype=np.int8)
    sol = int(rng.integers(10, 51))  # sleep onset latency 5-25 min
    final_wake = int(rng.integers(4, 21))  # 2-10 min awake before getting up
    stages[:sol] = W

    pos, cycle = sol, 0
    while pos < n_epochs:
        length = int(rng.integers(160, 221))  # 80-110 min
        seq = _cycle_sequence(rng, cycle, length)
        stages[pos:pos + len(seq)] = seq[: n_epochs - pos]
        pos += len(seq)
        cycle += 1

    _add_brief_awakenings(rng, stages, sol, n_epochs - final_wake)
    if n_epochs - final_wake > sol:
        stages[n_epochs - final_wake:] = W
    # The last few epochs before the final awakening are lighter sleep.
    end = n_epochs - final_wake
    if end - 2 > sol:
        stages[end - 2:end] = N1
    return stages


def _cycle_sequence(rng: np.random.Generator, cycle: int, length: int) -> np.ndarray:
    idx = min(cycle, len(_N3_FRACTION) - 1)
    n1 = int(rng.integers(6, 15)) if cycle == 0 else int(rng.integers(3, 9))
    rem = int(round(2 * _REM_MINUTES[idx] * rng.uniform(0.75, 1.25)))
    rem = min(rem, int(0.45 * length))
    n3 = int(round(length * _N3_FRACTION[idx] * rng.uniform(0.8, 1.2)))
    n2 = max(length - n1 - rem - n3, 8)
    n2a = int(n2 * rng.uniform(0.45, 0.7))
    parts = [
        np.full(n1, N1), np.full(n2a, N2), np.full(n3, N3),
        np.full(n2 - n2a - 3, N2), np.full(3, N1), np.full(rem, REM),
    ]
    seq = np.concatenate(parts).astype(np.int8)
    # Sprinkle a few N3<->N2 fluctuations inside the deep block, as real hypnograms show.
    if n3 > 10:
        flips = rng.integers(0, n3, size=max(1, n3 // 15)) + n1 + n2a
        seq[flips] = N2
    return seq


def _add_brief_awakenings(rng: np.random.Generator, stages: np.ndarray, lo: int, hi: int) -> None:
    if hi - lo < 40:
        return
    hours = (hi - lo) * EPOCH_S / 3600
    count = int(rng.poisson(0.8 * hours)) + 1
    # Favour the end of REM periods (cycle transitions), as real awakenings do.
    rem_ends = np.flatnonzero((stages[lo:hi - 1] == REM) & (stages[lo + 1:hi] != REM)) + lo + 1
    for _ in range(count):
        if rem_ends.size and rng.random() < 0.6:
            at = int(rng.choice(rem_ends))
        else:
            at = int(rng.integers(lo + 20, hi - 6))
        dur = int(rng.integers(2, 7))  # 1-3 min
        stages[at:min(at + dur, hi)] = W
        if at + dur < hi:
            stages[at + dur] = N1
