"""`nightlink train breathing-rr` (leave-recordings-out figures, then the committed heart-rhythm
apnea model) and the per-input figures `nightlink eval breathing` reports."""

import gzip
import json

import numpy as np
import pytest
from click.testing import CliRunner

from nightlink.cli import main
from nightlink.edge.features import cvhr
from nightlink.tools.train import apnea_real
from tests.edge.test_cvhr import synthetic_beats
from tests.support.shared_data import SHARED


def _last_json(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


def _recordings(folder, names_cycles):
    """Apnea-ECG-shaped recordings: 70 minutes each, apnea labelled where the heart rate cycles
    (minutes 20-49 of the apnea recordings)."""
    folder.mkdir()
    for i, (name, apnea) in enumerate(names_cycles):
        calm_t, calm_rr = synthetic_beats(70, None, seed=i)
        cyc_t, cyc_rr = synthetic_beats(70, 50.0, seed=i)
        inside = (cyc_t >= 20 * 60) & (cyc_t < 50 * 60)
        if apnea:
            t = np.concatenate([calm_t[calm_t < 20 * 60], cyc_t[inside], calm_t[calm_t >= 50 * 60]])
            rr = np.concatenate([calm_rr[calm_t < 20 * 60], cyc_rr[inside], calm_rr[calm_t >= 50 * 60]])
        else:
            t, rr = calm_t, calm_rr
        with gzip.open(folder / f"{name}_beats.csv.gz", "wt") as fh:
            fh.write("t_min,rr_s\n" + "".join(f"{a / 60:.5f},{b / 1000:.4f}\n"
                                               for a, b in zip(t, rr, strict=True)))
        labels = [(m, int(apnea and 20 <= m < 50)) for m in range(70)]
        (folder / f"{name}_apnea_minutes.csv").write_text(
            "minute,apnea\n" + "".join(f"{m},{a}\n" for m, a in labels))


def test_train_breathing_rr__held_out_figures_and_a_loadable_model(tmp_path):
    data = tmp_path / "recs"
    _recordings(data, [("a01", True), ("a02", True), ("c01", False), ("c02", False)])
    out = tmp_path / "models"
    r = CliRunner().invoke(main, ["train", "breathing-rr", "--data", str(data), "--models", str(out),
                                  "--cv", "2", "--json"])
    assert r.exit_code == 0, r.output
    got = _last_json(r.output)
    assert got["data"] == "real" and got["validation"] == "2-fold leave-recordings-out"
    assert got["source"] == "recordings in recs"  # not Apnea-ECG's credit, nor a machine's path
    for head in cvhr.HEADS:
        assert got[head]["recordings"] == 4 and got[head]["cv_folds"] == 2
        assert {"accuracy", "sensitivity", "specificity", "index15_sensitivity",
                "index15_specificity", "index_pairs"} <= set(got[head])
    # The cycling minutes are plain to see: held-out recordings are scored well.
    assert got["beats"]["accuracy"] >= 0.85 and got["epochs"]["accuracy"] >= 0.85
    meta = json.loads((out / cvhr.MODEL_FILE).read_text())
    assert meta["epochs"]["features"] == [*cvhr.EPOCH_FEATURES, *cvhr.TRAILING_FEATURES]
    assert meta["epochs_summary"]["features"] == list(cvhr.EPOCH_FEATURES)
    assert meta["train"]["recordings"] == ["a01", "a02", "c01", "c02"]
    assert meta["train"]["data"] == got["source"]
    assert meta["cross_validation"]["beats"]["accuracy"] == got["beats"]["accuracy"]
    model = cvhr.RrApneaModel.load(out)
    rec = apnea_real.load_folder(data, ["a01"])[0]
    res = model.from_beats(rec.beat_t_s, rec.rr_ms, rec.minutes)
    assert res["apnea_minutes"][25:45].mean() > 0.8 and res["apnea_minutes"][:15].mean() < 0.2


def test_stored_epochs__cycle_columns_at_wire_resolution(tmp_path):
    """The epochs head trains on what a live edge stores: the reducer's trailing-window
    columns, quantized to the wire's steps and back."""
    from nightlink.shared import features

    data = tmp_path / "recs"
    _recordings(data, [("a01", True)])
    rec = apnea_real.load_folder(data)[0]
    cols = apnea_real.stored_epochs(rec)
    for name in cvhr.TRAILING_FEATURES:
        f = features.features(features.WEARABLE)[features.names(features.WEARABLE).index(name)]
        v = cols[name][~np.isnan(cols[name])]
        assert v.size > 120, name
        assert np.allclose(v / f[features.F_SCALE], np.round(v / f[features.F_SCALE]), atol=1e-6), name
    cyc, calm = cols["cv_fraction"][60:90], cols["cv_fraction"][120:]
    assert np.nanmedian(cyc) > 0.25 > 0.1 > np.nanmedian(calm)


def test_train_breathing_rr__bad_folder_or_folds_is_one_sentence(tmp_path):
    r = CliRunner().invoke(main, ["train", "breathing-rr", "--data", str(tmp_path / "none")])
    assert r.exit_code == 2 and "No recordings folder" in r.output
    data = tmp_path / "recs"
    _recordings(data, [("a01", True), ("c01", False)])
    r = CliRunner().invoke(main, ["train", "breathing-rr", "--data", str(data), "--cv", "5",
                                  "--models", str(tmp_path / "m")])
    assert r.exit_code == 2 and "--cv needs between 2 and 2 folds" in r.output


def test_by_inputs__each_input_alone_and_all_labelled_real_or_simulated():
    """What `nightlink eval breathing` reports under by_inputs, on two stand-in nights (one
    with cycling heart rate and drops in SpO2, one calm) that have no audio."""
    from types import SimpleNamespace

    from nightlink.edge.features.classify import Classifiers
    from tests.edge.test_cvhr import _epochs, _night

    n = 240
    nights = []
    for truth, cycle in ((40.0, 50.0), (2.0, None)):
        streams = _night(_epochs(*synthetic_beats(120, cycle, swing_bpm=20.0, seed=9), n), n)
        w = streams["wearable"]
        w.update(spo2_mean_pct=np.full(n, 95.0), desat3_count=np.zeros(n), desat4_count=np.zeros(n))
        if cycle:
            w["desat3_count"][::4] = 1.0  # 30 an hour
        nights.append(SimpleNamespace(ahi_truth=truth, streams=streams))
    by = apnea_real.by_inputs(Classifiers(), nights, lambda night: night.streams)
    assert set(by) == {"rr", "spo2", "audio", "all"}
    for name in by:
        assert by[name]["simulated"]["data"] == "simulated" and by[name]["simulated"]["nights"] == 2
    for name in ("rr", "spo2", "all"):
        sim = by[name]["simulated"]
        assert sim["nights_with_estimate"] == 2, name
        assert sim["ahi15_sensitivity"] == 1.0 and sim["ahi15_specificity"] == 1.0, name
    assert by["audio"]["simulated"]["nights_with_estimate"] == 0  # no audio, no estimate
    real = by["rr"]["real_beats"]
    assert real["data"] == "real" and real["recordings"] == 70 and "Apnea-ECG" in real["source"]
    assert by["rr"]["real_epochs"]["data"] == "real"


def test_night_study__each_map_held_out_and_the_nested_pick(tmp_path):
    """The night-level study scores every candidate map of the per-minute probabilities on
    recordings whose fold fitted nothing, and the map each fold picks on its own training
    recordings."""
    data = tmp_path / "recs"
    _recordings(data, [("a01", True), ("a02", True), ("a03", True), ("c01", False), ("c02", False),
                       ("c03", False)])
    study = apnea_real.night_study(apnea_real.load_folder(data), 3, inner=2)
    assert set(study) == {*apnea_real.NIGHT_MAPS, "nested"}
    assert sum(study["nested"]["picked"].values()) == 3
    # Half an hour of cycling in 70 minutes: 26 apnea minutes an hour, plain to count.
    count = study["count"]
    assert count["index15_found"] == "3/3" and count["index15_cleared"] == "3/3", count
    assert count["missed"] == [] and count["false_positive"] == []
    for name, figures in study.items():
        assert {"index15_found", "index15_cleared", "index_mae", "index_r"} <= set(figures), name


APNEA_ECG = SHARED / "apnea-ecg-learning"
# The committed model on recordings it was trained on (in-sample: a regression check of the
# file and the code, not a measure of performance; the model card gives both). Reference
# index, the committed model's index.
TRAINING_SET_INDEX = {"a06": (24.3, 1.06), "a11": (28.6, 9.57), "a18": (53.8, 15.52),
                      "a19": (24.5, 25.32), "b02": (10.8, 15.61), "b03": (10.0, 23.1),
                      "c02": (0.1, 1.47)}


@pytest.mark.skipif(not APNEA_ECG.is_dir(), reason="needs the Apnea-ECG recordings "
                    "(set NIGHTLINK_SHARED_DATA to the folder holding apnea-ecg-learning)")
def test_committed_model_gives_the_model_cards_figures():
    """The decisive recordings (near or across 15 an hour) score as the model card says, and
    the held-out figures stored in the model file are the card's."""
    model = cvhr.RrApneaModel.load()
    for rec in apnea_real.load_folder(APNEA_ECG, list(TRAINING_SET_INDEX)):
        ref, claimed = TRAINING_SET_INDEX[rec.name]
        assert round(rec.index, 1) == ref, rec.name
        got = model.from_beats(rec.beat_t_s, rec.rr_ms, rec.minutes,
                               wearable=apnea_real.stored_epochs(rec))["index"]
        assert abs(got - claimed) < 0.05, (rec.name, got)
    held_out = model.meta["cross_validation"]["beats"]
    assert held_out["cv_folds"] == 70 and held_out["recordings"] == 70
    assert (held_out["accuracy"], held_out["sensitivity"], held_out["specificity"]) == (0.861, 0.761, 0.923)
    assert (held_out["index15_sensitivity"], held_out["index15_specificity"]) == (0.838, 0.848)
    assert model.meta["train"]["recordings"][34:36] == ["c10", "x01"]  # both halves of Apnea-ECG
    card = (cvhr.MODELS / "breathing_rr.md").read_text()
    assert "| per-minute accuracy | **0.861** |" in card and "0.838 (31/37)" in card


def _variant(folder, name, beats_text=None, labels_text=None, beats_file=None):
    """A copy of a generated recording with its beats or labels file written another way."""
    if beats_text is not None:
        (folder / f"{name}_beats.csv.gz").unlink()
        (folder / (beats_file or f"{name}_beats.csv")).write_text(beats_text)
    if labels_text is not None:
        (folder / f"{name}_apnea_minutes.csv").write_text(labels_text)


def _beats_rows(folder, name):
    with gzip.open(folder / f"{name}_beats.csv.gz", "rt") as fh:
        return fh.read().splitlines()[1:]


def test_load_folder__files_as_other_tools_write_them_read_the_same(tmp_path):
    """A byte-order mark and semicolons (a spreadsheet), plain .csv beats, upper-case names,
    PhysioNet's N/A letters and minutes written 0.0, beats out of order or repeated: the same
    recording as the reference files."""
    data = tmp_path / "recs"
    _recordings(data, [("a01", True), ("c01", False)])
    ref = {r.name: r for r in apnea_real.load_folder(data)}
    rows = _beats_rows(data, "a01")
    shuffled = rows[::2] + rows[1::2] + rows[:50]  # out of order, 50 beats twice
    _variant(data, "a01", "\ufeffT_MIN;RR_S\n" + "\n".join(r.replace(",", ";") for r in shuffled) + "\n",
             "minute,apnea\n" + "".join(f"{m}.0,{'A' if 20 <= m < 50 else 'N'}\n" for m in range(70)),
             beats_file="A01_BEATS.CSV")
    got = {r.name: r for r in apnea_real.load_folder(data)}
    assert sorted(got) == ["a01", "c01"]  # named as its labels file spells it
    quoted = tmp_path / "quoted"  # R's write.csv quotes every cell
    _recordings(quoted, [("c01", False)])
    [plain] = apnea_real.load_folder(quoted)
    _variant(quoted, "c01", '"t_min","rr_s"\n' + "\n".join(
        '"{}","{}"'.format(*r.split(",")) for r in _beats_rows(quoted, "c01")) + "\n", None)
    [c01] = apnea_real.load_folder(quoted)
    assert np.allclose(c01.rr_ms, plain.rr_ms) and np.array_equal(c01.apnea, plain.apnea)
    a01 = got["a01"]
    assert np.array_equal(a01.apnea, ref["a01"].apnea)
    assert np.allclose(a01.beat_t_s, ref["a01"].beat_t_s) and np.allclose(a01.rr_ms, ref["a01"].rr_ms)


def test_load_folder__artefact_lines_other_columns_and_a_shorter_labelled_span(tmp_path):
    """Others' recordings: a line marking an artefact, the columns in another order beside
    others, and labels that end before the beats: read, each said in a note, and only the
    labelled minutes scored (the labels' span shorter than the beats was once refused as a
    wrong unit)."""
    data = tmp_path / "recs"
    _recordings(data, [("a01", True), ("c01", False)])
    ref = {r.name: r for r in apnea_real.load_folder(data)}
    rows = _beats_rows(data, "a01")
    body = [f"x,{r.split(',')[1]},{r.split(',')[0]}" for r in rows]
    body.insert(100, "x,NA,artefact")
    _variant(data, "a01", "ecg,rr_s,t_min\n" + "\n".join(body) + "\n")
    _variant(data, "c01", None, "minute,apnea\n" + "".join(f"{m},0\n" for m in range(40)))
    got = {r.name: r for r in apnea_real.load_folder(data)}
    assert np.allclose(got["a01"].rr_ms, ref["a01"].rr_ms)
    assert any("1 lines of a01_beats.csv are not two numbers (first: line 102)" in n
               for n in got["a01"].notes), got["a01"].notes
    c01 = got["c01"]
    assert c01.minutes == 40 and c01.beat_t_s.max() < 45 * 60
    # a spreadsheet's semicolons and decimal commas: the same beats
    (data / "a01_beats.csv").write_text("t_min;rr_s\n" + "\n".join(
        r.replace(",", ";").replace(".", ",") for r in rows) + "\n")
    assert np.allclose(apnea_real.load_folder(data)[0].rr_ms, ref["a01"].rr_ms)
    # times in seconds, whatever span the labels cover: refused as seconds
    (data / "a01_beats.csv").write_text("t_min,rr_s\n" + "\n".join(
        f"{float(r.split(',')[0]) * 60:.3f},{r.split(',')[1]}" for r in rows) + "\n")
    left: list[str] = []
    assert [r.name for r in apnea_real.load_folder(data, skipped=left)] == ["c01"]
    assert "these look like seconds" in left[0], left
    assert any("beats more than 5 minutes after its last labelled minute (39) were left out"
               in n for n in c01.notes), c01.notes


@pytest.mark.parametrize(("beats", "labels", "says"), [
    (None, "minute,apnea\n", "has no labelled minute"),
    (None, "minute,apnea\n0,0\n1,2\n", "line 3 needs a minute from 0 and an apnea label"),
    (None, "minute,apnea\n-1,0\n0,0\n", "line 2 needs a minute from 0"),
    (None, "minute,apnea\n0,0\n2,0\n", "has no label for minute 1"),
    (None, "minute,apnea\n0,0\n1,0\n0,1\n", "line 4 labels minute 0 again, differently"),
    (None, "minute,apnea\n0,0\nnan,1\n", "line 3 needs a minute from 0"),
    (None, "minute,apnea\n0,0\n30000000,1\n", "line 3 labels minute 30000000: more than two"),
    ("t_min,rr_s\n", None, "fewer than 2 beats"),
    ("time,rr\n0.1,0.8\n", None, "needs the columns t_min,rr_s"),
    ("t_min,rr_s\n0.1,830\n0.2,840\n0.3,820\n", None, "median RR interval of 830"),
    ("t_min,rr_s\n0.1,0.8\nabc,0.8\n", None, "fewer than 2 beats"),
    ("t_min,rr_s\n" + "".join(f"{60 * m},0.8\n" for m in range(1, 70)), None,
     "has beats from minute 60 to 4140"),
])
def test_train_breathing_rr__a_bad_recording_left_out_and_named(tmp_path, beats, labels, says):
    """A recording whose files cannot be right is left out with one sentence naming the file
    and line (on stderr, without -v), the others are trained on; no traceback, no NaN."""
    data = tmp_path / "recs"
    _recordings(data, [("a01", True), ("a02", True), ("c01", False), ("c02", False), ("c03", False)])
    _variant(data, "c03", beats, labels)
    r = CliRunner().invoke(main, ["train", "breathing-rr", "--data", str(data), "--models",
                                  str(tmp_path / "m"), "--cv", "2", "--json"])
    assert r.exit_code == 0, r.output
    assert "note: c03 left out: c03_" in r.stderr and says in r.stderr, r.stderr
    assert _last_json(r.stdout)["beats"]["recordings"] == 4


def test_train_breathing_rr__no_apnea_anywhere_gives_null_not_nan(tmp_path):
    """Controls only: no apnea minute, so no sensitivity: null in valid JSON."""
    data = tmp_path / "recs"
    _recordings(data, [("c01", False), ("c02", False), ("c03", False)])
    r = CliRunner().invoke(main, ["train", "breathing-rr", "--data", str(data), "--models",
                                  str(tmp_path / "m"), "--cv", "3", "--json"])
    assert r.exit_code == 0, r.output
    line = r.stdout.strip().splitlines()[-1]
    assert "NaN" not in line
    got = json.loads(line)
    assert got["beats"]["sensitivity"] is None and got["beats"]["specificity"] is not None
    assert "NaN" not in (tmp_path / "m" / cvhr.MODEL_FILE).read_text()


def test_train_breathing_rr__missing_halves_named_and_an_empty_folder_refused(tmp_path):
    data = tmp_path / "recs"
    _recordings(data, [("a01", True), ("a02", True), ("c01", False)])
    (data / "c01_apnea_minutes.csv").unlink()
    r = CliRunner().invoke(main, ["train", "breathing-rr", "--data", str(data), "--models",
                                  str(tmp_path / "m"), "--cv", "2", "--json"])
    assert r.exit_code == 0, r.output
    assert "c01 left out: no c01_apnea_minutes.csv next to c01_beats.csv.gz" in r.stderr
    (data / "a02_beats.csv").write_bytes(gzip.decompress((data / "a02_beats.csv.gz").read_bytes()))
    left: list[str] = []
    assert [r.name for r in apnea_real.load_folder(data, skipped=left)] == ["a01"]
    assert "a02 left out: a02_beats.csv and a02_beats.csv.gz are both its files; keep one." in left
    empty = tmp_path / "empty"
    empty.mkdir()
    r = CliRunner().invoke(main, ["train", "breathing-rr", "--data", str(empty), "--cv", "0"])
    assert r.exit_code == 2 and "No recordings" in r.output, r.output


def test_eval_breathing_data__the_committed_model_scored_as_it_is(tmp_path):
    """`eval breathing --data` scores the model in --models without retraining it (the file is
    unchanged) and names the recordings it was trained on by their beats, not their names."""
    data = tmp_path / "recs"
    _recordings(data, [("a01", True), ("a02", True), ("c01", False), ("c02", False)])
    models = tmp_path / "m"
    r = CliRunner().invoke(main, ["train", "breathing-rr", "--data", str(data), "--models",
                                  str(models), "--cv", "0", "--json"])
    assert r.exit_code == 0, r.output
    before = (models / cvhr.MODEL_FILE).read_bytes()
    other = tmp_path / "other"
    other.mkdir()
    for src in sorted(data.iterdir()):  # the same recordings under other names, and a new one
        (other / src.name.replace("a01", "x01").replace("c02", "x02")).write_bytes(src.read_bytes())
    _recordings(tmp_path / "new", [("n01", False)])  # seed 0 as a01, but no apnea: not a01
    for src in (tmp_path / "new").iterdir():
        (other / src.name).write_bytes(src.read_bytes())
    r = CliRunner().invoke(main, ["eval", "breathing", "--data", str(other), "--models",
                                  str(models), "--json"])
    assert r.exit_code == 0, r.output
    got = _last_json(r.stdout)
    assert (models / cvhr.MODEL_FILE).read_bytes() == before
    assert got["data"] == "real" and got["beats"]["recordings"] == 5
    assert got["seen_in_training"] == ["a02", "c01", "x01", "x02"]
    assert got["named_like_training"] == []
    assert got["beats"]["accuracy"] >= 0.85 and set(got["beats"]["index_pairs"]) >= {"n01"}
    committed = json.loads((apnea_real.ROOT / "edge" / "models" / cvhr.MODEL_FILE).read_text())
    assert len(committed["train"]["fingerprints"]) == len(committed["train"]["recordings"])
    assert got["file_notes"] == {}
    labels = other / "n01_apnea_minutes.csv"  # labels 30 minutes past the beats: said
    labels.write_text(labels.read_text() + "".join(f"{m},0\n" for m in range(70, 100)))
    r = CliRunner().invoke(main, ["eval", "breathing", "--data", str(other), "--models",
                                  str(models), "--json"])
    assert r.exit_code == 0, r.output
    note = "n01: 29 of its 100 labelled minutes have no beats (beats from minute 0 to 70)"
    assert _last_json(r.stdout)["file_notes"]["n01"][0].startswith(note)
    assert note in r.stderr
    # labels every 30 s written as minutes (MIT-BIH polysomnographic): half the labelled
    # minutes have no beats, and the other half scored against the wrong minutes: left out
    labels.write_text("minute,apnea\n" + "".join(f"{m},0\n" for m in range(140)))
    r = CliRunner().invoke(main, ["eval", "breathing", "--data", str(other), "--models",
                                  str(models), "--json"])
    assert r.exit_code == 0, r.output
    assert ("n01 left out: 69 of the 140 minutes n01_apnea_minutes.csv labels have no beats in "
            "n01_beats.csv.gz (beats from minute 0 to 70): labels every 30 s read as minutes, "
            "or beats on another clock than the labels?") in r.stderr, r.stderr
    assert _last_json(r.stdout)["beats"]["recordings"] == 4


def test_corrupt_gzip_and_a_model_file_without_heads__one_sentence(tmp_path):
    data = tmp_path / "recs"
    _recordings(data, [("a01", True), ("c01", False)])
    raw = bytearray((data / "c01_beats.csv.gz").read_bytes())
    raw[200:400] = bytes(b ^ 0x5A for b in raw[200:400])
    (data / "c01_beats.csv.gz").write_bytes(bytes(raw))
    skipped = []
    assert [r.name for r in apnea_real.load_folder(data, skipped=skipped)] == ["a01"]
    assert skipped[0].startswith("c01 left out: Cannot read c01_beats.csv.gz")
    models = tmp_path / "m"
    models.mkdir()
    (models / cvhr.MODEL_FILE).write_text("[]")
    r = CliRunner().invoke(main, ["eval", "breathing", "--data", str(data), "--models", str(models)])
    assert r.exit_code == 2 and "has no model head" in r.output, r.output


@pytest.mark.skipif(not APNEA_ECG.is_dir(), reason="needs the Apnea-ECG recordings "
                    "(set NIGHTLINK_SHARED_DATA to the folder holding apnea-ecg-learning)")
def test_a_real_night_imported_from_a_watch_is_screened_from_its_beats(tmp_path):
    """Real recordings' beats written as a watch's FIT file, imported the way a user does:
    the night is summarised at once and screened from the beats as the model reads the
    recording itself (the file's 1-ms steps and summed beat times aside)."""
    import time

    from nightlink.edge.store import EdgeStore
    from nightlink.tools.sim.fitwriter import beats_fit

    start = (time.time() // 86400 - 3) * 86400 + 22 * 3600 + 5 * 60  # 22:05 UTC
    label = time.strftime("%Y-%m-%d", time.gmtime(start))
    model = cvhr.RrApneaModel.load()
    for rec in apnea_real.load_folder(APNEA_ECG, ["a01", "c01"]):
        fit = tmp_path / f"{rec.name}.fit"
        fit.write_bytes(beats_fit(rec.beat_t_s, rec.rr_ms, start))
        db = tmp_path / f"{rec.name}.db"
        res = CliRunner().invoke(main, ["edge", "import", str(fit), "--tz", "UTC",
                                        "--db", str(db)])
        assert res.exit_code == 0 and f"Night {label} summarised" in res.output, res.output
        store = EdgeStore(db)
        try:
            breathing = store.night(label)["breathing"]
        finally:
            store.close()
        direct = model.from_beats(rec.beat_t_s, rec.rr_ms, rec.minutes,
                                  wearable=apnea_real.stored_epochs(rec))["index"]
        assert breathing["rr"]["source"] == "beats+epochs"
        assert abs(breathing["rr"]["apnea_index"] - direct) < 3, (rec.name, breathing, direct)
        flagged = breathing["screen"] == cvhr.SCREEN_MESSAGE
        assert flagged == (rec.name == "a01"), (rec.name, breathing)


def test_seen_by_labels__a_copy_with_other_beats_or_trimmed_is_recognised():
    """The beats' digest misses a copy whose beats another detector found (or with a few
    artefacts); the expert's minute labels are the same whoever detects beats, so their runs
    recognise it, trimmed too. Another recording's labels are not taken for it."""
    rng = np.random.default_rng(3)
    runs = [int(n) for n in rng.integers(3, 25, size=24)]
    labels = np.concatenate([np.full(n, k % 2, dtype=np.uint8) for k, n in enumerate(runs)])
    beats_t = np.arange(labels.size * 60, dtype=np.float64)
    trained = apnea_real.Recording("a01", beats_t, np.full(beats_t.size, 1000.0), labels)
    marks = {"a01": apnea_real.label_marks(trained)}
    assert len(marks["a01"]) >= 10
    copy = apnea_real.Recording("x", beats_t[:-600], np.full(beats_t.size - 600, 990.0),
                                labels[sum(runs[:2]) + 2:])  # another detector's beats, trimmed
    assert apnea_real.fingerprint(copy) != apnea_real.fingerprint(trained)
    assert apnea_real.seen_by_labels(copy, marks)
    other_runs = [int(n) for n in np.random.default_rng(4).integers(3, 25, size=24)]
    other = np.concatenate([np.full(n, k % 2, dtype=np.uint8) for k, n in enumerate(other_runs)])
    assert not apnea_real.seen_by_labels(
        apnea_real.Recording("y", beats_t, np.full(beats_t.size, 1000.0), other), marks)
    committed = json.loads((apnea_real.ROOT / "edge" / "models" / cvhr.MODEL_FILE).read_text())
    assert set(committed["train"]["label_marks"]) <= set(committed["train"]["recordings"])


def test_eval_breathing_data__a_training_recordings_name_on_other_beats_is_said(tmp_path):
    """Beats derived again from the same ECG differ from the training copy, so the beats do
    not recognise the recording: its name, one the model was trained on, is reported beside
    the figures (`named_like_training`) so they are not read as held out."""
    data = tmp_path / "recs"
    _recordings(data, [("a01", True), ("c01", False)])
    models = tmp_path / "m"
    assert CliRunner().invoke(main, ["train", "breathing-rr", "--data", str(data), "--models",
                                     str(models), "--cv", "0"]).exit_code == 0
    other = tmp_path / "other"
    _recordings(other, [("x01", False), ("c01", False)])  # c01 now seed 1: other beats
    for name in ("c01_beats.csv.gz", "c01_apnea_minutes.csv"):
        (other / name).unlink()
        (other / name.replace("c01", "C01")).write_bytes((other / name.replace("c01", "x01"))
                                                          .read_bytes())
    r = CliRunner().invoke(main, ["eval", "breathing", "--data", str(other), "--models",
                                  str(models), "--json"])
    assert r.exit_code == 0, r.output
    got = _last_json(r.stdout)
    assert got["named_like_training"] == ["C01"], got.get("named_like_training")


def _mit(samples, codes, aux_at=None):
    """An MIT-format annotation file: each annotation's code over its samples since the one
    before, a SKIP for a long interval, an AUX text after the annotation `aux_at`."""
    from nightlink.tools.train import wfdb_files

    words, prev = [], 0
    for k, (s, c) in enumerate(zip(samples, codes, strict=True)):
        step = int(s) - prev
        if step > 1023:
            words += [wfdb_files.SKIP << 10, step >> 16, step & 0xFFFF]
            step = 0
        words.append((int(c) << 10) | step)
        if k == aux_at:
            words += [(wfdb_files.AUX << 10) | 3, ord("(") | ord("N") << 8, ord("\0")]
        prev = int(s)
    words.append(0)
    return np.array(words, dtype="<u2").tobytes()


def test_physionet_wfdb_files__read_as_the_same_recordings(tmp_path):
    """The Apnea-ECG database as PhysioNet publishes it (a header, the QRS detector's beats,
    the expert's minute labels in .apn; the test set's labels in event-2-answers) scores
    without the wfdb package: the same beats (to the 10 ms of a 100 Hz sample) and labels as
    the layout's files; a record without labels is named."""
    data = tmp_path / "recs"
    _recordings(data, [("a01", True), ("x01", False)])
    ref = {r.name: r for r in apnea_real.load_folder(data)}
    wfdb = tmp_path / "wfdb"
    wfdb.mkdir()
    for name, rec in ref.items():
        samples = np.rint(rec.beat_t_s * 100).astype(int)
        codes = np.ones(samples.size, dtype=int)
        codes[5] = 14  # noise: not a beat
        (wfdb / f"{name}.qrs").write_bytes(_mit(samples, codes, aux_at=3))
        (wfdb / f"{name}.hea").write_text(f"{name} 1 100 {samples[-1] + 100}\n{name}.dat 16 200 "
                                          "12 0 0 0 0 ECG\n")
        (wfdb / f"{name}.dat").write_bytes(b"\0" * 16)
    (wfdb / "a01.apn").write_bytes(_mit(np.arange(70) * 6000, np.where(ref["a01"].apnea, 8, 1)))
    letters = "".join("A" if a else "N" for a in ref["x01"].apnea)
    spaced = " ".join(letters[k:k + 10] for k in range(60, len(letters), 10))  # in groups
    (wfdb / "event-2-answers").write_text(  # blocks parted by a line of spaces, CRLF
        ("x01\n 0 " + letters[:60] + "\n 1 " + spaced + "\n   \n"
         "x02\n 0 " + "N" * 60 + "\n").replace("\n", "\r\n"))
    (wfdb / "x03.qrs").write_bytes(_mit([100, 200], [1, 1]))
    (wfdb / "x03.hea").write_text("x03 1 100/1 300\n")
    (wfdb / "b09.qrs").write_bytes(_mit([100, 200], [1, 1]))
    (wfdb / "b09.hea").write_text("b09 1 100 300\n")
    (wfdb / "b09.apn").write_bytes(_mit([0, 6000, 18000], [1, 1, 8]))  # minute 2 unlabelled
    left: list[str] = []
    got = {r.name: r for r in apnea_real.load_folder(wfdb, skipped=left)}
    assert left == ["b09 left out: b09.apn has no label for minute 2.",
                    "x03 left out: no x03.apn nor a block for it in an event-2-answers file."]
    assert sorted(got) == ["a01", "x01"]
    for name, rec in got.items():
        want = ref[name]
        assert np.array_equal(rec.apnea, want.apnea), name
        beats = np.delete(want.beat_t_s, 5)  # the 6th was noise
        # the first beat has no interval before it; each other's is the time since the one
        # before, to a 100 Hz sample
        assert np.allclose(rec.beat_t_s, beats[1:], atol=0.006)
        assert np.allclose(rec.rr_ms, np.diff(beats) * 1000, atol=11)
    r = CliRunner().invoke(main, ["eval", "breathing", "--data", str(wfdb), "--json"])
    assert r.exit_code == 0, r.output
    assert _last_json(r.stdout)["beats"]["recordings"] == 2


def test_train_breathing_rr__several_folders_together_and_a_recording_twice_refused(tmp_path):
    """The learning set and the test set (PhysioNet's two halves of Apnea-ECG, in two layouts)
    are trained on together: each folder's recordings, once each, credited by folder."""
    _recordings(tmp_path / "one", [("a01", True), ("c01", False)])
    _recordings(tmp_path / "two", [("x01", True), ("x02", False)])
    out = tmp_path / "models"
    r = CliRunner().invoke(main, ["train", "breathing-rr", "--data", str(tmp_path / "one"),
                                  "--data", str(tmp_path / "two"), "--models", str(out),
                                  "--cv", "4", "--json"])
    assert r.exit_code == 0, r.output
    got = _last_json(r.output)
    assert got["beats"]["recordings"] == 4 and sorted(got["beats"]["index_pairs"]) == [
        "a01", "c01", "x01", "x02"]
    assert got["source"] == f"recordings in one; {apnea_real.TEST_SET_CREDIT}"  # x01, x02
    meta = json.loads((out / cvhr.MODEL_FILE).read_text())
    assert meta["train"]["recordings"] == ["a01", "c01", "x01", "x02"]
    _recordings(tmp_path / "three", [("A01", False)])
    r = CliRunner().invoke(main, ["train", "breathing-rr", "--data", str(tmp_path / "one"),
                                  "--data", str(tmp_path / "three"), "--models", str(out)])
    assert r.exit_code == 2 and f"A01 is in both {tmp_path / 'one'} and {tmp_path / 'three'}" \
        in r.output, r.output
    r = CliRunner().invoke(main, ["train", "breathing-rr", "--data", str(tmp_path / "one"),
                                  "--data", str(tmp_path / "one" / ".." / "one"), "--models",
                                  str(out), "--cv", "0", "--json"])  # one folder, given twice
    assert r.exit_code == 0 and _last_json(r.output)["recordings"] == 2, r.output


def test_source_of__physionet_s_test_set_credited_in_any_layout(tmp_path):
    wfdb = tmp_path / "test"
    wfdb.mkdir()
    for name in ("x01", "x35"):
        (wfdb / f"{name}.qrs").write_bytes(_mit([100, 200], [1, 1]))
        (wfdb / f"{name}.hea").write_text(f"{name} 1 100 300\n")
    assert apnea_real.source_of(wfdb) == apnea_real.TEST_SET_CREDIT
    assert apnea_real.source_of(tmp_path / "csvs", ["x02", "x10"]) == apnea_real.TEST_SET_CREDIT
    (wfdb / "a01.qrs").write_bytes(_mit([100, 200], [1, 1]))
    (wfdb / "a01.hea").write_text("a01 1 100 300\n")
    assert apnea_real.source_of(wfdb) == "recordings in test"  # another set among them
    assert apnea_real.source_of(tmp_path / "x", ["x36"]) == "recordings in x"


def test_pulse_like_copy__jittered_and_thinned_within_its_ranges_and_the_same_every_time(tmp_path):
    """The beats head also learns from each training recording's beats as a pulse sensor
    might give them; the copy is drawn from the recording's name, so training gives the same
    model whatever order the recordings come in."""
    _recordings(tmp_path / "recs", [("a01", True), ("c01", False)])
    a01, c01 = apnea_real.load_folder(tmp_path / "recs")
    one, again = apnea_real.pulse_like(a01), apnea_real.pulse_like(a01)
    assert np.array_equal(one.beat_t_s, again.beat_t_s) and np.array_equal(one.rr_ms, again.rr_ms)
    assert not np.array_equal(apnea_real.pulse_like(c01).beat_t_s[:50], c01.beat_t_s[:50])
    lo, hi = apnea_real.PULSE_MISSED
    assert (1 - hi) * a01.beat_t_s.size - 5 <= one.beat_t_s.size <= a01.beat_t_s.size
    assert np.all(np.diff(one.beat_t_s) >= 0) and np.array_equal(one.apnea, a01.apnea)
    # each beat moved by a few to tens of milliseconds (the jitter's spread), not more
    near = np.abs(one.beat_t_s[:150, None] - a01.beat_t_s[None, :200]).min(axis=1)
    assert 1.0 <= np.median(near) * 1000 <= apnea_real.PULSE_JITTER_MS[1], np.median(near)
    out = tmp_path / "models"
    r = CliRunner().invoke(main, ["train", "breathing-rr", "--data", str(tmp_path / "recs"),
                                  "--models", str(out), "--cv", "0"])
    assert r.exit_code == 0, r.output
    meta = json.loads((out / cvhr.MODEL_FILE).read_text())
    assert meta["train"]["pulse_like_copies"] == {"jitter_ms": [5.0, 25.0], "missed": [0.0, 0.1]}
