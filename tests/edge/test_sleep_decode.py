"""The sleep stager's sequence decoder: deterministic, fast, a single confident REM epoch early
in the night does not become the first REM period (while a sustained one still can), and the
actigraphy floor's sleep/wake passes through untouched."""

import time

import numpy as np

from nightlink.edge.features import classify, sleep_decode
from nightlink.shared.sleep_epochs import first_rem, sleep_onset

META = classify.load_meta("sleep_stage")[1]["decoder"]  # the committed settings
W, L, D, R = 0, 1, 2, 3


def _probs(stages, confidence=0.8):
    """Probabilities that favour the given stage of each epoch."""
    stages = np.asarray(stages)
    prob = np.full((stages.size, 4), (1 - confidence) / 3)
    prob[np.arange(stages.size), stages] = confidence
    return prob


def _latency(path):
    stages = [int(s) for s in path]
    onset = sleep_onset(stages)
    rem = first_rem(stages, onset, R)
    return onset / 2.0, (rem - onset) / 2.0 if rem is not None else None


def _night():
    """20 min awake, light and deep sleep, the first REM period at 90 min after onset."""
    return [W] * 40 + [L] * 60 + [D] * 60 + [L] * 60 + [R] * 30 + [L] * 100 + [R] * 40 + [W] * 10


def test_decode__plain_night_keeps_onset_and_rem_latency():
    path = sleep_decode.decode(_probs(_night()), META)
    assert _latency(path) == (20.0, 90.0)


def test_decode__single_confident_rem_epochs_early_do_not_set_rem_latency():
    prob = _probs(_night())
    for minute in (2, 10, 25, 40, 55):  # minutes after sleep onset
        prob[40 + 2 * minute] = [0.005, 0.005, 0.005, 0.985]
    prob[40 + 2 * 30:40 + 2 * 30 + 2] = [0.01, 0.02, 0.01, 0.96]  # and a two-epoch burst
    path = sleep_decode.decode(prob, META)
    assert _latency(path) == (20.0, 90.0)
    assert not (path[:40 + 180] == R).any()


def test_decode__a_short_rem_burst_in_the_first_hour_is_not_the_first_rem_period():
    # Two minutes of confident "REM" 25 minutes after onset: long enough for the minimum
    # bout, but REM that early is rare in real nights, so the decoder wants more evidence.
    prob = _probs(_night())
    prob[40 + 50:40 + 54] = [0.01, 0.02, 0.01, 0.96]
    path = sleep_decode.decode(prob, META)
    assert _latency(path) == (20.0, 90.0)


def test_decode__a_sustained_confident_early_rem_period_is_still_rem():
    stages = _night()
    stages[40 + 20:40 + 40] = [R] * 20  # ten minutes of REM from 10 minutes after onset
    prob = _probs(stages, confidence=0.98)
    path = sleep_decode.decode(prob, META)
    assert _latency(path)[1] == 10.0


def test_decode__deterministic():
    rng = np.random.default_rng(3)
    prob = rng.dirichlet(np.ones(4) * 0.5, size=900)
    first = sleep_decode.decode(prob, META)
    assert all(np.array_equal(first, sleep_decode.decode(prob.copy(), META)) for _ in range(3))
    assert first.dtype == np.int8 and set(np.unique(first)) <= {W, L, D, R}


def test_decode__the_actigraphy_floor_sets_sleep_wake_exactly():
    rng = np.random.default_rng(4)
    prob = rng.dirichlet(np.ones(4), size=600)
    wake = rng.random(600) < 0.3
    fixed = np.ones(600, dtype=bool)
    fixed[500:] = False  # epochs with more than motion: the decoder decides
    path = sleep_decode.decode(prob, META, wake, fixed)
    assert np.array_equal(path[:500] == W, wake[:500])


def test_decode__a_twelve_hour_night_well_within_the_budget():
    rng = np.random.default_rng(5)
    prob = rng.dirichlet(np.ones(4), size=1440)
    start = time.perf_counter()
    sleep_decode.decode(prob, META)
    assert time.perf_counter() - start < 0.5


def test_decode__empty_and_all_wake_nights():
    assert sleep_decode.decode(np.zeros((0, 4)), META).size == 0
    assert (sleep_decode.decode(_probs([W] * 50, 0.9), META) == W).all()
