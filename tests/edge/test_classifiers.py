"""The edge's classifiers: committed int8 models on LiteRT, the clock's MicroPython copy of the
glucose low-risk model, and their outputs joining the night's records and summary."""

import json

import numpy as np
import pytest

from nightlink.edge.features import classify, glucose_risk
from nightlink.shared import features
from nightlink.shared.clinical import ahi_severity
from nightlink.tools.train import glucose_data, int8
from tests.conftest import ROOT

MODELS = ROOT / "edge" / "models"


@pytest.fixture(scope="module")
def held_out_histories():
    """Histories from virtual patients the model never saw (an adolescent and a child)."""
    series = [glucose_data.load_series(p, s, 480, None) for p in ("adolescent#003", "child#007")
              for s in (901, 902)]
    rows = np.concatenate([_rows(s) for s in series])
    rng = np.random.default_rng(5)
    # Plus histories with gaps (sensor errors) and out-of-range readings, as a clock sees them.
    gappy = rows[rng.choice(len(rows), 300)].copy()
    gappy[rng.random(gappy.shape) < 0.1] = 0
    gappy[:, -1] = np.maximum(gappy[:, -1], 40)
    wild = rng.integers(39, 420, size=(300, glucose_data.HISTORY)).astype(np.float32)
    return np.concatenate([rows, gappy, wild])


def _rows(s):
    return glucose_risk.history_rows(s.sgv)


def _filled(rows):
    filled, keep = glucose_risk.filled_rows(rows)
    return keep, filled


def test_models__committed_int8_and_small():
    for name in ("sleep_stage", "breathing", "glucose_risk"):
        blob = (MODELS / f"{name}.tflite").read_bytes()
        assert len(blob) < 200 * 1024
        it = classify.interpreter(blob)
        kinds = {d["dtype"] for d in it.get_tensor_details()
                 if "MatMul" in d["name"] and "Relu" not in d["name"]}
        assert kinds == {np.int8}, f"{name} weights are not int8: {kinds}"
        assert (MODELS / f"{name}.md").exists(), f"{name} has no model card"


def test_glucose__python_integer_math_is_bit_exact_with_litert(held_out_histories):
    rt = glucose_risk.LiteRtGlucose((MODELS / "glucose_risk.tflite").read_bytes())
    _keep, x = _filled(held_out_histories)
    lq, dq = rt.raw(x)
    xq = rt.q.quantize_input(x)
    ours, forecast = [], []
    for row in xq[:1500]:
        h = [int(v) for v in row]
        trunk = h
        for layer in rt.q.layers:
            trunk = h
            h = int8.run_dense(layer, h)
        ours.append(h[0])
        d = trunk if rt.q.delta_on_trunk else [int(v) for v in row]
        for layer in rt.q.delta_layers:
            d = int8.run_dense(layer, d)
        forecast.append(d[0])
    assert ours == [int(v) for v in lq[:1500]]
    assert rt.q.delta_layers and forecast == [int(v) for v in dq[:1500]]


@pytest.mark.micropython
def test_glucose__clock_model_under_micropython_agrees_with_litert(
        held_out_histories, mpy_json, tmp_path):
    rt = glucose_risk.LiteRtGlucose((MODELS / "glucose_risk.tflite").read_bytes())
    rows = held_out_histories
    path = tmp_path / "histories.json"
    path.write_text(json.dumps([[int(v) for v in r] for r in rows]))
    got = mpy_json(ROOT / "tests" / "edge" / "lowrisk_check.py", libs=[ROOT / "shared"],
                   puts=[(path, "/histories.json")], heap=512 * 1024)
    keep, x = _filled(rows)
    lq, permille, forecast = rt.predict(x)
    mine = [got["logits"][k] for k in keep]
    same = sum(int(a) == int(b) for a, b in zip(mine, lq, strict=True))
    assert len(keep) > 900
    assert same / len(keep) >= 0.999, f"{same}/{len(keep)} agree"
    # Same decision on every row, and no prediction where the edge has none.
    assert [got["permille"][k] for k in keep] == [int(p) for p in permille]
    assert all(got["permille"][k] == -1 for k in set(range(len(rows))) - set(keep.tolist()))
    assert got["too_short"] == -1
    # The forecast: the edge's in whole mg/dL, give or take the integer step's rounding (the
    # clock counts readings above 400 mg/dL as 400, its newest reading included).
    clock = np.array([got["forecast"][k] for k in keep])
    in_range = x[:, -1] <= 400
    assert np.abs(clock - np.floor(forecast))[in_range].max() <= 1
    # No allocation per prediction: once warm, 200 predictions allocate what 10 do.
    assert got["alloc"][1] == got["alloc"][2]


def test_glucose__clock_weights_fit_in_8_kb():
    from nightlink.shared import lowrisk_weights

    weights = sum(len(layer[5]) + len(layer[6]) + len(layer[7]) + len(layer[8])
                  for layer in lowrisk_weights.LAYERS + lowrisk_weights.DELTA)
    assert weights + len(lowrisk_weights.INPUT_LUT) + len(lowrisk_weights.PERMILLE) <= 8 * 1024
    assert 0 < lowrisk_weights.ALARM_PERMILLE < 1000


def test_glucose__risk_rises_on_a_fall_toward_low():
    rt = glucose_risk.LiteRtGlucose((MODELS / "glucose_risk.tflite").read_bytes())
    steady = np.full((1, glucose_data.HISTORY), 140, dtype=np.float32)
    falling = np.linspace(160, 78, glucose_data.HISTORY, dtype=np.float32)[None, :]
    alarm = json.loads((MODELS / "glucose_risk.json").read_text())["alarm_permille"]
    _, p_steady, fc_steady = rt.predict(steady)
    _, p_fall, fc_fall = rt.predict(falling)
    assert p_fall[0] >= alarm > 100 > p_steady[0]
    assert fc_fall[0] < 90 and 120 < fc_steady[0] < 160


def test_smoothing__a_one_epoch_blip_is_outvoted_by_its_neighbours():
    prob = np.array([[0.9, 0.1, 0, 0], [0.9, 0.1, 0, 0], [0.4, 0.6, 0, 0],
                     [0.9, 0.1, 0, 0], [0.9, 0.1, 0, 0]])
    assert np.argmax(prob, axis=1).tolist() == [0, 0, 1, 0, 0]
    assert np.argmax(classify.smooth_probabilities(prob), axis=1).tolist() == [0, 0, 0, 0, 0]


def test_severity_classes():
    assert [ahi_severity(a) for a in (0, 4.9, 5, 14.9, 15, 29.9, 30)] == [
        "normal", "normal", "mild", "mild", "moderate", "moderate", "severe"]


@pytest.fixture(scope="module")
def replayed(tmp_path_factory):
    from nightlink.edge.store import EdgeStore
    from nightlink.tools.sim.night import simulate_night
    from nightlink.tools.sim.replay import replay

    tmp = tmp_path_factory.mktemp("classify")
    # A whole night: the simulator compresses sleep cycles into short nights, which real
    # nights never do.
    simulate_night(tmp / "night", seed=3, hours=8, audio_format=None)
    store = EdgeStore(tmp / "edge.db")
    result = replay(tmp / "night", store, audio="stream")
    yield tmp, store, result
    store.close()


def test_replay__classifier_outputs_join_records_and_summary(replayed):
    _tmp, store, result = replayed
    rows = store.epoch_values(features.INFER, result.first_epoch, result.first_epoch + result.epochs)
    assert len(rows) == result.epochs == 960
    stages = [v[0] for v in rows.values()]
    assert set(stages) <= {0, 1, 2, 3} and 0 in stages and 1 in stages
    s = result.summary
    assert s["sleep"]["tib_min"] == 480.0
    assert 300 < s["sleep"]["tst_min"] < 480
    assert s["breathing"]["severity"] in ("normal", "mild", "moderate", "severe")
    assert s["breathing"]["ahi"] == pytest.approx(
        s["breathing"]["apnea_events"] / (s["sleep"]["tst_min"] / 60), abs=0.05)
    assert len(json.dumps(s)) < 2048


def test_replay__stages_follow_the_truth(replayed):
    import csv

    tmp, store, result = replayed
    first = result.first_epoch
    rows = store.epoch_values(features.INFER, first, first + result.epochs)
    with open(tmp / "night" / "truth" / "hypnogram.csv", newline="") as fh:
        truth = {int(r["epoch"]): {"Wake": 0, "Light": 1, "Deep": 2, "REM": 3}[r["stage4"]]
                 for r in csv.DictReader(fh)}
    # Judged as the model card judges stagers (kappa, sleep/wake, each stage), not by one
    # accuracy figure: this whole night with every input is scored at 4-stage kappa 0.78,
    # sleep/wake kappa 0.96; the card's held-out average with every input is 0.68.
    from nightlink.tools.train.nightmodels import stage_scores

    epochs = sorted(rows)
    scores = stage_scores(np.array([truth[e] for e in epochs]),
                          np.array([rows[e][0] for e in epochs], dtype=int))
    assert scores["kappa"] >= 0.7 and scores["accuracy"] >= 0.8
    assert scores["sleep_wake_kappa"] >= 0.9 and scores["wake_specificity"] >= 0.9
    assert min(scores["f1"].values()) >= 0.5, scores["f1"]
