"""Replaying a simulated night: one record per epoch per modality, features recomputed offline."""

import csv
import json
import shutil

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner

from nightlink.cli import main
from nightlink.edge.features.audio import EPOCH_SAMPLES
from nightlink.edge.node.replay import replay
from nightlink.edge.store import EdgeStore
from nightlink.shared import codec, features
from nightlink.shared.epoch import epoch_start
from nightlink.tools.sim.night import simulate_night

HOURS = 1.5
SEED = 5


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim") / "night"
    simulate_night(out, seed=SEED, hours=HOURS)
    return out


@pytest.fixture(scope="module")
def replayed(night, tmp_path_factory):
    store = EdgeStore(tmp_path_factory.mktemp("edge") / "edge.db")
    result = replay(night, store)
    yield store, result
    store.close()


def _manifest(night):
    return json.loads((night / "manifest.json").read_text())


def _csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _covered(night, source):
    """Epochs whose samples all fall inside one of the simulator's outages of `source`."""
    m = _manifest(night)
    n = m["epoch_grid"]["epoch_count"]
    out = np.zeros(n, dtype=bool)
    for d in m["summary"]["dropouts"]:
        if d["source"] == source:
            for i in range(n):
                if source == "room":  # one reading per epoch, taken at its start
                    out[i] |= d["start_s"] <= i * 30 < d["end_s"]
                else:
                    out[i] |= d["start_s"] <= i * 30 and (i + 1) * 30 <= d["end_s"]
    return out


def _values(store, stream, first, n):
    vals = store.epoch_values(stream, first, first + n)
    names = features.names(stream)
    return {e: dict(zip(names, v, strict=True)) for e, v in vals.items()}


def test_replay__one_record_per_epoch_per_modality(replayed, night):
    store, result = replayed
    n = _manifest(night)["epoch_grid"]["epoch_count"]
    assert result.epochs == n == int(HOURS * 120)
    for stream in (features.ROOM, features.WEARABLE, features.AUDIO, features.CGM):
        recs = list(store.records(stream))
        assert len(recs) == n
        assert [r.epoch for r in recs] == list(range(result.first_epoch, result.first_epoch + n))
        assert [r.seq for r in recs] == list(range(1, n + 1))
    # Plus the classifier outputs: one stream 5 record per hour of epochs.
    infer = list(store.records(features.INFER))
    assert [r.count for r in infer] == [120] * (n // 120) + ([n % 120] if n % 120 else [])
    assert [r.seq for r in infer] == [1 + 120 * k for k in range(len(infer))]
    assert store.outbox_size() == 4 * n + len(infer)
    assert result.problems == [] and result.bad_rows == {}


def test_replay__outages_are_masked_not_filled(replayed, night):
    """Epochs inside the simulator's outages are stored with every feature missing."""
    store, result = replayed
    n, first = result.epochs, result.first_epoch
    wear_out = _covered(night, "wearable")
    room_out = _covered(night, "room")
    assert wear_out.any(), "seed 5 has a wearable outage"
    assert result.present == {"cgm": n, "audio": n, "wearable": int(n - wear_out.sum()),
                              "room": int(n - room_out.sum())}
    wear = store.epoch_values(features.WEARABLE, first, first + n)
    for i in range(n):
        if wear_out[i]:
            assert all(v is None for v in wear[first + i]), i
        else:
            assert wear[first + i][0] is not None, i
    # The CGM keeps its last reading through a signal loss, ageing: minutes_since grows.
    cgm = _values(store, features.CGM, first, n)
    cgm_out = _covered(night, "cgm")
    if cgm_out.any():
        assert max(cgm[first + i]["minutes_since"] for i in np.flatnonzero(cgm_out)) > 10


def test_replay__summary_is_small_and_stored(replayed):
    store, result = replayed
    assert store.night(result.night) == result.summary
    assert len(json.dumps(result.summary, separators=(",", ":"))) <= 2048


def test_replay__heart_rate_and_spo2_match_offline(replayed, night):
    store, result = replayed
    first, n = result.first_epoch, result.epochs
    start = epoch_start(first)
    rr = np.array([[float(r["t_s"]), float(r["rr_ms"])] for r in _csv(night / "rr.csv")])
    spo2 = np.array([[float(r["t_s"]), float(r["spo2_pct"])] for r in _csv(night / "spo2.csv")])
    got = _values(store, features.WEARABLE, first, n)
    checked = 0
    for i in range(n):
        sel = rr[(rr[:, 0] >= i * 30) & (rr[:, 0] < (i + 1) * 30), 1]
        sel = sel[(sel >= 300) & (sel <= 2000)]
        if sel.size:
            assert got[first + i]["hr_mean_bpm"] == pytest.approx(np.mean(60000 / sel), abs=0.051)
            assert got[first + i]["sdnn_ms"] == pytest.approx(np.std(sel, ddof=1), abs=0.051)
            checked += 1
        s = spo2[(spo2[:, 0] >= i * 30) & (spo2[:, 0] < (i + 1) * 30), 1]
        if not s.size:
            assert got[first + i]["spo2_min_pct"] is None
            continue
        assert got[first + i]["spo2_min_pct"] == pytest.approx(s.min(), abs=0.26)
        assert got[first + i]["spo2_mean_pct"] == pytest.approx(s.mean(), abs=0.26)
    assert checked > 0.8 * n
    del start


def test_replay__room_and_cgm_match_files(replayed, night):
    store, result = replayed
    first, n = result.first_epoch, result.epochs
    room = _values(store, features.ROOM, first, n)
    for row in _csv(night / "room.csv"):
        got = room[int(row["epoch"])]
        assert got["temp_c"] == pytest.approx(float(row["temp_c"]), abs=0.006)
        assert got["co2_ppm"] == pytest.approx(float(row["co2_ppm"]), abs=0.5)
    cgm = _values(store, features.CGM, first, n)
    readings = [(int(r["epoch_ms"]) / 1000, r) for r in _csv(night / "cgm.csv")]
    for e in range(first, first + n):
        end = epoch_start(e) + 30
        t, r = max((x for x in readings if x[0] < end), key=lambda x: x[0])
        if r["error_code"]:
            assert cgm[e]["glucose_mgdl"] is None and cgm[e]["sensor_error"] == int(r["error_code"])
        else:
            assert cgm[e]["glucose_mgdl"] == int(r["sgv_mgdl"])
            assert cgm[e]["sensor_error"] is None
        assert cgm[e]["minutes_since"] == pytest.approx((end - t) / 60, abs=0.26)


def test_replay__audio_features_match_librosa(replayed, night):
    """Centroid, flatness and MFCC means recomputed with librosa on a few epochs."""
    librosa = pytest.importorskip("librosa")
    store, result = replayed
    first = result.first_epoch
    got = _values(store, features.AUDIO, first, result.epochs)
    for i in (3, 40, 111):
        y, sr = soundfile.read(night / "audio.wav", start=i * EPOCH_SAMPLES, frames=EPOCH_SAMPLES,
                               dtype="float32")
        stft = librosa.stft(y, n_fft=512, hop_length=512, center=False, window="hann")
        power = np.abs(stft) ** 2
        weight = np.abs(stft).sum(axis=0)
        cent = librosa.feature.spectral_centroid(S=np.abs(stft), sr=sr, n_fft=512)[0]
        mel = librosa.feature.melspectrogram(S=power, sr=sr, n_mels=40)
        mfcc = librosa.feature.mfcc(S=librosa.power_to_db(mel, amin=1e-10, top_db=None),
                                    n_mfcc=13)
        flat = librosa.feature.spectral_flatness(S=np.abs(stft))[0]
        g = got[first + i]
        assert g["centroid_hz"] == pytest.approx(np.sum(cent * weight) / weight.sum(), abs=16.1)
        assert g["flatness"] == pytest.approx(flat.mean(), abs=0.005)
        assert g["mfcc0_mean"] == pytest.approx(mfcc[0].mean(), abs=0.06)
        assert g["mfcc1_mean"] == pytest.approx(mfcc[1].mean(), abs=1.01)
        for k in range(2, 13):
            assert g[f"mfcc{k}_mean"] == pytest.approx(mfcc[k].mean(), abs=0.51)
        frame_ms = (y[: 937 * 512].reshape(937, 512) ** 2).mean(axis=1)
        assert g["loud_mean_dbfs"] == pytest.approx(10 * np.log10(frame_ms.mean()), abs=0.26)


def test_replay__audio_finds_truth_events(replayed, night):
    """Apnea epochs show long silences; snore epochs a larger low-band share."""
    store, result = replayed
    first = result.first_epoch
    got = _values(store, features.AUDIO, first, result.epochs)
    events = _csv(night / "truth" / "events.csv")
    apneas = [e for e in events if e["type"] == "apnea" and float(e["end_s"]) < HOURS * 3600]
    for a in apneas:
        end_epoch = first + int(float(a["end_s"]) // 30)
        seen = max(got[e]["silence_max_s"] for e in (end_epoch - 1, end_epoch))
        assert seen >= 0.8 * (float(a["end_s"]) - float(a["start_s"])), a
    snore = np.zeros(result.epochs, dtype=bool)
    for e in events:
        if e["type"] == "snore":
            snore[int(float(e["start_s"]) // 30) + 1 : int(float(e["end_s"]) // 30)] = True
    ratio = np.array([got[first + i]["snore_ratio"] for i in range(result.epochs)])
    assert snore.any() and (~snore).any()
    assert ratio[snore].mean() > 2 * ratio[~snore].mean()


@pytest.fixture
def damaged(night, tmp_path):
    """A copy of the night to damage (audio left out unless a test adds it)."""
    out = tmp_path / "damaged"
    out.mkdir()
    for f in night.iterdir():
        if f.is_file() and f.suffix != ".wav":
            shutil.copy(f, out / f.name)
    return out


def test_replay__truncated_audio_keeps_the_rest(night, damaged, tmp_path, replayed):
    with open(night / "audio.wav", "rb") as src, open(damaged / "audio.wav", "wb") as dst:
        dst.write(src.read(44 + 2 * EPOCH_SAMPLES * 20 + 1000))  # 20 epochs and a bit
    store = EdgeStore(tmp_path / "e.db")
    result = replay(damaged, store)
    assert result.present["audio"] == 20
    assert result.present["wearable"] == replayed[1].present["wearable"]
    assert any("ends" in p for p in result.problems)
    assert store.gaps("audio")[0]["start_epoch"] == result.first_epoch + 20
    assert store.count_records(features.AUDIO) == result.epochs  # the rest are stored as missing
    store.close()


def test_replay__a_rate_below_8_khz_is_refused_clearly(damaged, tmp_path):
    soundfile.write(damaged / "audio.wav", np.zeros(4000 * 60, dtype=np.int16), 4000)
    store = EdgeStore(tmp_path / "e.db")
    result = replay(damaged, store)
    assert any("4000 Hz" in p and "8000-192000 Hz" in p for p in result.problems)
    assert result.present["audio"] == 0 and result.present["cgm"] == result.epochs
    store.close()


def test_replay__a_48_khz_stereo_recording_is_resampled_not_refused(night, damaged, tmp_path,
                                                                     replayed):
    audio, rate = soundfile.read(night / "audio.wav", dtype="int16", frames=16000 * 30 * 12)
    assert rate == 16000
    up = np.interp(np.arange(audio.size * 3) / 3.0, np.arange(audio.size), audio)
    stereo = np.stack([up, up], axis=1).round().astype(np.int16)
    soundfile.write(damaged / "audio.wav", stereo, 48000)
    store = EdgeStore(tmp_path / "e.db")
    result = replay(damaged, store)
    assert result.present["audio"] == 12  # the 12 epochs written, the rest reported missing
    assert any("ends" in p for p in result.problems)
    ref_store = replayed[0]
    first = result.first_epoch
    got = store.epoch_values(features.AUDIO, first + 2, first + 10)
    ref = ref_store.epoch_values(features.AUDIO, first + 2, first + 10)
    # The level (dBFS, feature 0) of each epoch agrees within a decibel after resampling.
    assert all(abs(got[e][0] - ref[e][0]) < 1.0 for e in got)
    store.close()


def test_replay__corrupt_csv_rows_and_missing_file(damaged, tmp_path):
    lines = (damaged / "rr.csv").read_text().splitlines()
    lines[100] = "garbage,not-a-number"
    lines[200] = "1.5"
    (damaged / "rr.csv").write_text("\n".join(lines) + "\n")
    (damaged / "spo2.csv").unlink()
    store = EdgeStore(tmp_path / "e.db")
    result = replay(damaged, store, audio="none")
    assert result.bad_rows == {"rr.csv": 2}
    assert any("spo2.csv cannot be read" in p for p in result.problems)
    vals = _values(store, features.WEARABLE, result.first_epoch, result.epochs)
    assert all(v["spo2_mean_pct"] is None for v in vals.values())
    hr_missing = sum(v["hr_mean_bpm"] is None for v in vals.values())
    assert hr_missing == int(_covered(damaged, "wearable").sum())
    store.close()


def test_edge_replay_cli(night, tmp_path):
    res = CliRunner().invoke(
        main, ["edge", "replay", str(night), "--db", str(tmp_path / "e.db"), "--audio", "none",
               "--json"]
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.output.strip().splitlines()[-1])
    assert out["records"] == 4 * int(HOURS * 120) and out["present"]["audio"] == 0


def test_edge_replay_cli__not_a_night(tmp_path):
    res = CliRunner().invoke(main, ["edge", "replay", str(tmp_path), "--db", str(tmp_path / "e.db")])
    assert res.exit_code == 2
    assert "holds no manifest.json" in res.output


def test_edge_replay_cli__stream_names_the_simulator_command(night, tmp_path):
    res = CliRunner().invoke(
        main, ["edge", "replay", str(night), "--db", str(tmp_path / "e.db"), "--audio", "stream"])
    assert res.exit_code == 2
    assert "`nightlink simulate replay --audio stream`" in res.output
    assert not (tmp_path / "e.db").exists()


def test_replay__stream_needs_an_audio_stream(night, tmp_path):
    store = EdgeStore(tmp_path / "e.db")
    with pytest.raises(ValueError, match="audio_stream"):
        replay(night, store, audio="stream")
    store.close()


def test_replay__audio_stream_is_injected(damaged, tmp_path):
    """A night without an audio file takes its audio from the stream it is given."""
    calls = []

    hiss = np.random.default_rng(1).integers(-50, 50, EPOCH_SAMPLES // 3).astype(np.int16)

    def quiet_room(manifest):
        calls.append(manifest["seed"])
        return iter([hiss] * 30)  # 10 epochs

    store = EdgeStore(tmp_path / "e.db")
    result = replay(damaged, store, audio_stream=quiet_room, classify=False)
    assert calls == [SEED]
    assert result.present["audio"] == 10
    assert store.gaps("audio")[0]["start_epoch"] == result.first_epoch + 10
    store.close()


def test_replay__the_apnea_screen_reads_the_nights_beats(replayed):
    store, result = replayed
    breathing = result.summary["breathing"]
    assert "rr" in breathing["breathing_inputs"]
    # From the beats themselves (the cyclic-variation features need beat timing), not from
    # the stored 30-s summaries.
    assert breathing["rr"]["source"] == "beats+epochs"


def test_replay__a_float_wav_is_read_as_sound_not_silence(night, damaged, tmp_path, replayed):
    """32-bit float recordings (what many recorders and editors write) keep their level."""
    audio, rate = soundfile.read(night / "audio.wav", dtype="float32", frames=16000 * 30 * 6)
    audio[1000] = np.nan
    soundfile.write(damaged / "audio.wav", audio, rate, subtype="FLOAT")
    store = EdgeStore(tmp_path / "e.db")
    result = replay(damaged, store)
    assert result.present["audio"] == 6
    assert any("not numbers" in p for p in result.problems)
    first = result.first_epoch
    got = store.epoch_values(features.AUDIO, first + 1, first + 5)
    ref = replayed[0].epoch_values(features.AUDIO, first + 1, first + 5)
    assert all(abs(got[e][0] - ref[e][0]) < 0.5 for e in got)  # the level, not -120 dBFS
    store.close()


def test_replay__rows_out_of_order_sorted_and_bad_times_or_values_counted(damaged, tmp_path,
                                                                          replayed):
    """Newest-first rows are put in order (said in the problems); a row whose time is not a
    number, an RR of 0 or an SpO2 written as a fraction is a bad row, and nothing after it
    is lost."""
    header, *rows = (damaged / "rr.csv").read_text().splitlines()
    rows = rows[::-1]
    rows[5] = "nan,800"
    rows[6] = "12.0,0"
    (damaged / "rr.csv").write_text("\n".join([header, *rows]) + "\n")
    header, *rows = (damaged / "spo2.csv").read_text().splitlines()
    rows[3] = rows[3].split(",")[0] + ",0.95"
    (damaged / "spo2.csv").write_text("\n".join([header, *rows]) + "\n")
    store = EdgeStore(tmp_path / "e.db")
    result = replay(damaged, store, audio="none")
    assert result.bad_rows == {"rr.csv": 2, "spo2.csv": 1}
    assert any("rr.csv has rows out of time order" in p for p in result.problems)
    assert result.present["wearable"] == replayed[1].present["wearable"]
    assert result.present["room"] == replayed[1].present["room"]
    store.close()


@pytest.mark.parametrize(("grid", "says"), [
    ({"first_epoch": "abc", "epoch_count": 10}, "whole numbers"),
    ({"first_epoch": 58950590, "epoch_count": None}, "whole numbers"),
    ({"first_epoch": 58950590, "epoch_count": -5}, "1 to 2880 epochs"),
    ({"first_epoch": 58950590, "epoch_count": 28800}, "1 to 2880 epochs"),
    ({"first_epoch": 1768516200, "epoch_count": 10}, "not a night between 1990 and 2100"),
    ({"first_epoch": True, "epoch_count": 10}, "whole numbers"),
])
def test_edge_replay_cli__a_manifest_with_a_wrong_grid_is_one_sentence(tmp_path, grid, says):
    night = tmp_path / "n"
    night.mkdir()
    (night / "manifest.json").write_text(json.dumps({"epoch_grid": {"epoch_s": 30, **grid}}))
    res = CliRunner().invoke(main, ["edge", "replay", str(night), "--db", str(tmp_path / "e.db")])
    assert res.exit_code == 2 and says in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1


@pytest.mark.parametrize("files", [{"a": 1}, "audio.wav", [{"path": None}], ["audio.wav"]])
def test_edge_replay_cli__files_of_the_wrong_shape_is_one_sentence(tmp_path, files):
    night = tmp_path / "n"
    night.mkdir()
    (night / "manifest.json").write_text(json.dumps(
        {"epoch_grid": {"epoch_s": 30, "first_epoch": 58950590, "epoch_count": 10}, "files": files}))
    res = CliRunner().invoke(main, ["edge", "replay", str(night), "--db", str(tmp_path / "e.db")])
    assert res.exit_code == 2 and "files needs to be a list" in res.output, res.output


def test_replay__a_night_with_nothing_recorded_has_no_sleep_figures(tmp_path):
    """A manifest alone: no input tells sleep, so no sleep time, efficiency or snoring share
    (not a perfect night of 100 % efficiency)."""
    night = tmp_path / "n"
    night.mkdir()
    (night / "manifest.json").write_text(json.dumps(
        {"epoch_grid": {"epoch_s": 30, "first_epoch": 58950590, "epoch_count": 120}}))
    store = EdgeStore(tmp_path / "e.db")
    result = replay(night, store)
    sleep, breathing = result.summary["sleep"], result.summary["breathing"]
    assert sleep["sleep_inputs"] == [] and sleep["tst_min"] is None
    assert sleep["efficiency_pct"] is None and sleep["tib_min"] == 60.0
    assert breathing["snore_pct_tst"] is None and breathing["ahi"] is None
    store.close()


def test_replay__no_microphone_no_snoring_share(damaged, tmp_path):
    store = EdgeStore(tmp_path / "e.db")
    result = replay(damaged, store, audio="none")
    assert result.summary["sleep"]["tst_min"] > 0
    assert result.summary["breathing"]["snore_pct_tst"] is None
    # the classifier rows the cloud reads leave snoring and the audio model's events out
    # (not "none": without sound the model reads a quiet, normal night, and the edge's own
    # summary leaves its AHI out too), and keep the oximetry's desaturations
    rows = _values(store, features.INFER, result.first_epoch, result.epochs)
    assert all(r["snore"] is None and r["apnea_events"] is None for r in rows.values())
    assert any(r["desat3"] is not None for r in rows.values())
    assert result.summary["breathing"]["ahi"] is None
    store.close()


def test_replay__without_audio_or_oximetry_no_breathing_figures(damaged, tmp_path):
    """Heart rhythm and motion only: no respiratory events, AHI or ODI from the audio model
    (they read 0, "normal"); the heart-rhythm screen still says its part."""
    (damaged / "spo2.csv").unlink()
    store = EdgeStore(tmp_path / "e.db")
    result = replay(damaged, store, audio="none")
    b = result.summary["breathing"]
    assert result.summary["sleep"]["tst_min"] > 0
    assert (b["apnea_events"], b["ahi"], b["odi3"], b["odi4"]) == (None, None, None, None)
    assert b["rr"] is not None and "rr" in b["breathing_inputs"]
    rows = _values(store, features.INFER, result.first_epoch, result.epochs)
    assert all(r["apnea_events"] is None and r["desat3"] is None for r in rows.values())
    store.close()


def test_replay__an_audio_file_named_but_missing_is_named(damaged, tmp_path):
    store = EdgeStore(tmp_path / "e.db")
    result = replay(damaged, store)  # the copy left audio.wav out; the manifest names it
    assert any(p.startswith("audio.wav, named in the manifest, is not in") for p in result.problems)
    store.close()


def test_replay__accelerometer_nan_is_a_bad_row_and_a_nan_room_cell_is_missing(damaged, tmp_path):
    header, *rows = (damaged / "accel.csv").read_text().splitlines()
    rows[10] = rows[10].split(",")[0] + ",nan,0,0"
    (damaged / "accel.csv").write_text("\n".join([header, *rows]) + "\n")
    header, *rows = (damaged / "room.csv").read_text().splitlines()
    cols = header.split(",")
    cells = rows[4].split(",")
    cells[cols.index("temp_c")] = "nan"
    rows[4] = ",".join(cells)
    (damaged / "room.csv").write_text("\n".join([header, *rows]) + "\n")
    store = EdgeStore(tmp_path / "e.db")
    result = replay(damaged, store, audio="none")
    assert result.bad_rows == {"accel.csv": 1}
    room = _values(store, features.ROOM, result.first_epoch, result.epochs)
    assert all(v["temp_c"] is None or np.isfinite(v["temp_c"]) for v in room.values())
    store.close()


def _night_audio(kind: str) -> np.ndarray:
    n = 16000 * 30 * 40  # the first 20 minutes: the rule is over the epochs with audio
    rng = np.random.default_rng(3)
    if kind == "zeros":
        return np.zeros(n, dtype=np.int16)
    if kind == "stuck":  # a converter stuck on one value
        return np.full(n, -1200, dtype=np.int16)
    if kind == "saturated":  # gain far too high: noise driven onto the limits
        return np.clip(rng.normal(0, 3e5, n), -32768, 32767).astype(np.int16)
    # loud but usable: a room at a sensible level, one sample in ten clipped
    return np.clip(rng.normal(0, 20000, n), -32768, 32767).astype(np.int16)


@pytest.mark.parametrize(("kind", "says"), [("zeros", "digital silence or one stuck value) in 40 of 40"),
                                            ("stuck", "digital silence or one stuck value) in 40 of 40"),
                                            ("saturated", "clipped at full scale in 40 of 40")])
def test_replay__a_dead_microphone_is_left_out_of_the_figures(damaged, tmp_path, kind, says):
    """A night of digital silence (a muted or unplugged input, a stuck converter) or of noise
    on the converter's limits is said, and the night's sleep and breathing figures leave the
    audio out instead of reading calm sleep with no apneas (or a night of snoring)."""
    soundfile.write(damaged / "audio.wav", _night_audio(kind), 16000)
    store = EdgeStore(tmp_path / "e.db")
    result = replay(damaged, store)
    assert any(says in p and "no usable sound" in p for p in result.problems), result.problems
    assert "audio" not in result.summary["sleep"]["sleep_inputs"]
    assert "audio" not in result.summary["breathing"]["breathing_inputs"]
    assert result.summary["breathing"]["snore_pct_tst"] is None
    assert store.gaps("audio")[0]["start_epoch"] == result.first_epoch
    store.close()


@pytest.mark.parametrize(("first", "zone", "label"), [
    (58948920, None, "2026-01-14"),                 # 09:00 UTC: still the evening before, in UTC
    (58948920, "Pacific/Auckland", "2026-01-15"),   # ... but 22:00 on the 15th in Auckland
    (58951440, "America/Los_Angeles", "2026-01-15"),  # 06:00 UTC on the 16th: 22:00 on the 15th
    (58951440, "Asia/Tokyo", "2026-01-16"),         # 15:00 on the 16th in Tokyo: that evening
])
def test_replay__the_night_is_named_in_the_persons_zone(tmp_path, machine_zone, first, zone,
                                                       label):
    """A night is named by its evening's local date where the person slept (the manifest's
    `timezone`; without one, the machine's zone, UTC here)."""
    machine_zone("UTC")
    night = tmp_path / "n"
    night.mkdir()
    manifest = {"epoch_grid": {"epoch_s": 30, "first_epoch": first, "epoch_count": 10}}
    if zone:
        manifest["timezone"] = zone
    (night / "manifest.json").write_text(json.dumps(manifest))
    store = EdgeStore(tmp_path / "e.db")
    assert replay(night, store, classify=False).night == label
    assert store.night(label) is not None
    store.close()


@pytest.mark.parametrize("zone", ["Mars/Olympus", 3, "../etc/passwd"])
def test_edge_replay_cli__a_wrong_timezone_is_one_sentence(tmp_path, zone):
    night = tmp_path / "n"
    night.mkdir()
    (night / "manifest.json").write_text(json.dumps(
        {"epoch_grid": {"epoch_s": 30, "first_epoch": 58948920, "epoch_count": 10},
         "timezone": zone}))
    res = CliRunner().invoke(main, ["edge", "replay", str(night), "--db", str(tmp_path / "e.db")])
    assert res.exit_code == 2 and "is not a time zone name" in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1


def test_replay__loud_audio_with_some_clipping_is_kept(damaged, tmp_path):
    """Loud audio with a tenth of its samples clipped is still sound: kept in the figures."""
    soundfile.write(damaged / "audio.wav", _night_audio("loud"), 16000)
    store = EdgeStore(tmp_path / "e.db")
    result = replay(damaged, store)
    assert not any("no usable sound" in p for p in result.problems), result.problems
    assert result.summary["breathing"]["snore_pct_tst"] is not None  # audio kept in the figures
    assert not [g for g in store.gaps("audio") if "usable" in g["reason"]]
    store.close()


def _unsize(path, riff=0, data=0):
    """Zero a WAV header's lengths, as a recorder cut off before closing its file leaves them."""
    raw = bytearray(path.read_bytes())
    at = raw.find(b"data")
    raw[4:8], raw[at + 4:at + 8] = riff.to_bytes(4, "little"), data.to_bytes(4, "little")
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize(("subtype", "channels", "kind"), [
    ("PCM_16", 1, "WAV"), ("PCM_24", 2, "WAV"), ("FLOAT", 1, "WAV"),
    ("PCM_24", 2, "WAVEX"), ("FLOAT", 1, "WAVEX"),  # the extensible header (ffmpeg, > 16 bits)
])
def test_replay__a_wav_whose_header_gives_no_length_is_read_to_its_end(
        night, damaged, tmp_path, replayed, subtype, channels, kind):
    """A recording whose header still says 0 bytes (the recorder lost power or was killed) is
    read to the end of the file, said, and gives the same features as the intact file."""
    audio, rate = soundfile.read(night / "audio.wav", dtype="float32", frames=16000 * 30 * 6)
    soundfile.write(damaged / "audio.wav", np.repeat(audio[:, None], channels, axis=1), rate,
                    subtype=subtype, format=kind)
    _unsize(damaged / "audio.wav")
    assert soundfile.info(str(damaged / "audio.wav")).frames == 0  # what libsndfile sees
    store = EdgeStore(tmp_path / "e.db")
    result = replay(damaged, store)
    assert result.present["audio"] == 6
    assert any("header gives no length" in p for p in result.problems), result.problems
    assert any("ends 180 s into the night" in p for p in result.problems), result.problems
    first = result.first_epoch
    got = store.epoch_values(features.AUDIO, first, first + 6)
    ref = replayed[0].epoch_values(features.AUDIO, first, first + 6)
    assert all(abs(got[e][0] - ref[e][0]) < 0.5 for e in got)
    store.close()


@pytest.mark.parametrize("trailer", [b"", b"LIST\x04\x00\x00\x00INFO"])
def test_replay__a_wav_with_a_header_and_nothing_after_it_has_no_audio(damaged, tmp_path,
                                                                      trailer):
    """An empty recording (with or without a chunk after its empty data chunk) is empty."""
    soundfile.write(damaged / "audio.wav", np.zeros(0, dtype=np.int16), 16000)
    with open(damaged / "audio.wav", "ab") as fh:
        fh.write(trailer)
    store = EdgeStore(tmp_path / "e.db")
    result = replay(damaged, store)
    assert result.present["audio"] == 0
    assert not any("header gives no length" in p for p in result.problems)
    store.close()


def test_edge_replay_cli__tz_names_the_night_and_a_wrong_one_is_one_sentence(tmp_path):
    night = tmp_path / "n"
    night.mkdir()
    (night / "manifest.json").write_text(json.dumps(
        {"epoch_grid": {"epoch_s": 30, "first_epoch": 58948920, "epoch_count": 10},
         "timezone": "UTC"}))
    db = str(tmp_path / "e.db")
    res = CliRunner().invoke(main, ["edge", "replay", str(night), "--db", db, "--json",
                                    "--tz", "Pacific/Auckland"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output.strip().splitlines()[-1])["night"] == "2026-01-15"
    res = CliRunner().invoke(main, ["edge", "replay", str(night), "--db", db, "--tz", "Moon/Base"])
    assert res.exit_code == 2 and "--tz: 'Moon/Base' is not a time zone name" in res.output


def test_classifiers__epochs_without_any_input_are_unscored_not_staged(replayed):
    """A hole in the recording (the strap off and the microphone down; the room sensors,
    which cannot stage sleep alone, still on) gets no stage: it is neither sleep nor wake in
    the night's figures, and its stream 5 rows carry no stage."""
    from nightlink.edge.features import classify
    from nightlink.edge.features.night_summary import night_columns

    store, result = replayed
    first, count = result.first_epoch, result.epochs
    cols = night_columns(store, first, count)
    a, b = 60, 100
    for name in ("wearable", "audio"):
        for values in cols[name].values():
            values[a:b] = np.nan
    assert not np.isnan(cols["room"]["light_lux"][a:b]).all()
    clf = classify.load()
    out = clf.run(cols, cols["cgm"]["glucose_mgdl"])
    assert (out.stage[a:b] == -1).all() and (out.stage[:a] >= 0).all()
    fig = classify.night_figures(out, cols)["sleep"]
    assert fig["unscored_min"] == (b - a) / 2
    scored = np.r_[out.stage[:a], out.stage[b:]]
    assert fig["tst_min"] == (scored > 0).sum() / 2
    assert fig["efficiency"] == round((scored > 0).mean(), 3)


def test_edge_replay_cli__says_which_inputs_the_night_used(night, tmp_path):
    """What the classifiers used and gave, where the person running a replay looks: sleep and
    apnea-screen inputs with the headline figures, in the JSON line and in the text."""
    db = str(tmp_path / "e.db")
    res = CliRunner().invoke(main, ["edge", "replay", str(night), "--db", db, "--json",
                                    "--audio", "none"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.output.strip().splitlines()[-1])
    assert "motion" in got["sleep_inputs"] and "audio" not in got["sleep_inputs"]
    assert "audio" not in got["breathing_inputs"] and got["tst_min"] > 0
    assert set(got) >= {"ahi_estimate", "screen"}
    res = CliRunner().invoke(main, ["edge", "replay", str(night), "--db",
                                    str(tmp_path / "f.db"), "--audio", "none"])
    assert res.exit_code == 0 and "  sleep from " in res.output and "apnea screen from" in \
        res.output


def test_replay__epochs_already_stored_are_kept_not_stored_again(night, tmp_path):
    """Replayed twice into one store, a night was stored and synced twice (new sequence
    numbers each time, 240 cloud rows for 120 epochs). Epochs the store holds from this node
    are kept as they were and said; a store holding only some streams (CGM imported, say)
    gets the others."""
    store = EdgeStore(tmp_path / "twice.db")
    try:
        result = replay(night, store, audio="none")
        inputs = (features.CGM, features.WEARABLE, features.AUDIO, features.ROOM)
        before = [store.count_records(s) for s in inputs]
        sources = store.sources()
        infer = store.count_records(features.INFER)
        again = replay(night, store, audio="none")
        # nothing new: no record at all (not even the classifiers' again), the night's
        # summary and the sources' states stand
        assert [store.count_records(s) for s in inputs] == before and again.records == 0
        assert store.count_records(features.INFER) == infer
        assert store.sources() == sources and again.kept["cgm"] == again.epochs
        assert any(p.startswith("Already in the store from this node, kept as they were: ")
                   for p in again.problems)
        assert again.summary["sleep"] == result.summary["sleep"]
    finally:
        store.close()
    other = EdgeStore(tmp_path / "e.db")
    try:
        first = _manifest(night)["epoch_grid"]["first_epoch"]
        count = _manifest(night)["epoch_grid"]["epoch_count"]
        for k in range(0, count, 2):  # half the night's CGM epochs, stored before the replay
            other.append(features.CGM, first + k,
                         [codec.quantize_row(features.CGM, (120.0, 1.0, 0.0, 0.0, 4.0, None))])
        got = replay(night, other, audio="none")
        cgm = [r.epoch for r in other.records(features.CGM)]
        assert sorted(cgm) == list(range(first, first + count))  # each epoch once
        assert got.records == count * 4 - (count + 1) // 2
        assert f"{(count + 1) // 2} epochs of cgm" in " ".join(got.problems)
        assert other.count_records(features.WEARABLE) == count
        assert other.sources()["cgm"]["detail"].endswith(f", {(count + 1) // 2} kept as they were")
    finally:
        other.close()
