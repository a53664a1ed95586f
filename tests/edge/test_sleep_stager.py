"""The edge's sleep stager with any subset of inputs: missing modalities flagged (never fed as
typical values), the actigraphy rule as the floor when motion is all there is, calls that do
not depend on the far end of the night, and AASM onset / REM latency that one stray epoch
cannot move."""

import numpy as np
import pytest

from nightlink.edge.features import classify
from nightlink.shared import features
from nightlink.tools.train.nightmodels import cohen_kappa, streams_of, with_only
from nightlink.tools.train.nights import simulate_table

N = 400


def _streams(seed=1, n=N):
    """Plausible random epoch features for every sleep input (no model truth needed)."""
    rng = np.random.default_rng(seed)
    cols = {features.stream(s)[features.S_NAME]: {f: np.zeros(n) for f in features.names(s)}
            for s in (features.WEARABLE, features.AUDIO, features.ROOM)}
    for s, f in classify.SLEEP_FEATURES:
        cols[s][f] = rng.gamma(2.0, 10.0, n)
    cols["wearable"]["movement"] = (cols["wearable"]["activity_count"] > 30).astype(float)
    return cols


@pytest.fixture(scope="module")
def clf():
    return classify.Classifiers()


@pytest.fixture(scope="module")
def night():
    """A simulated 4-hour night through the edge pipeline (features as the edge computes them)."""
    return simulate_table(seed=77, patient="adult#004", hours=4.0)


def test_inputs__a_missing_modality_is_flagged_off_and_zero_not_a_typical_value():
    full = classify.sleep_inputs(_streams())
    only = with_only(_streams(), ("motion",))
    x = classify.sleep_inputs(only)
    assert x.shape == full.shape and np.isfinite(x).all()
    assert classify.modality_masks(only).mean(axis=0).tolist() == [1.0, 0.0, 0.0, 0.0, 0.0]
    width = len(classify.SLEEP_FEATURES)
    centre = x[:, classify.SLEEP_CONTEXT * width:(classify.SLEEP_CONTEXT + 1) * width]
    assert np.all(centre[:, 2:] == 0) and np.any(centre[:, :2] != 0)
    assert classify.sleep_modalities(only) == ["motion"]
    assert classify.sleep_modalities(_streams()) == ["motion", "hr", "hrv", "audio", "room"]


def test_inputs__an_epochs_row_does_not_depend_on_the_rest_of_the_night():
    a = _streams(seed=2)
    b = _streams(seed=2)
    far = 130  # epochs (65 min) past the widest context the inputs use
    for s, f in classify.SLEEP_FEATURES:
        b[s][f][200 + far:] *= 3.0
        b[s][f][:max(0, 200 - far)] += 50.0
    xa, xb = classify.sleep_inputs(a), classify.sleep_inputs(b)
    assert np.array_equal(xa[200], xb[200])
    assert not np.array_equal(xa[200 + far + 5], xb[200 + far + 5])


def test_stages__a_call_does_not_change_when_distant_epochs_do(clf):
    a = _streams(seed=3)
    b = _streams(seed=3)
    for s, f in classify.SLEEP_FEATURES:
        b[s][f][330:] = np.nan  # the last half hour lost
        b[s][f][:70] *= 4.0  # a restless start
    for streams in ((a, b), (with_only(a, ("motion",)), with_only(b, ("motion",)))):
        pa, _, _ = clf.stages(streams[0])
        pb, _, _ = clf.stages(streams[1])
        assert np.array_equal(pa[160:240], pb[160:240])


@pytest.mark.parametrize("subset", list(classify.SLEEP_SUBSETS))
def test_stages__every_input_subset_runs_and_names_what_it_used(clf, night, subset):
    streams = with_only(streams_of(night), classify.SLEEP_SUBSETS[subset])
    path, conf, prob = clf.stages(streams)
    assert path.shape == (night.n,) and set(np.unique(path)) <= {0, 1, 2, 3}
    assert np.all((conf >= 0) & (conf <= 1)) and np.allclose(prob.sum(axis=1), 1, atol=0.05)
    assert classify.sleep_modalities(streams) == list(classify.SLEEP_SUBSETS[subset])


def test_stages__motion_only_is_never_worse_than_the_actigraphy_rule(clf, night):
    streams = with_only(streams_of(night), ("motion",))
    path, _, _ = clf.stages(streams)
    rule = classify.actigraphy_wake(streams["wearable"]["activity_count"])
    truth = (night.stage > 0).astype(int)
    ours = cohen_kappa(truth, (path > 0).astype(int), 2)
    assert ours >= cohen_kappa(truth, (~rule).astype(int), 2)
    assert np.array_equal(path == 0, rule)  # motion alone: sleep/wake is the rule's call


def test_stages__no_wearable_at_all_does_not_crash(clf, night):
    streams = with_only(streams_of(night), ("audio", "room"))
    path, _, _ = clf.stages(streams)
    assert path.shape == (night.n,)
    assert classify.sleep_modalities(streams) == ["audio", "room"]


def _without_the_person(streams, span):
    """streams with motion, heart and audio missing over span (the room still recorded)."""
    for name in ("wearable", "audio"):
        for col in streams[name].values():
            col[span] = np.nan
    return streams


def test_scored_stages__an_epoch_without_the_persons_signals_is_unscored_not_sleep(clf, night):
    hole = slice(100, 220)
    stage, conf, scored = clf.scored_stages(_without_the_person(streams_of(night), hole))
    assert (stage[hole] == -1).all() and np.isnan(conf[hole]).all() and not scored[hole].any()
    assert (stage[:100] >= 0).all() and (stage[220:] >= 0).all()


def test_audio_ahi__a_night_nothing_scored_has_no_index_not_zero(clf, night):
    from nightlink.tools.train.apnea_real import _audio_ahi

    streams = streams_of(night)
    assert _audio_ahi(clf, streams) is not None
    assert _audio_ahi(clf, _without_the_person(streams, slice(None))) is None


def test_actigraphy__still_is_sleep_sustained_movement_is_wake_one_twitch_is_not():
    act = np.full(120, 5.0)
    act[40:70] = 400.0  # 15 minutes of moving about
    act[100] = 2000.0  # one big twitch
    wake = classify.actigraphy_wake(act)
    assert not wake[:30].any() and wake[42:68].all()
    assert not wake[104:].any()
    # Webster: after 15 min of wake, the next minutes of stillness are still wake.
    assert wake[70:74].all()


def _outputs(stage):
    n = len(stage)
    zeros = np.zeros(n, dtype=np.uint8)
    nan = np.full(n, np.nan)
    return classify.NightOutputs(np.array(stage, dtype=np.int8), np.ones(n), zeros, zeros,
                                 zeros, zeros, nan, nan)


def test_figures__a_stray_rem_epoch_after_onset_does_not_set_rem_latency():
    # 20 epochs awake, light sleep with one stray REM epoch 2 min in, REM proper at 75 min.
    stage = [0] * 20 + [1] * 4 + [3] + [1] * 145 + [3] * 20 + [2] * 10
    fig = classify.night_figures(_outputs(stage), with_only(_streams(n=len(stage)), ("motion",)))
    s = fig["sleep"]
    assert s["sol_min"] == 10.0 and s["rem_latency_min"] == 75.0
    assert s["sleep_inputs"] == ["motion"] and s["actigraphy_pct"] == 100.0


def test_figures__a_stray_sleep_epoch_in_the_wake_does_not_set_onset():
    stage = [0] * 10 + [1] + [0] * 19 + [1] * 100 + [3] * 4
    fig = classify.night_figures(_outputs(stage), _streams(n=len(stage)))
    assert fig["sleep"]["sol_min"] == 15.0 and fig["sleep"]["rem_latency_min"] == 50.0
    assert fig["sleep"]["actigraphy_pct"] == 0.0


def test_eval__rem_latency_and_onset_errors_per_input_subset(clf, night):
    from nightlink.tools.train.nightmodels import eval_sleep

    figures = eval_sleep(clf, [night])
    for name in classify.SLEEP_SUBSETS:
        row = figures["by_inputs"][name]
        rem = row["rem_latency_abs_error_min"]
        assert set(rem) == {"median", "p90", "nights", "nights_rem_missed", "nights_rem_spurious"}
        assert rem["nights"] + rem["nights_rem_missed"] + rem["nights_rem_spurious"] <= 1
        assert set(row["sleep_onset_abs_error_min"]) == {"median", "p90", "nights"}
        assert {"kappa", "accuracy", "wake_specificity"} <= set(row)
    assert figures["rem_latency_abs_error_min"] == figures["by_inputs"]["full"]["rem_latency_abs_error_min"]
    ceiling = figures["real"]["rem_latency_inter_scorer_ceiling"]
    assert ceiling["pairs"] == 125 and ceiling["median"] <= ceiling["p90"]
    assert 0 < figures["stage_seconds_per_night_max"] < 2.0
