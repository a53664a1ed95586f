"""The simulator's stage sequences against the real nights they are drawn from (the Dreem
DOD-H table in tools/sim/stage_stats.json), and the table against the hypnograms when the
shared data is there."""

import json

import numpy as np
import pytest

from nightlink.tools.sim import stage_stats
from nightlink.tools.sim.hypnogram import make_hypnogram
from tests.support.shared_data import SHARED

DREEM = SHARED / "dreem-dodh" / "scorers"
TABLE = stage_stats.load_table()


@pytest.fixture(scope="module")
def simulated():
    return [stage_stats.night_stats(make_hypnogram(seed, 960)) for seed in range(300, 380)]


def _mean(nights, key):
    return float(np.mean([n[key] for n in nights if n[key] is not None]))


def test_simulated_nights__stage_shares_close_to_the_real_ones(simulated):
    for stage, real in TABLE["stage_pct_of_sleep_period"].items():
        sim = float(np.mean([n["pct"][stage] for n in simulated]))
        assert abs(sim - real) < max(3.0, 0.2 * real), (stage, sim, real)


def test_simulated_nights__onset_rem_latency_and_awakenings_like_the_real_ones(simulated):
    real = TABLE["night"]
    sol = np.median([n["sol_min"] for n in simulated])
    assert abs(sol - real["sol_min"]["median"]) < 8
    rem = np.median([n["rem_latency_min"] for n in simulated if n["rem_latency_min"] is not None])
    assert abs(rem - real["rem_latency_min"]["median"]) < 25
    assert abs(_mean(simulated, "awakenings_per_h") - real["awakenings_per_h"]["mean"]) < 0.8
    # Nights differ from one another as real ones do, not one template night.
    assert np.std([n["rem_latency_min"] for n in simulated if n["rem_latency_min"]]) > 30


def test_simulated_nights__epoch_transitions_close_to_the_real_ones():
    real = np.array(TABLE["epoch_transition_counts"], dtype=float)
    real /= real.sum(axis=1, keepdims=True)
    sim = np.zeros((5, 5))
    # 120 nights: how long wake runs hangs on a few long bouts, so 40 nights moved the wake
    # diagonal by +-0.03 from one set of seeds to the next.
    for seed in range(300, 420):
        h = make_hypnogram(seed, 960)
        asleep = np.flatnonzero(h != 0)
        h = h[asleep[0]:asleep[-1] + 1]
        np.add.at(sim, (h[:-1], h[1:]), 1)
    sim /= sim.sum(axis=1, keepdims=True)
    # Staying in a stage (how long bouts run) within 3 points; every row within 0.1 (L1).
    assert np.abs(np.diag(sim) - np.diag(real)).max() < 0.03
    assert np.abs(sim - real).sum(axis=1).max() < 0.1


def test_inter_scorer_ceiling_is_in_the_table():
    ceiling = TABLE["inter_scorer"]
    assert 0.7 < ceiling["kappa4_mean"] < 0.85 and ceiling["pairs"] == 125


@pytest.mark.skipif(not DREEM.is_dir(), reason="the Dreem DOD-H hypnograms are not here")
def test_table__rebuilt_from_the_hypnograms_is_the_committed_one():
    assert json.loads(json.dumps(stage_stats.build(DREEM), indent=1)) == TABLE


def test_simulated_nights__no_rem_within_the_first_hour_like_the_real_ones():
    # None of the 25 real nights has REM within 65 minutes of onset; the simulator's first REM
    # period comes at one of the real latencies, +-20 %.
    latencies = []
    for seed in range(300, 600):
        n = stage_stats.night_stats(make_hypnogram(seed, 960))
        if n["rem_latency_min"] is not None:
            latencies.append(n["rem_latency_min"])
    assert min(latencies) >= 0.8 * min(TABLE["rem_latency_epochs"]) / 2.0 - 1
    assert abs(np.median(latencies) - TABLE["night"]["rem_latency_min"]["median"]) < 20


def test_rem_latency_human_ceiling_is_in_the_table():
    ceiling = TABLE["rem_latency_inter_scorer"]
    assert ceiling["pairs"] == 125 and 0 < ceiling["median"] < ceiling["p90"]


def _consensus_4stage():
    records = stage_stats.load_records(DREEM)
    order = stage_stats._scorer_order(records)
    return [stage_stats.TO4[stage_stats.consensus(rec, order)] for rec in records]


def _latency4(hyp):
    from nightlink.shared.sleep_epochs import first_rem, sleep_onset

    codes = [int(s) for s in hyp]
    onset = sleep_onset(codes)
    rem = first_rem(codes, onset, 3)
    return onset, (rem - onset) / 2.0 if rem is not None else None


STRAY_MIN = (5, 15, 30, 45)  # minutes after onset where a stray REM epoch is put


@pytest.mark.skipif(not DREEM.is_dir(), reason="the Dreem DOD-H hypnograms are not here")
def test_real_nights__stray_rem_epochs_early_do_not_move_rem_latency():
    for hyp in _consensus_4stage():
        onset, latency = _latency4(hyp)
        stray = hyp.copy()
        stray[[onset + 2 * m for m in STRAY_MIN]] = 3
        stray[onset + 2 * 20:onset + 2 * 20 + 2] = 3  # and a two-epoch one
        assert _latency4(stray) == (onset, latency)


@pytest.mark.skipif(not DREEM.is_dir(), reason="the Dreem DOD-H hypnograms are not here")
def test_real_nights__the_decoder_keeps_rem_latency_and_drops_stray_rem_spikes():
    """Probabilities that favour each real night's consensus stage (0.6), with a confident
    single REM epoch at several times in the first hour: the decoded hypnogram's first REM
    period starts where the consensus's does, within a minute, and sleep onset moves by at
    most 5 minutes (the decoder reads a few minutes of sleep between wake as wake)."""
    from nightlink.edge.features import classify, sleep_decode

    meta = classify.load_meta("sleep_stage")[1]["decoder"]
    for hyp in _consensus_4stage():
        onset, latency = _latency4(hyp)
        prob = np.full((hyp.size, 4), 0.4 / 3)
        prob[np.arange(hyp.size), hyp] = 0.6
        prob[[onset + 2 * m for m in STRAY_MIN]] = [0.01, 0.02, 0.01, 0.96]
        got_onset, got_latency = _latency4(sleep_decode.decode(prob, meta))
        assert abs(got_onset - onset) <= 10
        assert abs(got_onset / 2.0 + got_latency - onset / 2.0 - latency) <= 1.0
