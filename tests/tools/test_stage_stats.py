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
    for seed in range(300, 340):
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
