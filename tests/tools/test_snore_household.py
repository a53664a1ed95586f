"""Household sounds and irregular snoring in the simulator, the clip epochs an outside tester
builds from 1-s clips, and the AUC the evaluation reports (all in silico)."""

import hashlib

import numpy as np
import pytest

from nightlink.tools.sim.audio import (
    CHUNK,
    ENV_RATE,
    HOUSEHOLD,
    SAMPLE_RATE,
    household_sound,
    make_scene,
    render,
    snore_clip,
)
from nightlink.tools.sim.events import plan_night
from nightlink.tools.train import snore

# sha256 (first 16 hex digits) of epochs 2-3 of plan_night(3, "adult#002", 16), plain and
# varied, as rendered before household sounds existed: the other simulators' sound must not move.
PLAIN_SHA = "56de960a89aa4252"
VARIED_SHA = "4da1e96e8c1f47c1"


def _sha(scene) -> str:
    return hashlib.sha256(np.concatenate(list(render(scene, 2, 2))).tobytes()).hexdigest()[:16]


@pytest.fixture(scope="module")
def plan():
    return plan_night(3, "adult#002", 16)  # (the airflow model needs a few minutes)


def test_household_scene__leaves_the_plain_and_varied_scenes_as_they_were(plan):
    assert _sha(make_scene(plan)) == PLAIN_SHA
    assert _sha(make_scene(plan, varied=True)) == VARIED_SHA
    wide = make_scene(plan, varied=True, household=True)
    assert _sha(wide) != VARIED_SHA and _sha(wide) == _sha(make_scene(plan, varied=True, household=True))
    d = wide.varied.description
    assert d["snore_pattern"] in ("breathing", "irregular", "back_to_back", "bursts", "sparse")
    assert set(d["household"]) <= {*HOUSEHOLD, "montage"} and d["household"]
    assert any(r["type"] in HOUSEHOLD for r in wide.background_log())


@pytest.mark.parametrize("kind", HOUSEHOLD)
def test_household_sound__every_kind_is_sound_of_the_asked_length(kind):
    a = household_sound(np.random.default_rng(5), kind, 3 * SAMPLE_RATE)
    b = household_sound(np.random.default_rng(5), kind, 3 * SAMPLE_RATE)
    assert a.shape == (3 * SAMPLE_RATE,) and np.isfinite(a).all() and np.array_equal(a, b)
    assert np.sqrt(np.mean(a.astype(np.float64) ** 2)) > 0.05


def test_snore_timing__off_the_breathing_rhythm(plan):
    """Back-to-back snores fill an episode; sparse ones leave most of it quiet; neither
    follows the airflow's inspirations."""
    from nightlink.tools.sim.audio import _snore_timing

    airflow = make_scene(plan).airflow
    e = plan.of_type("snore")[0]
    a, b = int(e.start_s * ENV_RATE), int(e.end_s * ENV_RATE)
    assert b - a > 20 * ENV_RATE
    cover = {}
    for pattern in ("back_to_back", "sparse", "irregular", "bursts"):
        env = _snore_timing(np.random.default_rng(1), plan, airflow, pattern)
        assert env[:a].max() == 0 and env[b:].max() == 0  # only inside episodes
        cover[pattern] = float(np.mean(env[a:b] > 0.05))
    assert cover["back_to_back"] > 0.8 and cover["sparse"] < 0.35


def test_snore_clip__one_second_with_a_snore():
    x = snore_clip(np.random.default_rng(3))
    assert x.shape == (SAMPLE_RATE,) and np.isfinite(x).all()
    frames = np.sqrt(np.mean(x.reshape(50, -1).astype(np.float64) ** 2, axis=1))
    assert frames.max() > 5 * np.median(np.sort(frames)[:10])  # a snore over its background


def test_clip_epoch__thirty_clips_labelled_by_snores():
    seen = set()
    for seed in range(40_000, 40_012):
        audio, y, make_up = snore.clip_epoch(seed)
        assert audio.dtype == np.int16 and audio.size == CHUNK
        assert y == (make_up in ("snores", "mixed"))
        seen.add(make_up)
    assert seen == {"snores", "mixed", "household", "one_kind"}
    again = snore.clip_epoch(40_000)
    assert np.array_equal(again[0], snore.clip_epoch(40_000)[0])


def test_auc__ranks_with_ties():
    y = np.array([1, 1, 0, 0])
    assert snore.auc(y, np.array([0.9, 0.8, 0.1, 0.2])) == 1.0
    assert snore.auc(y, np.array([0.1, 0.2, 0.9, 0.8])) == 0.0
    assert snore.auc(y, np.array([0.5, 0.5, 0.5, 0.5])) == 0.5
    assert snore.auc(np.array([1, 1]), np.array([0.3, 0.4])) is None


def test_committed_model__epochs_of_clips_cut_end_to_end_are_not_all_snoring():
    """Held-out epochs of 1-s clips end to end, as an outside tester builds them from clip
    datasets: the committed model finds the snoring ones and clears at least 70 % of the
    others, ranking them better than the 60-400 Hz share rule does. (The first model, which
    read the epoch's level and rhythm, cleared 12 %; the spectral-shape model after it 52 %.)"""
    from nightlink.edge.features import classify

    got = snore.clip_figures(classify.Classifiers(), 60)
    assert got["sensitivity"] >= 0.9 and got["specificity"] >= 0.7, got
    assert got["auc"] > got["rule_sn_low_ratio_auc"], got
