"""`nightlink eval snoring --clips DIR`: the committed snore model on recorded clips put end to
end into 30-s epochs, as outside testers score it. Real clips are not in this repository; these
tests write clips of the simulator's snores and household sounds as sound files at several rates
and check what the command reads, builds and scores."""

import json

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner

from nightlink.cli import main
from nightlink.edge.features import classify
from nightlink.errors import NightlinkError
from nightlink.tools.sim.audio import HOUSEHOLD, SAMPLE_RATE, household_sound, snore_clip
from nightlink.tools.train import snore


def _write(path, x, rate, stereo=False):
    """Write 16-kHz float audio `x` as a PCM file at `rate` (nearest-sample decimation is
    enough for a test clip), in stereo if asked."""
    idx = np.minimum((np.arange(int(x.size * rate / SAMPLE_RATE)) * SAMPLE_RATE / rate).astype(int),
                     x.size - 1)
    y = x[idx] / (np.abs(x).max() + 1e-9) * 0.5
    soundfile.write(str(path), np.stack([y, y], axis=1) if stereo else y, rate, subtype="PCM_16")


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(4)
    (root / "snoring").mkdir()
    (root / "other").mkdir()
    for i in range(45):  # 1-s clips at mixed rates and channel counts, as clip sets hold them
        _write(root / "snoring" / f"1_{i}.wav", snore_clip(rng), (16_000, 44_100, 48_000)[i % 3], i % 2 == 0)
        _write(root / "other" / f"0_{i}.wav",
               household_sound(rng, HOUSEHOLD[i % len(HOUSEHOLD)], SAMPLE_RATE), (44_100, 16_000)[i % 2])
    (root / "other" / "notes.txt").write_text("not a clip")  # ignored: not a sound file
    return root


@pytest.fixture
def few(monkeypatch):
    monkeypatch.setattr(snore, "REAL_RANDOM_EPOCHS", 6)
    monkeypatch.setattr(snore, "REAL_MIXED_EPOCHS", 4)


def test_read_clip__any_rate_mono_at_the_analysis_rate(tmp_path):
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    tone = np.sin(2 * np.pi * 200 * t)
    _write(tmp_path / "a.wav", tone, 48_000, stereo=True)
    x = snore.read_clip(tmp_path / "a.wav")
    assert x.dtype == np.float32 and abs(x.size - SAMPLE_RATE) <= 1
    spectrum = np.abs(np.fft.rfft(x))
    assert abs(np.argmax(spectrum) - 200) <= 1  # the same tone after resampling 48 -> 16 kHz


def test_read_clip__no_shift_in_time_at_any_rate(tmp_path):
    """A click 0.25 s into the file is 0.25 s into the clip after resampling (the resampler's
    delay is taken off), at every rate the edge takes."""
    for rate in (8_000, 22_050, 44_100, 96_000):
        x = np.zeros(rate)
        x[rate // 4] = 0.9
        soundfile.write(str(tmp_path / "click.wav"), x, rate, subtype="PCM_16")
        y = snore.read_clip(tmp_path / "click.wav")
        assert abs(int(np.argmax(np.abs(y))) - SAMPLE_RATE // 4) <= 1, rate


def test_clip_folder__long_files_cut_short_classes_and_hidden_files_left_out(tmp_path):
    (tmp_path / "snoring").mkdir()
    (tmp_path / "other").mkdir()
    rng = np.random.default_rng(2)
    long = np.concatenate([snore_clip(rng) for _ in range(75)])  # one 75-s recording
    soundfile.write(str(tmp_path / "snoring" / "night.WAV"), long * 0.5, SAMPLE_RATE, subtype="PCM_16")
    soundfile.write(str(tmp_path / "other" / "door.flac"), household_sound(rng, "door", 20 * SAMPLE_RATE),
                    SAMPLE_RATE)  # 20 s: too little for an epoch of its own
    (tmp_path / "snoring" / "._night.WAV").write_bytes(b"\x00\x05\x16\x07")  # a macOS fork
    (tmp_path / "snoring" / "dir.wav").mkdir()
    notes = []
    clips = snore.clip_folder(tmp_path, notes)
    assert [c.size for c in clips["snoring"]] == [30 * SAMPLE_RATE, 30 * SAMPLE_RATE, 15 * SAMPLE_RATE]
    assert [c.size for c in clips["other"]] == [20 * SAMPLE_RATE]  # counted, not scored
    assert notes == ["other/ holds 20.0 s of sound, under one 30-s epoch: not scored."]
    sets = snore.real_clip_epochs(clips)
    assert sets["in_file_order"][1].tolist() == [1, 1]  # 75 s: two whole epochs
    assert "snoring_among_other" not in sets


def test_real_clip_epochs__assemblies_and_labels(clips, few):
    sets = snore.real_clip_epochs(snore.clip_folder(clips))
    epochs, y = sets["in_file_order"]
    assert y.tolist() == [1] * 1 + [0] * 1  # 45 one-second clips: one full 30-s run per class
    assert all(e.dtype == np.int16 and e.size == 30 * SAMPLE_RATE for e in epochs)
    assert sets["random_draws"][1].tolist() == [1] * 6 + [0] * 6
    assert sets["snoring_among_other"][1].tolist() == [1] * 4
    again = snore.real_clip_epochs(snore.clip_folder(clips))
    assert np.array_equal(again["random_draws"][0][3], sets["random_draws"][0][3])  # seeded


def test_eval_snoring_clips__scores_what_it_builds(clips, few):
    r = CliRunner().invoke(main, ["eval", "snoring", "--clips", str(clips), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output.strip().splitlines()[-1])
    assert out["real"] is True and out["threshold"] == classify.Classifiers().snore_meta["threshold"]
    # The figures are the model's on exactly these epochs.
    clf = classify.Classifiers()
    epochs, y = snore.real_clip_epochs(snore.clip_folder(clips))["random_draws"]
    x = np.array([snore.stored(snore.features_of([e], SAMPLE_RATE)[0]) for e in epochs])
    calls = clf.snoring(snore.streams_of(snore.snore_columns(x)))
    assert out["random_draws"]["sensitivity"] == round(float(calls[y == 1].mean()), 3)
    assert out["random_draws"]["specificity"] == round(float(1 - calls[y == 0].mean()), 3)
    assert out["random_draws"]["snore_epochs"] == 6 and out["random_draws"]["other_epochs"] == 6
    assert 0.0 <= out["random_draws"]["auc"] <= 1.0
    assert out["snoring_among_other"]["specificity"] is None  # no such epochs: not made up
    assert out["same_call_after_other_epochs"] == 1.0  # the call is the epoch's own
    assert out["clips_read"] == {"snoring": 45, "other": 45}
    assert out["clip_seconds"] == {"snoring": 45.0, "other": 45.0}
    assert out["independent_epochs"] == {"snoring": 1, "other": 1} and out["notes"] == []


def test_eval_snoring_clips__only_snoring_clips(clips, tmp_path, few):
    (tmp_path / "snoring").mkdir()
    for p in sorted((clips / "snoring").glob("*.wav"))[:31]:
        (tmp_path / "snoring" / p.name).write_bytes(p.read_bytes())
    r = CliRunner().invoke(main, ["eval", "snoring", "--clips", str(tmp_path), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output.strip().splitlines()[-1])
    assert out["random_draws"]["other_epochs"] == 0 and out["random_draws"]["specificity"] is None
    assert "snoring_among_other" not in out


def test_eval_snoring_clips__bad_input_is_one_sentence(tmp_path):
    r = CliRunner().invoke(main, ["eval", "snoring", "--clips", str(tmp_path)])
    assert r.exit_code == 2 and "no 30 s of sound" in r.output
    (tmp_path / "snoring").mkdir()
    (tmp_path / "snoring" / "broken.wav").write_bytes(b"RIFF....not audio")
    r = CliRunner().invoke(main, ["eval", "snoring", "--clips", str(tmp_path)])
    assert r.exit_code == 2 and "snoring/broken.wav left out: Cannot read the sound file" in r.output
    assert "Traceback" not in r.output


def test_clip_folder__one_unreadable_file_costs_that_file_only(tmp_path):
    """A broken or empty file among good clips is left out and named; sound files in a format
    not read (.m4a) and a missing class folder are said, not passed over in silence."""
    rng = np.random.default_rng(5)
    (tmp_path / "snoring").mkdir()
    for k in range(35):
        _write(tmp_path / "snoring" / f"s{k}.wav", snore_clip(rng), SAMPLE_RATE)
    (tmp_path / "snoring" / "s7.wav").write_bytes(b"")  # cut off while copying
    (tmp_path / "snoring" / "phone.m4a").write_bytes(b"\x00\x00\x00\x18ftypM4A ")
    notes: list[str] = []
    clips = snore.clip_folder(tmp_path, notes)
    assert len(clips["snoring"]) == 34 and clips["other"] == []
    assert notes[0] == "1 sound files in snoring/ are not read (.m4a): convert them to one of " \
                       ".wav, .flac, .ogg, .aiff, .aif, .mp3."
    assert notes[1].startswith("snoring/s7.wav left out: Cannot read the sound file")
    assert notes[2] == "no other/ folder in " + str(tmp_path) + ": specificity is not scored."


def test_clip_folder__class_folders_any_case_files_in_subfolders_long_files_noted(tmp_path, monkeypatch):
    """Snoring/ and OTHER/ are the classes; clips filed per person in subfolders are read; a
    file longer than the cut says so in the notes."""
    rng = np.random.default_rng(4)
    for sub in ("Snoring/p1", "Snoring/p2", "OTHER"):
        (tmp_path / sub).mkdir(parents=True)
    for k in range(2):
        soundfile.write(str(tmp_path / f"Snoring/p{k + 1}/a.wav"),
                        np.concatenate([snore_clip(rng) for _ in range(20)]) * 0.5, SAMPLE_RATE)
    soundfile.write(str(tmp_path / "OTHER" / "door.wav"),
                    household_sound(rng, "door", 40 * SAMPLE_RATE), SAMPLE_RATE)
    monkeypatch.setattr(snore, "MAX_CLIP_S", 35)
    notes = []
    clips = snore.clip_folder(tmp_path, notes)
    assert [c.size for c in clips["snoring"]] == [20 * SAMPLE_RATE] * 2
    assert [c.size for c in clips["other"]] == [30 * SAMPLE_RATE, 5 * SAMPLE_RATE]
    assert notes == ["door.wav: only its first 35 s of 40 s are read."]


def test_read_clip__samples_that_are_not_numbers_refused_in_one_sentence(tmp_path):
    x = np.zeros(SAMPLE_RATE, dtype=np.float32)
    x[100] = np.nan
    soundfile.write(str(tmp_path / "bad.wav"), x, SAMPLE_RATE, subtype="FLOAT")
    with pytest.raises(NightlinkError, match="bad.wav holds samples that are not numbers"):
        snore.read_clip(tmp_path / "bad.wav")


def test_eval__a_model_file_cut_short_is_one_sentence(clips, tmp_path):
    """A clone without Git LFS, or a copy cut short: the command says so, no traceback."""
    import shutil

    models = tmp_path / "models"
    shutil.copytree(classify.MODELS, models)
    (models / "snore.tflite").write_bytes((models / "snore.tflite").read_bytes()[:500])
    r = CliRunner().invoke(main, ["eval", "snoring", "--clips", str(clips), "--models", str(models)])
    assert r.exit_code == 2 and "cannot be read" in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1
