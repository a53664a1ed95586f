"""Sleep-stage sequences: one AASM stage per 30-second epoch for a simulated night.

The sequence is a semi-Markov chain estimated from real nights (tools/sim/stage_stats.json:
25 multi-scored PSG nights of the Dreem Open Dataset DOD-H, Guillot et al. 2020, MIT licence):
sleep-onset latency and the final awakening are drawn from the real nights' values, then bout
after bout, the next stage follows the real bout-to-bout transition counts and each bout's
length follows the real bout-length distribution of its stage, both by 2-hour block since
sleep onset (so N3 stays early and REM grows towards morning, as in real nights). Each night
also draws its own "fragmentation" (how short its bouts run), so nights differ the way
people do.
"""

import math

import numpy as np

from nightlink.errors import NightlinkError
from nightlink.tools.sim.stage_stats import BIN_H, N_BINS, load_table

EPOCH_S = 30
W, N1, N2, N3, REM = 0, 1, 2, 3, 4
STAGE_NAMES = ("W", "N1", "N2", "N3", "REM")
STAGE4_NAMES = ("Wake", "Light", "Light", "Deep", "REM")
_STREAM = 1
MAX_HOURS = 14.0
_TABLE = load_table()


def epochs_for_hours(hours: float) -> int:
    """Number of 30-second epochs in a night of this length; NightlinkError if out of range."""
    if not isinstance(hours, int | float) or math.isnan(hours) or not 0 < hours <= MAX_HOURS:
        raise NightlinkError(f"Hours must be more than 0 and at most {MAX_HOURS:g}, not {hours}.")
    return max(1, int(round(hours * 3600 / EPOCH_S)))


def is_sleep(stages: np.ndarray) -> np.ndarray:
    """True for epochs scored as sleep (anything but W)."""
    return stages != W


def _transitions() -> np.ndarray:
    """[block, from, to] bout-to-bout probabilities (a pseudo-count keeps rare moves possible
    between stages that real nights do link)."""
    counts = np.array(_TABLE["bout_transition_counts"], dtype=np.float64)
    counts += 0.2 * (counts.sum(axis=0, keepdims=True) > 0)
    for s in range(5):
        counts[:, s, s] = 0.0
    return counts / counts.sum(axis=2, keepdims=True)


_TRANS = _transitions()
_LENGTHS = {(s, b): np.array(table, dtype=np.float64).T
            for s, name in enumerate(STAGE_NAMES)
            for b, table in enumerate(_TABLE["bout_length_counts"][name])}


def _bout_length(rng: np.random.Generator, stage: int, block: int, scale: float) -> int:
    """A bout length (epochs): one of the real bouts of this stage and block, times scale."""
    lengths, counts = _LENGTHS[(stage, block)]
    value = float(rng.choice(lengths, p=counts / counts.sum()))
    return max(1, int(round(value * scale)))


def _draw(rng: np.random.Generator, values: list, limit: int) -> int:
    """One of the real nights' values, jittered by +-20 %, at most limit."""
    return int(min(round(float(rng.choice(values)) * rng.uniform(0.8, 1.2)), limit))


def _next_stage(rng: np.random.Generator, block: int, stage: int, rem_due: int | None,
                pos: int) -> int:
    """The stage after a bout. Until the night's first REM period (rem_due, an epoch; None
    once it has come) a draw of REM stays in light sleep, and once it is due, light sleep
    goes into REM and deep sleep or wake into light sleep first: a chain by 2-hour blocks
    alone put REM within an hour of onset on a third of nights, where none of the 25 real
    nights had any."""
    if rem_due is not None and pos >= rem_due:
        return REM if stage in (N1, N2) else N1 if stage == W else N2
    nxt = int(rng.choice(5, p=_TRANS[block, stage]))
    if rem_due is not None and nxt == REM:
        return N1 if stage == W else N2
    return nxt


def make_hypnogram(seed: int, n_epochs: int) -> np.ndarray:
    """Return the stage code (W, N1, N2, N3, REM) of every epoch of a night."""
    rng = np.random.default_rng([seed, _STREAM])
    stages = np.full(n_epochs, W, dtype=np.int8)
    sol = max(2, _draw(rng, _TABLE["sol_epochs"], n_epochs // 6))
    final_wake = max(2, _draw(rng, _TABLE["final_wake_epochs"], n_epochs // 10))
    end = n_epochs - final_wake
    if end - sol < 4:
        return stages
    scale = float(np.exp(rng.normal(0.0, 0.2)))  # this night's bouts: shorter or longer
    rem_due = sol + _draw(rng, _TABLE["rem_latency_epochs"], n_epochs)
    pos, stage = sol, N1
    while pos < end:
        block = min(int((pos - sol) * EPOCH_S / 3600.0 / BIN_H), N_BINS - 1)
        length = _bout_length(rng, stage, block, scale)
        if rem_due is not None and stage == N2:
            length = min(length, max(rem_due - pos, 1))  # N2 gives way to REM on time
        if stage == REM:
            rem_due = None
        stages[pos:min(pos + length, end)] = stage
        pos += length
        stage = _next_stage(rng, block, stage, rem_due, pos)
    if stages[end - 1] == W:  # the sleep period ends asleep; the final awakening follows
        stages[end - 1] = N1
    return stages
