"""`nightlink train snore` and `nightlink eval snoring`: randomised bedrooms in, an int8 model
and in-silico figures (never a real-audio claim) out; the randomised simulator itself."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from nightlink.cli import main
from nightlink.edge.features import classify
from nightlink.tools.sim.audio import CHUNK, at_rate, make_scene, render
from nightlink.tools.sim.events import plan_night
from nightlink.tools.train import snore

MODELS = classify.MODELS


def _last_json(output):
    return json.loads(output.strip().splitlines()[-1])


def test_snore_model__committed_int8_small_with_a_card():
    blob = (MODELS / "snore.tflite").read_bytes()
    assert len(blob) < 200 * 1024
    it = classify.interpreter(blob)
    kinds = {d["dtype"] for d in it.get_tensor_details()
             if "MatMul" in d["name"] and "Relu" not in d["name"]}
    assert kinds == {np.int8}
    meta = json.loads((MODELS / "snore.json").read_text())
    assert meta["inputs"] == "audio only" and meta["context_epochs"] == 0
    # how the sound comes and goes, not its spectral shape, level or rhythm (edge/models/snore.md)
    assert meta["features"] == list(snore.MODEL_FEATURES) and len(meta["center"]) == 4
    assert not {"sn_env_periodicity", "sn_low_ratio", "sn_centroid_hz"} & set(meta["features"])
    assert "in silico" in (MODELS / "snore.md").read_text()


def test_varied_scene__deterministic_and_not_the_plain_one():
    plan = plan_night(3, "adult#002", 16)  # (the airflow model needs a few minutes)
    a = np.concatenate(list(render(make_scene(plan, varied=True), 2, 2)))
    b = np.concatenate(list(render(make_scene(plan, varied=True), 2, 2)))
    plain = np.concatenate(list(render(make_scene(plan), 2, 2)))
    assert a.size == 2 * CHUNK and np.array_equal(a, b)
    assert not np.array_equal(a, plain)
    scene = make_scene(plan, varied=True)
    assert {"gain_db", "rt60_s", "snore_f0_hz", "mic_highpass_hz"} <= set(scene.varied.description)


def test_at_rate__lengths_follow_the_rate():
    chunk = np.zeros(CHUNK, dtype=np.int16)
    for rate in (8_000, 44_100, 48_000):
        out = np.concatenate(list(at_rate(iter([chunk, chunk]), rate)))
        assert out.size == 2 * 30 * rate and out.dtype == np.int16


def test_eval_snoring__json_is_in_silico_and_points_to_the_real_clip_figures(tmp_path):
    r = CliRunner().invoke(main, ["eval", "snoring", "--json", "--nights", "1",
                                  "--cache", str(tmp_path)])
    assert r.exit_code == 0, r.output
    got = _last_json(r.output)
    assert got["in_silico"] is True and got["inputs"] == "audio only"
    assert "in silico" in got["real_audio_target"] and "--clips" in got["real_audio_target"]
    assert {"sensitivity", "specificity", "by_rate", "invariance", "auc",
            "rule_sn_low_ratio_auc", "household_nights", "assembled_clips"} <= set(got)
    clips = got["assembled_clips"]
    assert clips["epochs"] == 6 and clips["snore_epochs"] + clips["other_epochs"] == 6
    assert {"auc", "rule_sn_low_ratio_auc", "by_make_up"} <= set(clips)
    assert got["household_nights"]["nights"] == 1
    inv = got["invariance"]
    assert inv["other_nights"] == 1.0
    assert {"gain_x0.1", "gain_x10", "rate_8000", "rate_44100", "rate_48000"} <= set(inv)


def test_train_snore__writes_a_loadable_int8_model(tmp_path):
    pytest.importorskip("tensorflow")
    models = tmp_path / "models"
    r = CliRunner().invoke(main, ["train", "snore", "--nights", "2", "--cache",
                                  str(tmp_path / "cache"), "--models", str(models)])
    assert r.exit_code == 0, r.output
    meta = json.loads((models / "snore.json").read_text())
    assert 0.05 <= meta["threshold"] <= 0.95 and len(meta["center"]) == len(meta["features"])
    model = classify.Int8Model((models / "snore.tflite").read_bytes())
    p = model(np.zeros((3, len(meta["features"])), dtype=np.float32))[0]
    assert p.shape == (3, 1) and ((0 <= p) & (p <= 1)).all()
