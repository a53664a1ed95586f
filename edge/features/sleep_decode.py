"""The night's hypnogram from the sleep stager's per-epoch stage probabilities.

Taking each epoch's most likely stage on its own gave hypnograms no scorer would draw: short
runs of "REM" minutes after sleep onset, a first REM period broken into pieces. Here the
hypnogram is the single most likely stage sequence (Viterbi) given the stager's probabilities,
real nights' epoch-to-epoch stage transitions, and how likely REM is at each time since sleep
onset. Both come with the model's metadata (`decoder` in edge/models/sleep_stage.json, built
by tools/train/nightmodels.py from the 25 Dreem DOD-H nights): on those nights no REM came
within 65 minutes of sleep onset, and AASM counts REM within 15 minutes of onset as
abnormal (a sleep-onset REM period), so REM that early needs several epochs of strong
evidence, not one. Deterministic (ties go to the lower stage code), one pass over the night
per decode, two decodes: the first finds sleep onset, the second applies the REM prior from it.
"""

from __future__ import annotations

import numpy as np

from nightlink.shared import sleep_epochs

WAKE, REM = 0, 3
EPOCH_MIN = 0.5
PROB_FLOOR = 1e-3  # an int8 output of 0 is "below 1/256", not impossible
FIXED = -1e9  # log-likelihood of a stage an outside rule has excluded


def viterbi(log_emit: np.ndarray, log_trans: np.ndarray, log_start: np.ndarray) -> np.ndarray:
    """The most likely state sequence ([n] int8) of an HMM in log space."""
    n, k = log_emit.shape
    path = np.zeros(n, dtype=np.int8)
    if n == 0:
        return path
    back = np.zeros((n, k), dtype=np.int8)
    score = log_start + log_emit[0]
    cols = np.arange(k)
    for t in range(1, n):
        cand = score[:, None] + log_trans
        back[t] = np.argmax(cand, axis=0)
        score = cand[back[t], cols] + log_emit[t]
    path[-1] = int(np.argmax(score))
    for t in range(n - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path


def rem_prior(minutes: np.ndarray, points) -> np.ndarray:
    """REM likelihood factor at each time since sleep onset (minutes; negative: before
    onset), piecewise linear through points [[minutes, factor], ...], flat beyond them."""
    xs = [float(m) for m, _ in points]
    ys = [float(f) for _, f in points]
    return np.interp(minutes, xs, ys)


def decode(prob: np.ndarray, meta: dict, wake: np.ndarray | None = None,
           fixed: np.ndarray | None = None) -> np.ndarray:
    """The hypnogram ([n] int8, 0 Wake 1 Light 2 Deep 3 REM) of a night's stage probabilities
    ([n, 4]) under the decoder settings meta. wake, fixed: an outside rule's wake call per
    epoch and the epochs where it decides sleep/wake (the actigraphy floor); there the
    hypnogram is wake exactly where the rule says so, and the decoder only picks the stage."""
    trans = np.asarray(meta["transitions"], dtype=np.float64)
    log_trans = np.log(np.maximum(trans, 1e-12))
    log_start = np.log(np.asarray(meta["start"], dtype=np.float64))
    # The stager's probabilities divided by the stage shares it was trained towards: the
    # likelihood of the epoch's inputs under each stage, which is what an HMM multiplies.
    emit = float(meta["emission_weight"]) * (np.log(np.maximum(prob, PROB_FLOOR))
                                             - np.log(np.asarray(meta["class_prior"])))
    if wake is not None and fixed is not None:
        emit[fixed & wake, 1:] = FIXED
        emit[fixed & ~wake, WAKE] = FIXED
    path = viterbi(emit, log_trans, log_start)
    onset = sleep_epochs.sleep_onset(path.tolist(), WAKE)
    if onset is None:
        return path
    minutes = (np.arange(path.size) - onset) * EPOCH_MIN
    emit[:, REM] += np.log(rem_prior(minutes, meta["rem_prior"]))
    return viterbi(emit, log_trans, log_start)
